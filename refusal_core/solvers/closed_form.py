"""A map instead of a projection: the closed-form edit for concepts that live in several directions.

A name (a character, a brand, a person) is several tokens, each moved by the concept in its own way; one
averaged direction cannot hold them. At a text site the pack has, per aligned token, the unsafe row c_i
and its safe twin v_i, and the rows of neutral prompts e_j. The closed form asks the layer's input map
M = I - Delta to send every c_i to its v_i while it keeps the neutral rows and the safe twins where
they are (a preservation-constrained least-squares edit, as UCE solves it for image models):

    min_Delta  sum_i |Delta c_i - (c_i - v_i)|^2 + beta sum_k |Delta p_k|^2 + mu |Delta|_F^2,
    P = [E; V] (the preserved rows),  Delta = D^T C (C^T C + beta P^T P + mu I)^-1,  D = C - V.

beta = preserve * n / m_P weighs a preserved row as much as a pair row at preserve = 1; mu = ridge times
the mean squared length of the rows keeps the solve well posed when the rows span few directions.
Delta has rank at most n and is solved in the span of the rows (push-through identity), never as a
dense d x d inverse; it is stored by its SVD, Delta = P^T diag(s) Q (LayerEdit.left, basis, strengths),
so it applies, exports as a LoRA and combines as every other edit does (factorize.py assembles the edit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..stats import Moments
from ..types import LayerEdit, LayerStats, RefusalError, RefusalStats
from .linalg import svd_factors


@dataclass(frozen=True)
class MapFit:
    """How well one layer's map does on the rows it was solved from: residual |D - C Delta^T| / |D| on the
    pairs (0 = every unsafe row sent to its twin) and moved |E Delta^T| / |E| on the neutral rows."""

    rank: int
    residual: float
    moved: float


def _rows(x, what: str, point: str) -> torch.Tensor:
    if x is None:
        raise RefusalError(
            f"the statistics at {point} carry no {what} rows: the closed-form edit needs a text site "
            "(on Wan: text_kv) and statistics extracted by this version; extract again"
        )
    return x.double()


def solve_map(layer: LayerStats, preserve: float, ridge: float) -> tuple[torch.Tensor, torch.Tensor, MapFit]:
    """(A, B) with Delta = A^T B [d, d] for one layer, and its fit. A = D [n, d], B = C G^-1 [n, d]."""
    C = _rows(layer.unsafe, "unsafe", layer.point)
    V = _rows(layer.safe, "safe", layer.point)
    D = C - V
    n, d = C.shape
    if n == 0:
        raise RefusalError(f"no aligned token rows at {layer.point}: each pair's two sides must share words")
    mu = ridge * float(C.square().sum()) / n
    E = layer.neutral
    if isinstance(E, Moments):  # more neutral rows than the width: the preserved Gram matrix is d x d anyway
        m = E.count + n
        beta = preserve * n / m
        G = C.T @ C + beta * (E.gram.double() + V.T @ V) + mu * torch.eye(d, dtype=torch.float64)
        B = torch.linalg.solve(G, C.T).T
        E_rows = None
    else:
        E_rows = E.double()
        Pr = torch.cat([E_rows, V])
        beta = preserve * n / Pr.shape[0]
        A = torch.cat([C, beta**0.5 * Pr])
        K = A @ A.T + mu * torch.eye(A.shape[0], dtype=torch.float64)
        B = torch.linalg.solve(K, A)[:n]  # C G^-1 = [(A A^T + mu I)^-1 A] restricted to C's rows
    Delta_C = (C @ B.T) @ D  # C Delta^T = C B^T D, [n, d]
    residual = float((D - Delta_C).norm() / D.norm().clamp_min(1e-300))
    if E_rows is not None and E_rows.shape[0]:
        moved = float(((E_rows @ B.T) @ D).norm() / E_rows.norm().clamp_min(1e-300))
    else:
        moved = float("nan")
    return D, B, MapFit(0, residual, moved)


def solve_maps(stats: RefusalStats, preserve: float, ridge: float) -> tuple[list[LayerEdit], dict[str, MapFit]]:
    """(one map per layer, {point: its fit}) from the pairs' unsafe and safe token rows (see the module docstring).

    Layers that read the very same rows (Wan's text context reaches every block unchanged) are solved once.
    """
    if not preserve >= 0 or not ridge > 0:
        raise RefusalError(f"preserve must be at least 0 and ridge above 0, got {preserve} and {ridge}")
    layers, fits = [], {}
    solved: dict[tuple[int, int, int], tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], MapFit]] = {}
    for layer in stats.layers:
        key = (id(layer.unsafe), id(layer.safe), id(layer.neutral))
        if key not in solved:
            A, B, fit = solve_map(layer, preserve, ridge)
            P, s, Q = svd_factors(A, B)
            if s.numel() == 0:
                raise RefusalError(
                    f"the closed-form edit at {layer.point} is zero: the pairs' two sides give the same rows"
                )
            solved[key] = ((P, s, Q), MapFit(int(s.numel()), fit.residual, fit.moved))
        (P, s, Q), fit = solved[key]
        layers.append(
            LayerEdit(
                layer.point,
                layer.edit_keys,
                Q.float(),
                tuple(float(x) for x in s),
                spectrum=s.float(),
                k_used=fit.rank,
                left=P.float(),
            )
        )
        fits[layer.point] = fit
    return layers, fits
