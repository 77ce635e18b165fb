"""Edits kept off the prompts a user lists as "keep": the look-alikes an erasure must not take along.

A rank-1 edit removes d from a layer's input, and with it the part along d of everything else. Named
characters erased together have directions whose span holds what they share (the "Mouse" of three
characters), which is also what a generic cartoon mouse is made of. Taking each d orthogonal to the
leading directions of the keep prompts' rows at its layer leaves those rows untouched by every edit,
and so by any combination of them (a span of vectors orthogonal to U stays orthogonal to U).

The ordinary text (ordinary.py) is a second such set: phrases that name no concept, whose leading directions
are what every prompt is made of. A direction that overlaps them moves every prompt a little (drift); taken
off them, it moves what the concept's rows hold. Each set keeps its own rank, so a few look-alikes are not
outvoted by hundreds of ordinary phrases.
"""

from __future__ import annotations

import torch

from ..stats import Moments, Rows, n_rows
from .linalg import select_k


def keep_basis(rows: Rows, rank: int) -> torch.Tensor:
    """U [d, m], m <= rank orthonormal columns: the leading right singular vectors of the keep rows
    [n, d] (rows or Moments). Directions at the rows' round-off are never taken and a direction tied
    with the rank-th is taken with it (linalg.select_k), so no BLAS decides what is kept."""
    d = int(rows.shape[1])
    if rank < 1 or n_rows(rows) == 0:
        return torch.zeros(d, 0, dtype=torch.float64)
    if isinstance(rows, Moments):
        w, V = torch.linalg.eigh(rows.gram.double())
        w, U = w.flip(0), V.flip(1)
    else:
        U, s, _ = torch.linalg.svd(rows.double().T, full_matrices=False)
        w = s**2
    return U[:, : select_k(w, rank, 0.0)]


def joint_basis(*bases: torch.Tensor) -> torch.Tensor:
    """U [d, m]: orthonormal columns spanning every given basis [d, m_i] (each orthonormal); columns of one
    that lie in the others' span add nothing (singular values below 1e-6 are dropped)."""
    parts = [U for U in bases if U.shape[1]]
    if len(parts) < 2:
        return parts[0] if parts else bases[0]
    U, s, _ = torch.linalg.svd(torch.cat(parts, dim=1), full_matrices=False)
    return U[:, : int((s > 1e-6).sum())]


def kept_off(direction: torch.Tensor, U: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(d minus its part in span(U), renormalized, in d's dtype; the norm of that remainder, |d| = 1 before).

    direction [d] unit; U [d, m] orthonormal. A remainder of 0 means the concept lies inside what is
    kept: d is then returned unchanged, and the caller reports it."""
    d = direction.double()
    rest = d - U @ (U.T @ d)
    left = float(rest.norm())
    if left < 1e-6:
        return direction, left
    return (rest / left).to(direction.dtype), left
