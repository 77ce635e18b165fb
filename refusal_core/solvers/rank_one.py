"""The paper's rank-1 edit: one unit direction d per layer from its statistics (docs/method.md, step 3).

C = C_r - alpha' C_e,  U_k = top-k eigenvectors of C,  d = U_k U_k^T r / ||U_k U_k^T r||.

C is solved in the span of the rows where they fit (n + m + 1 <= d), since that costs q^2 d + q^3
against the dense n d^2 + d^3 (bench/run.py measures both at Wan's widths), else densely from the
moments (span.py). Auto decides "centering removes r" from eigenvalues alone where a bound proves it,
so a layer costs one q x q eigendecomposition where it can.
alpha is relative: C_e is rescaled to the trace of cov(D), the spread of the differences, so
alpha = 1 weighs the pairs' noise and the neutral prompts' variety equally whatever the activation
scale (the paper does not give alpha or its scale).
Round-off never decides the result (linalg.ROUND_OFF): rows that agree to float32 precision add no
direction to the span, eigenvalues at the data's round-off are not taken, and ties at the k-th
eigenvalue are taken together, so the same prompts give the same d on any CPU, BLAS and thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..stats import Moments, Rows, as_moments, n_rows
from ..types import RefusalError
from .linalg import ROUND_OFF, eigh_desc, select_k
from .span import cannot_keep, dense_eigh, span_basis, span_matrix, uncentered

METHODS = ("cpca", "pca", "mean_diff")  # the solvers of one direction per layer (factorize_layer)
MOMENTS = ("auto", "centered", "uncentered")
# Below this fraction of ||r|| kept by U_k, centering removed r itself (docs/method.md, "centering").
RETAIN_THRESHOLD = 0.5
# The note a Factorization carries when no eigenvector could be taken and d fell back to r / |r|.
NO_EIGENVECTOR = "no eigenvector of C kept any of r: d = r / |r| (mean_diff)"


@dataclass(frozen=True)
class Factorization:
    """direction [d]; spectrum [q] eigenvalues of C (descending, in the span); U_k [d, k_used] the
    eigenvectors d was projected on (float32; None for mean_diff); fallback: why d is r / |r| although
    the method asked for a projection ("" when it is not)."""

    direction: torch.Tensor
    spectrum: torch.Tensor | None
    k_used: int
    retained: float
    moment: str
    solver: str = "span"
    U_k: torch.Tensor | None = None  # only with_U_k
    fallback: str = ""


def factorize_layer(
    D: Rows, E: Rows, r: torch.Tensor, method: str, k: int, alpha: float, moment: str = "auto", with_U_k: bool = False
) -> Factorization:
    """Unit direction d [d_in] for one layer from D [n, d_in], E [m, d_in] (rows or Moments), r [d_in];
    with_U_k: also the eigenvectors d was projected on, in R^d (the span solver otherwise maps only d back).

    Rows with n + m + 1 <= d_in go to the span solver; otherwise (or given Moments) C is formed
    densely from the moments (dense_eigh), an exact equivalent.

    alpha is relative to the spread of the differences: C_e is scaled so that its trace equals
    tr(cov(D)), whichever C_r the solve uses. Where D's rows agree (to ROUND_OFF), r is measured
    without noise: there is nothing to contrast away, and every method gives d = r / |r|.
    """
    if method not in METHODS:
        raise RefusalError(f"method '{method}' is unknown; choose one of {', '.join(METHODS)}")
    if moment not in MOMENTS:
        raise RefusalError(f"moment '{moment}' is unknown; choose one of {', '.join(MOMENTS)}")
    if not math.isfinite(alpha) or alpha < 0:
        raise RefusalError(f"alpha must be a finite number >= 0, got {alpha}")
    if k < 1:
        raise RefusalError(f"rank k must be at least 1, got {k}")
    r_norm = float(r.norm())
    if not math.isfinite(r_norm) or r_norm == 0:
        raise RefusalError("the refusal vector is zero or not finite: the pairs do not differ at this layer")
    if method == "mean_diff":
        return Factorization((r / r_norm).float(), None, 0, 1.0, "none")
    if method == "pca":
        alpha = 0.0
    dense = isinstance(D, Moments) or isinstance(E, Moments) or n_rows(D) + n_rows(E) + 1 > r.shape[0]
    if dense:
        Dmo, Emo = as_moments(D), as_moments(E)
        use_e = Emo.count > 1  # as the rows path: one neutral row has no spread to contrast with
        tr_e = float(torch.trace(Emo.second_moment(True))) if use_e else 0.0
        energy, spread = (float(torch.trace(Dmo.second_moment(c))) for c in (False, True))
    else:
        Ec = E.double() - E.double().mean(0) if E.shape[0] > 1 else None
        tr_e = _mean_sq(Ec) if Ec is not None else 0.0
        Dd = D.double()
        energy, spread = _mean_sq(Dd), _mean_sq(Dd - Dd.mean(0))
        # shared by the centered and uncentered solves; E - mean(E) is taken in the basis
        basis = span_basis(D, r, E if alpha > 0 and tr_e > 0 else None, center_e=True)
    floor = ROUND_OFF**2 * energy  # eigenvalues of C at this size are the rows' round-off, not their spread
    if spread <= floor:
        spread = 0.0  # the rows agree: centered, C_r is round-off only; uncentered, C_r = r r^T
    a_eff = alpha * spread / tr_e if alpha > 0 and tr_e > 0 else 0.0

    def select(w: torch.Tensor, slack: float = 0.0) -> int:
        return select_k(w, k, floor, slack)

    if not dense:
        r_q = basis.coords(r.double())  # r in basis coordinates: U^T r = V^T r_q for U = Q V
        # the centered C, built once: auto's bound and the centered solve both read it
        C_centered = span_matrix(basis, a_eff, True) if moment != "uncentered" else None

    def solve(centered: bool) -> Factorization:
        if dense:
            w, V = dense_eigh(Dmo, Emo if use_e else None, a_eff, centered)
            n_take = select(w)
            proj = V[:, :n_take].T @ r.double()
            to_rd = lambda X: X  # noqa: E731
        else:
            if centered:
                C = C_centered
            else:
                C = uncentered(C_centered, basis) if C_centered is not None else span_matrix(basis, a_eff, False)
            w, V = eigh_desc(C)
            n_take = select(w)
            proj = V[:, :n_take].T @ r_q
            to_rd = basis.to_rd
        retained = float(proj.norm()) / r_norm
        spectrum = _trim(w) if dense else w
        kind, solver = "centered" if centered else "uncentered", "dense" if dense else "span"
        U_k = to_rd(V[:, :n_take]).float() if with_U_k else None
        if n_take == 0 or retained < 1e-8:
            return Factorization(
                (r / r_norm).float(), spectrum.float(), n_take, retained, kind, solver, U_k, NO_EIGENVECTOR
            )
        dvec = to_rd(V[:, :n_take] @ proj[:, None])[:, 0]
        return Factorization((dvec / dvec.norm()).float(), spectrum.float(), n_take, retained, kind, solver, U_k)

    if moment == "uncentered":
        return solve(False)
    # auto: where centering certainly removes r, its eigenvectors are not needed to know it (the span
    # solver's second solve would otherwise double its cost)
    if moment == "auto" and not dense and cannot_keep(C_centered, r_q / r_norm, select, RETAIN_THRESHOLD):
        return solve(False)
    first = solve(True)
    if moment == "auto" and first.retained < RETAIN_THRESHOLD:
        return solve(False)
    return first


def _trim(w: torch.Tensor) -> torch.Tensor:
    """The dense spectrum without its eigenvalues at zero (directions outside the data), as the span solver reports it."""
    if w.numel() == 0:
        return w
    return w[w.abs() > float(w.abs().max()) * 1e-12]


def _mean_sq(X: torch.Tensor) -> float:
    """trace(X^T X / n) for rows X [n, d]."""
    return float((X.double() ** 2).sum()) / max(X.shape[0], 1)


def pair_residual(diffs: Rows, direction: torch.Tensor) -> float:
    """|D (I - d d^T)| / |D| for the difference rows D [n, d_in] (rows or Moments) and a unit d [d_in]: the share
    of the pairs' unsafe - safe differences that a layer still reads once d is removed (0: all of it removed,
    1: none). A name that lives in many directions leaves much of its difference outside any one d."""
    d = direction.double()
    if isinstance(diffs, Moments):
        total = float(torch.trace(diffs.gram))
        kept = total - float(d @ diffs.gram @ d)
    else:
        D = diffs.double()
        total = float(D.square().sum())
        kept = float((D - (D @ d)[:, None] * d).square().sum())
    return (max(kept, 0.0) / total) ** 0.5 if total > 0 else 0.0
