"""Which blocks to edit: each candidate layer scored by how cleanly the concept separates there (d')."""

from __future__ import annotations

import torch

from .stats import Moments, Rows, n_rows
from .types import LayerStats


def separation(D: Rows, E: Rows, r: torch.Tensor) -> float:
    """d' of a layer: ||r|| over the spread of neutral activations along r_hat.

    How far unsafe activations sit from their safe twins along the refusal direction, in units
    of how much unrelated prompts vary along it: high where the concept is one clear direction
    that a rank-1 edit removes without moving much else. Scale-free, so layers compare.
    D, E: rows [n, d] / [m, d] or their Moments (the same value either way).
    """
    r_norm = float(r.norm())
    if n_rows(E) < 2 or r_norm == 0:
        return 0.0
    r_hat = r.double() / r_norm
    if isinstance(E, Moments):
        # the sample standard deviation of the projections E r_hat, from sum and sum of squares
        s1, s2, m = float(E.total @ r_hat), float(r_hat @ E.gram @ r_hat), E.count
        spread = max(s2 - s1 * s1 / m, 0.0) ** 0.5 / (m - 1) ** 0.5
    else:
        spread = float((E.double() @ r_hat).std())
    return r_norm / max(spread, 1e-12 * r_norm)


def choose_layers(
    layers: list[tuple[int, LayerStats]], auto_pick: int | None
) -> tuple[list[tuple[int, LayerStats]], dict[str, float]]:
    """(the kept (block, layer) pairs in block order, d' of every candidate): all of them, or the
    auto_pick best separated ones. Ties (blocks that read the very same input, as Wan's text context) go
    to later blocks, the paper's choice."""
    scores = {layer.point: separation(layer.diffs, layer.neutral, layer.r) for _, layer in layers}
    if auto_pick is None:
        return layers, scores
    best = sorted(layers, key=lambda bl: (-round(scores[bl[1].point], 9), -bl[0]))[:auto_pick]
    return sorted(best, key=lambda bl: bl[0]), scores
