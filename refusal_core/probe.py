"""Evaluate an edit on held-out prompts: leakage and collateral (docs/method.md) at the model output and at
every edited layer's output, plus how much of each prompt's layer input lies along d.

At a layer, leakage compares the unsafe - safe output rows paired as the site pairs tokens, and
collateral compares each neutral prompt's token-mean output (text prompts differ in length)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .align import pair_rows
from .capture import capture_inputs
from .edit import RefusalEdit
from .families import site_of_point
from .metrics import collateral, leakage
from .types import PromptPairs

Forward = Callable[[Any, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Recording:
    """One model's responses: per prompt text, the output [n] (concatenated over sigmas), each edited
    layer's output per sigma [L, d_out], and per capture point the mean |x . d| of the input rows."""

    output: dict[str, torch.Tensor]
    layers: dict[str, dict[str, list[torch.Tensor]]]
    projection: dict[str, dict[str, float]]


def record(
    root: nn.Module,
    forward: Forward,
    prompts: PromptPairs,
    edit: RefusalEdit,
    latent: torch.Tensor,
    sigmas: Sequence[float],
) -> Recording:
    """Run every held-out prompt through one model (all of them before the next model is loaded)."""
    keys = list(edit.bases())
    points = {layer.point: layer.basis[0] for layer in edit.layers}
    texts = {p.text: p for pair in prompts.pairs for p in pair} | {p.text: p for p in prompts.neutral}
    output: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, list[torch.Tensor]]] = {k: {} for k in keys}
    projection: dict[str, dict[str, float]] = {p: {} for p in points}
    for text, enc in texts.items():
        outs, per_layer, proj = [], {k: [] for k in keys}, {p: [] for p in points}
        for sigma in sigmas:
            with capture_inputs(root, keys, outputs=True) as layer_out, capture_inputs(root, list(points)) as layer_in:
                outs.append(forward(enc.conditioning, latent, float(sigma)).detach().float().cpu().flatten())
            for k in keys:
                per_layer[k].append(layer_out[k][0])
            for p, d in points.items():
                proj[p].append(float((layer_in[p][0] @ d.float()).abs().mean()))
        output[text] = torch.cat(outs)
        for k in keys:
            layers[k][text] = per_layer[k]
        for p in points:
            projection[p][text] = sum(proj[p]) / len(proj[p])
    return Recording(output, layers, projection)


@dataclass(frozen=True)
class ProbeResult:
    leakage: float
    collateral: float
    layer_leakage: dict[str, float]
    layer_collateral: dict[str, float]
    projection: dict[str, dict[str, tuple[float, float]]]  # point -> role -> (before, after) mean |x . d|

    def report(self) -> str:
        lines = [
            f"model output: leakage {self.leakage:.3f} (1 = untouched, 0 = erased), collateral {self.collateral:.3f}"
        ]
        lines += [
            f"{k}: leakage {self.layer_leakage[k]:.3f}, collateral {self.layer_collateral[k]:.3f}"
            for k in self.layer_leakage
        ]
        for p, roles in self.projection.items():
            lines.append(
                f"{p} input along d, before -> after: "
                + ", ".join(f"{r} {b:.3g} -> {a:.3g}" for r, (b, a) in roles.items())
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """JSON-ready: the numbers of report(), unrounded."""
        return {
            "leakage": self.leakage,
            "collateral": self.collateral,
            "layer_leakage": dict(self.layer_leakage),
            "layer_collateral": dict(self.layer_collateral),
            "projection": {
                p: {r: {"before": b, "after": a} for r, (b, a) in roles.items()} for p, roles in self.projection.items()
            },
        }


def compare(prompts: PromptPairs, before: Recording, after: Recording, edit: RefusalEdit) -> ProbeResult:
    pairs = [(u.text, s.text) for u, s in prompts.pairs]
    neutral = [n.text for n in prompts.neutral]
    out_leak = leakage(
        [(before.output[u], before.output[s]) for u, s in pairs], [(after.output[u], after.output[s]) for u, s in pairs]
    )
    out_col = collateral([before.output[n] for n in neutral], [after.output[n] for n in neutral])

    def layer_scores(key: str) -> tuple[float, float]:
        """A layer's unsafe - safe output difference, rows paired as its site pairs tokens (text prompts differ in length)."""
        site = site_of_point(
            edit.meta.get("family", ""), next(layer.point for layer in edit.layers if key in layer.edit_keys)
        )
        b, a = before.layers[key], after.layers[key]

        def diff(rec: dict[str, list[torch.Tensor]], u, s) -> torch.Tensor:
            return torch.cat([pair_rows(site, ou, os_, u, s).flatten() for ou, os_ in zip(rec[u.text], rec[s.text])])

        ratios = [float(diff(a, u, s).norm() / diff(b, u, s).norm().clamp_min(1e-30)) for u, s in prompts.pairs]
        # prompts differ in length: collateral compares each neutral prompt's token-mean output
        pooled = lambda rec, t: torch.cat([x.mean(0) for x in rec[t]])  # noqa: E731
        return sum(ratios) / len(ratios), collateral([pooled(b, n) for n in neutral], [pooled(a, n) for n in neutral])

    per_layer = {k: layer_scores(k) for k in before.layers}
    roles = {"unsafe": [u for u, _ in pairs], "safe": [s for _, s in pairs], "neutral": neutral}
    projection = {
        p: {
            r: (sum(before.projection[p][t] for t in ts) / len(ts), sum(after.projection[p][t] for t in ts) / len(ts))
            for r, ts in roles.items()
        }
        for p in before.projection
    }
    return ProbeResult(
        out_leak, out_col, {k: v[0] for k, v in per_layer.items()}, {k: v[1] for k, v in per_layer.items()}, projection
    )
