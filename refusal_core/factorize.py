"""Denoising r by a contrastive low-rank factorization (docs/method.md, step 3).

C = C_r - alpha' C_e,  U_k = top-k eigenvectors of C,  d = U_k U_k^T r / ||U_k U_k^T r||.

The eigenvectors with non-zero eigenvalue lie in the span of the rows of D, E and r,
so C is solved in an orthonormal basis Q of that span (q <= n + m + 1 columns) and
never formed as a dense d x d matrix: exact, and O((n+m)^2 d) instead of O(d^3).
When a layer holds more rows than its width (n + m + 1 > d), or holds them as Moments
(stats.py: streamed extraction), the span is all of R^d and C is formed from the moments
and solved densely (the "dense fallback"): the same C, so the same directions.
alpha is relative: C_e is rescaled to the trace of cov(D), the spread of the differences, so
alpha = 1 weighs the pairs' noise and the neutral prompts' variety equally whatever the activation
scale (the paper does not give alpha or its scale).
Round-off never decides the result (ROUND_OFF): rows that agree to float32 precision add no
direction to the span, eigenvalues at the data's round-off are not taken, and ties at the k-th
eigenvalue are taken together, so the same prompts give the same d on any CPU, BLAS and thread count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .stats import Moments, Rows, as_moments, n_rows
from . import __version__, defaults
from .types import LayerEdit, RefusalEdit, RefusalError, RefusalStats

METHODS = ("cpca", "pca", "mean_diff")
MOMENTS = ("auto", "centered", "uncentered")
# Below this fraction of ||r|| kept by U_k, centering removed r itself (docs/method.md, "centering").
RETAIN_THRESHOLD = 0.5
# Activations are float32 (exact to 6e-8 of their size), and a forward pass accumulates errors some
# hundred times that, which differ with the BLAS kernels, the CPU and the thread count. Any part of
# the data smaller than ROUND_OFF of its own size is treated as zero, so round-off never picks d.
ROUND_OFF = 1e-5
# Eigenvalues of C closer than this (relative to the largest) are one eigenspace: U_k takes all or none.
TIE = 1e-6
# What an edit keeps of its statistics' metadata: which model, site, layers and prompts it was made from.
PROVENANCE = ("family", "site", "blocks", "dims", "layer_choice", "layer_scores", "sigmas", "latent_shape", "seed",
              "n_pairs", "n_neutral", "pairs_sha256")


@dataclass(frozen=True)
class Factorization:
    """direction [d]; spectrum [q] eigenvalues of C (descending, in the span); U_k [d, k_used] the
    eigenvectors d was projected on (float32; None for mean_diff)."""

    direction: torch.Tensor
    spectrum: torch.Tensor | None
    k_used: int
    retained: float
    moment: str
    solver: str = "span"
    U_k: torch.Tensor | None = None


@dataclass(frozen=True)
class SpanBasis:
    """An orthonormal basis of span(D, r, E) and the rows' coordinates in it, computed once per layer and
    shared by the centered and the uncentered solve (the only O(q0^2 d) and q0 x q0 eigen steps).

    With unit rows A = [D; r; E] / lengths [q0, d] and A A^T = U S^2 U^T, Q = A^T B (B = U S^-1) is
    orthonormal; D Q = lengths_D * (A A^T)_D B, E Q likewise. Dq [n, q], Ce [q, q] = (E Q)^T (E Q) / m
    (None without E)."""

    A: torch.Tensor
    B: torch.Tensor
    Dq: torch.Tensor
    Ce: torch.Tensor | None

    def to_rd(self, V: torch.Tensor) -> torch.Tensor:
        """Basis coordinates [q, j] -> vectors of R^d [d, j]."""
        return self.A.T @ (self.B @ V)


def span_basis(D: torch.Tensor, r: torch.Tensor, E: torch.Tensor | None) -> SpanBasis:
    """D [n, d], r [d], E [m, d] or None, in float64. Unit rows make the rank cut-off independent of how
    differently D and E are scaled (difference rows can be 1e-6 of the activations)."""
    rows = torch.cat([D.double(), r.double()[None]] + ([E.double()] if E is not None else []))
    lengths = rows.norm(dim=1)
    A = rows / lengths.clamp_min(1e-300)[:, None]
    G = A @ A.T
    s2, U = torch.linalg.eigh((G + G.T) / 2)
    # Unit rows: a singular value under ROUND_OFF means a combination of rows vanishes to round-off.
    # Such directions are noise whose presence depends on the BLAS (their s^2 sit near 1e-13 for rows
    # that agree to float32 precision); leaving them out also keeps S^-1 well conditioned.
    keep = s2 > ROUND_OFF**2
    B = U[:, keep] / s2[keep].sqrt()
    n = D.shape[0]
    Dq = lengths[:n, None] * (G[:n] @ B)
    Ce = None
    if E is not None and E.shape[0] > 0:
        Eq = lengths[n + 1 :, None] * (G[n + 1 :] @ B)
        Ce = Eq.T @ Eq / E.shape[0]
    return SpanBasis(A, B, Dq, Ce)


Select = Callable[[torch.Tensor], int]


def span_eigh(D: torch.Tensor, E: torch.Tensor | None, r: torch.Tensor, alpha: float, select: Select | None = None,
              center: bool = False, basis: SpanBasis | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of C = D^T D / n - alpha E^T E / m restricted to span(D, E, r).

    D: [n, d] (center: D - mean(D) is used), E: [m, d] or None, r: [d]; basis: span_basis(D, r, E) when
    the caller solves several times; select(eigenvalues) -> how many eigenvectors to return (default all).
    Returns (eigenvalues [q] descending, eigenvectors [d, select(w)]) in float64. Everything but the basis
    runs on q x q matrices, and only the returned eigenvectors are mapped back to R^d.
    """
    use_e = E is not None and alpha != 0 and E.shape[0] > 0
    basis = basis if basis is not None else span_basis(D, r, E if use_e else None)
    Dq = basis.Dq - basis.Dq.mean(0) if center else basis.Dq
    C = Dq.T @ Dq / max(D.shape[0], 1)
    if use_e and basis.Ce is not None:
        C = C - alpha * basis.Ce
    w, V = torch.linalg.eigh((C + C.T) / 2)
    order = torch.argsort(w, descending=True)
    w = w[order]
    n_vec = order.numel() if select is None else min(select(w), order.numel())
    return w, basis.to_rd(V[:, order[:n_vec]])


def dense_eigh(D: Moments, E: Moments | None, alpha: float, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of C = S_D - alpha S_E from moments, dense d x d (float64).

    S_D = D^T D / n (centered: of D - mean(D)), S_E = centered second moment of E (None: no
    contrast). Returns (eigenvalues [d] descending, eigenvectors [d, d]).
    """
    C = D.second_moment(centered)
    if E is not None and alpha != 0 and E.count > 0:
        C = C - alpha * E.second_moment(True)
    w, V = torch.linalg.eigh((C + C.T) / 2)
    order = torch.argsort(w, descending=True)
    return w[order], V[:, order]


def select_k(w: torch.Tensor, k: int, floor: float) -> int:
    """How many leading eigenvectors U_k takes: k, capped by the clearly positive eigenvalues of C.

    w: eigenvalues [q] descending. An eigenvalue at or below `floor` (round-off of the data, see
    ROUND_OFF) or at zero (outside the data's span, or r's own direction once D is centered) is a tie
    that the BLAS would break; it is never taken. Eigenvalues tied with the k-th (within TIE of the
    largest) are taken with it, so that no kernel decides which of them U_k holds.
    """
    if w.numel() == 0:
        return 0
    tol = max(float(w.abs().max()) * 1e-9, floor)
    n_pos = int((w > tol).sum())
    n = min(k, n_pos)
    while 0 < n < n_pos and float(w[n - 1] - w[n]) <= TIE * float(w[0]):
        n += 1
    return n


def factorize_layer(
    D: Rows, E: Rows, r: torch.Tensor, method: str, k: int, alpha: float, moment: str = "auto"
) -> Factorization:
    """Unit direction d [d_in] for one layer from D [n, d_in], E [m, d_in] (rows or Moments), r [d_in].

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
        basis = span_basis(D, r, Ec if alpha > 0 and tr_e > 0 else None)  # shared by the centered and uncentered solves
    floor = ROUND_OFF**2 * energy  # eigenvalues of C at this size are the rows' round-off, not their spread
    if spread <= floor:
        spread = 0.0  # the rows agree: centered, C_r is round-off only; uncentered, C_r = r r^T
    a_eff = alpha * spread / tr_e if alpha > 0 and tr_e > 0 else 0.0

    def select(w: torch.Tensor) -> int:
        return select_k(w, k, floor)

    def solve(centered: bool) -> Factorization:
        if dense:
            w, U = dense_eigh(Dmo, Emo if use_e else None, a_eff, centered)
        else:
            w, U = span_eigh(D, Ec, r, a_eff, select=select, center=centered, basis=basis)
        n_take = select(w)
        proj = U[:, :n_take].T @ r.double()
        retained = float(proj.norm()) / r_norm
        spectrum = _trim(w) if dense else w
        kind, solver = "centered" if centered else "uncentered", "dense" if dense else "span"
        U_k = U[:, :n_take].float()
        if n_take == 0 or retained < 1e-8:
            return Factorization((r / r_norm).float(), spectrum.float(), n_take, retained, kind, solver, U_k)
        dvec = U[:, :n_take] @ proj
        return Factorization((dvec / dvec.norm()).float(), spectrum.float(), n_take, retained, kind, solver, U_k)

    if moment == "uncentered":
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


def factorize(stats: RefusalStats, method: str = defaults.METHOD, k: int = defaults.K, alpha: float = defaults.ALPHA,
              moment: str = defaults.MOMENT) -> RefusalEdit:
    """The edit of one concept: per layer the unit direction d [1, d_in] at strength 1."""
    layers: list[LayerEdit] = []
    report = []
    for layer in stats.layers:
        f = factorize_layer(layer.diffs, layer.neutral, layer.r, method, k, alpha, moment)
        layers.append(LayerEdit(layer.point, layer.edit_keys, f.direction[None], (1.0,), f.spectrum, f.k_used, f.retained))
        if method == "mean_diff":
            report.append(f"{layer.point}: d = r / |r|")
            continue
        capped = f" (capped: the data supports {f.k_used})" if f.k_used < k else ""
        solver = ", dense (more rows than width)" if f.solver == "dense" else ""
        report.append(f"{layer.point}: k={f.k_used} of {k}{capped}, keeps {f.retained:.2f} of |r|, C_r {f.moment}{solver}")
    meta = {
        **{key: stats.meta[key] for key in PROVENANCE if key in stats.meta},
        "edit": "refusal_direction",
        "method": method,
        "k": str(k),
        "alpha": str(alpha if method == "cpca" else 0.0),
        "moment": moment,
        "factorization": "; ".join(report),
        "version": __version__,
    }
    return RefusalEdit(tuple(layers), meta, source=stats)
