"""Representation-level metrics (docs/method.md, "Measuring"): leakage and collateral."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def leakage(
    before: Sequence[tuple[torch.Tensor, torch.Tensor]], after: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """mean_i ||f'(u_i) - f'(s_i)|| / ||f(u_i) - f(s_i)||: 1 = untouched, 0 = erased.

    before / after: per held-out pair, the outputs (f(u), f(s)) of the original and
    of the edited model, any equal shapes.
    """
    vals = []
    for (fu, fs), (gu, gs) in zip(before, after, strict=True):
        den = (fu.float() - fs.float()).norm()
        vals.append(float((gu.float() - gs.float()).norm() / den.clamp_min(1e-30)))
    return sum(vals) / len(vals)


def collateral(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> float:
    """mean_n ||f'(n) - f(n)|| / mean_{n != m} ||f(n) - f(m)|| over neutral prompts."""
    f = [t.float() for t in before]
    if len(f) < 2:
        raise ValueError("collateral needs at least 2 neutral prompts")
    spread = [float((f[i] - f[j]).norm()) for i in range(len(f)) for j in range(len(f)) if i != j]
    scale = sum(spread) / len(spread)
    moved = [float((g.float() - fn).norm()) for fn, g in zip(f, after, strict=True)]
    return (sum(moved) / len(moved)) / max(scale, 1e-30)
