"""C = C_r - alpha' C_e solved in the span of the data's rows, or densely from their moments.

The eigenvectors of C with non-zero eigenvalue lie in the span of the rows of D, E and r, so C is solved
in an orthonormal basis Q of that span (q <= n + m + 1 columns) and never formed as a dense d x d matrix:
exact, and O((n+m)^2 d) instead of O(d^3). The basis comes from a Cholesky factor of the rows' Gram
matrix where that is certain to keep the same span (else from its eigendecomposition). When a layer holds
more rows than its width, or holds them as Moments (streamed extraction), the span is all of R^d and C is
formed from the moments and solved densely (dense_eigh): the same C, so the same directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..stats import Moments
from .linalg import ROUND_OFF, eigh_desc, float32_eigvalsh

Select = Callable[..., int]  # (eigenvalues [q] descending, slack=0.0) -> how many eigenvectors U_k takes


@dataclass(frozen=True)
class SpanBasis:
    """An orthonormal basis of span(D, r, E) and the rows' coordinates in it, computed once per layer and
    shared by the centered and the uncentered solve.

    With unit rows A = [D; E; r] / lengths [q0, d] (held as its blocks, never concatenated) and their Gram matrix
    G = A A^T, the basis is Q = A^T B for a B [q0, q] with B^T G B = I; D Q = lengths_D * (G B)_D, E Q likewise.
    Dq [n, q], Ce [q, q] = (E Q)^T (E Q) / m (None without E). B is L^-T (G = L L^T, Cholesky) when G is certified
    well conditioned, else U S^-1 from G's eigendecomposition without the directions at round-off (span_basis)."""

    blocks: tuple[torch.Tensor, ...]
    B: torch.Tensor
    Dq: torch.Tensor
    Ce: torch.Tensor | None

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        """A vector of R^d [d] -> its basis coordinates Q^T x [q]."""
        return self.B.T @ torch.cat([block @ x for block in self.blocks])

    def to_rd(self, V: torch.Tensor) -> torch.Tensor:
        """Basis coordinates [q, j] -> vectors of R^d [d, j]."""
        BV, out, i = self.B @ V, None, 0
        for block in self.blocks:
            part = block.T @ BV[i : i + block.shape[0]]
            out, i = (part if out is None else out + part), i + block.shape[0]
        return out


def span_basis(D: torch.Tensor, r: torch.Tensor, E: torch.Tensor | None, center_e: bool = False) -> SpanBasis:
    """D [n, d], r [d], E [m, d] or None, in float64; center_e: Ce of E - mean(E), centered in the basis
    (centered rows sum to zero, a dependency the Cholesky path would have to hand to eigh). Unit rows make
    the rank cut-off independent of how differently D and E are scaled (difference rows can be 1e-6 of
    the activations).

    Unit rows: a singular value under ROUND_OFF means a combination of rows vanishes to round-off. Such
    directions are noise whose presence depends on the BLAS (their s^2 sit near 1e-13 for rows that agree
    to float32 precision) and are left out. Where that is certain to leave out nothing but r's part outside
    the other rows' span (r is their mean when no row was dropped), a Cholesky factor gives the same span
    for a fraction of an eigendecomposition's cost (_cholesky_basis)."""
    parts = [D.double()] + ([E.double()] if E is not None else []) + [r.double()[None]]
    lengths = torch.cat([part.norm(dim=1) for part in parts])
    blocks = tuple(part / part.norm(dim=1).clamp_min(1e-300)[:, None] for part in parts)
    G = _gram(blocks)
    found = _cholesky_basis(G, ROUND_OFF**2)
    if found is not None:
        coords, B = found
    else:
        s2, U = torch.linalg.eigh(G)
        keep = s2 > ROUND_OFF**2
        B = U[:, keep] / s2[keep].sqrt()
        coords = G @ B
    n = D.shape[0]
    Dq = lengths[:n, None] * coords[:n]
    Ce = None
    if E is not None and E.shape[0] > 0:
        Eq = lengths[n:-1, None] * coords[n:-1]
        Eq = Eq - Eq.mean(0) if center_e else Eq
        Ce = Eq.T @ Eq / E.shape[0]
    return SpanBasis(blocks, B, Dq, Ce)


def _gram(blocks: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A A^T [q0, q0] for A the rows of the blocks stacked, each block pair once (symmetric by construction)."""
    sizes = [block.shape[0] for block in blocks]
    starts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    G = torch.empty(starts[-1], starts[-1], dtype=torch.float64)
    for i, a in enumerate(blocks):
        for j in range(i + 1):
            part = a @ blocks[j].T
            if i == j:
                part = (part + part.T) / 2
            G[starts[i] : starts[i + 1], starts[j] : starts[j + 1]] = part
            G[starts[j] : starts[j + 1], starts[i] : starts[i + 1]] = part.T
    return G


def _cholesky_basis(G: torch.Tensor, cut: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(coordinates of the rows [q0, q], B [q0, q]) from G = L L^T, when the eigendecomposition's cut is
    certain to drop at most r's part outside the other rows' span; None when it is not (then eigh decides).

    The rows but the last (r) must have Gram eigenvalues certainly above 2 cut: lambda_min = 1 / ||L1^-1||_2^2
    >= 1 / ||L1^-1||_F^2 (the margin of 2 covers the bound's own round-off). r's squared distance p to their
    span then decides: p <= cut / 2, r lies in the span (B = L1^-T, r's row is left out of the basis);
    p >= 2 cut and the whole G certified, r adds a direction (B = L^-T); in between, None."""
    q0 = G.shape[0]
    L = torch.zeros(q0, q0, dtype=G.dtype)
    L_inv = torch.zeros(q0, q0, dtype=G.dtype)
    L1, info = torch.linalg.cholesky_ex(G[:-1, :-1])
    if int(info) != 0:
        return None
    L[:-1, :-1] = L1
    torch.linalg.solve_triangular(L1, torch.eye(q0 - 1, dtype=G.dtype), upper=False, out=L_inv[:-1, :-1])
    L1_inv = L_inv[:-1, :-1]
    f1 = float(L1_inv.square().sum())
    if not (math.isfinite(f1) and 0 < f1 < 1 / (2 * cut)):
        return None
    l = L1_inv @ G[:-1, -1]  # L1 l = g: r's coordinates in the other rows' basis
    p = float(G[-1, -1] - l @ l)
    L[-1, :-1] = l
    if p <= cut / 2:
        return L[:, :-1], L_inv[:-1].T
    if p < 2 * cut:
        return None
    last = -(l @ L1_inv) / math.sqrt(p)  # the last row of L^-1 for L = [[L1, 0], [l^T, sqrt p]]
    if not f1 + float(last @ last) + 1 / p < 1 / (2 * cut):
        return None
    L[-1, -1], L_inv[-1, :-1], L_inv[-1, -1] = math.sqrt(p), last, 1 / math.sqrt(p)
    return L, L_inv.T


def span_matrix(basis: SpanBasis, alpha: float, center: bool) -> torch.Tensor:
    """C [q, q] in basis coordinates (symmetric)."""
    Dq = basis.Dq - basis.Dq.mean(0) if center else basis.Dq
    C = Dq.T @ Dq / max(Dq.shape[0], 1)
    if alpha != 0 and basis.Ce is not None:
        C = C - alpha * basis.Ce
    return (C + C.T) / 2


def uncentered(C_centered: torch.Tensor, basis: SpanBasis) -> torch.Tensor:
    """The uncentered C [q, q] from the centered one: D^T D / n = cov(D) + mu mu^T, mu the mean row."""
    mu = basis.Dq.mean(0)
    return C_centered + torch.outer(mu, mu)


def cannot_keep(C: torch.Tensor, x: torch.Tensor, select: Select, share: float) -> bool:
    """Whether the top eigenvectors of C (select(eigenvalues) of them) certainly keep less than `share` of
    x's length, decided from the eigenvalues alone (float32: a third of a float64 eigendecomposition's cost).

    With C's eigenvalues w_i and c_i = (u_i . x)^2, R = sum over the taken i of c_i, and w_k the smallest
    taken eigenvalue: ||(C - t) x||^2 = sum_i c_i (w_i - t)^2 >= R (w_k - t)^2 for every t < w_k. The best t
    gives R <= c - a1^2 / (4 a0), with c = |x|^2, a0 = ||(C - w_k) x||^2, a1 = 2 (x.Cx - w_k c) < 0.
    The float32 eigenvalues are taken from the side where their error cannot make the answer wrong: the
    most eigenvectors select could take (R only grows with them) and the least their smallest eigenvalue could
    be. A True is therefore certain; a False only sends the case to the eigenvectors, which decide exactly."""
    w, slack = float32_eigvalsh(C)
    n_take = select(w, slack=slack)
    if n_take == 0:
        return True
    wk = float(w[n_take - 1]) - slack
    Cx = C @ x
    c = float(x @ x)
    a0, a1 = float((Cx - wk * x).square().sum()), 2 * (float(x @ Cx) - wk * c)
    if a1 >= 0 or a0 <= 0:
        return False
    return c - a1 * a1 / (4 * a0) < 0.98 * share * share  # the margin covers the bound's round-off


def dense_eigh(D: Moments, E: Moments | None, alpha: float, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of C = S_D - alpha S_E from moments, dense d x d (float64).

    S_D = D^T D / n (centered: of D - mean(D)), S_E = centered second moment of E (None: no
    contrast). Returns (eigenvalues [d] descending, eigenvectors [d, d]).
    """
    C = D.second_moment(centered)
    if E is not None and alpha != 0 and E.count > 0:
        C = C - alpha * E.second_moment(True)
    return eigh_desc((C + C.T) / 2)
