"""Denoising r by a contrastive low-rank factorization (docs/method.md, step 3).

C = C_r - alpha' C_e,  U_k = top-k eigenvectors of C,  d = U_k U_k^T r / ||U_k U_k^T r||.

The eigenvectors with non-zero eigenvalue lie in the span of the rows of D, E and r,
so C is solved in an orthonormal basis Q of that span (q <= n + m + 1 columns) and
never formed as a dense d x d matrix: exact, and O((n+m)^2 d) instead of O(d^3).
The basis comes from a Cholesky factor of the rows' Gram matrix where that is certain to
keep the same span, and auto decides "centering removes r" from eigenvalues alone where a
bound proves it, so a layer costs one q x q eigendecomposition where it can.
The solver is chosen by size: the span one whenever the rows fit (n + m + 1 <= d), since its
cost (q^2 d + q^3) is then below the dense one's (n d^2 + d^3; bench/run.py measures both at
Wan's widths). When a layer holds more rows than its width, or holds them as Moments
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
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import __version__, defaults
from .keep import keep_basis, kept_off
from .stats import Moments, Rows, as_moments, n_rows
from .types import LayerEdit, RefusalEdit, RefusalError, RefusalStats

METHODS = ("cpca", "pca", "mean_diff")  # the solvers of one direction per layer (factorize_layer)
CLOSED_FORM = "closed_form"  # a map, not a direction (closed_form.py)
SOLVERS = METHODS + (CLOSED_FORM,)
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
PROVENANCE = (
    "family",
    "site",
    "blocks",
    "dims",
    "layer_choice",
    "layer_scores",
    "sigmas",
    "latent_shape",
    "seed",
    "n_pairs",
    "n_neutral",
    "n_keep",
    "pairs_sha256",
)


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
    U_k: torch.Tensor | None = None  # only with_U_k


@dataclass(frozen=True)
class SpanBasis:
    """An orthonormal basis of span(D, r, E) and the rows' coordinates in it, computed once per layer and
    shared by the centered and the uncentered solve.

    With unit rows A = [D; E; r] / lengths [q0, d] and their Gram matrix G = A A^T, the basis is Q = A^T B
    for a B [q0, q] with B^T G B = I; D Q = lengths_D * (G B)_D, E Q likewise. Dq [n, q], Ce [q, q] = (E Q)^T (E Q) / m
    (None without E). B is L^-T (G = L L^T, Cholesky) when G is certified well conditioned, else U S^-1 from
    G's eigendecomposition without the directions at round-off (span_basis)."""

    A: torch.Tensor
    B: torch.Tensor
    Dq: torch.Tensor
    Ce: torch.Tensor | None

    def to_rd(self, V: torch.Tensor) -> torch.Tensor:
        """Basis coordinates [q, j] -> vectors of R^d [d, j]."""
        return self.A.T @ (self.B @ V)


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
    rows = torch.cat([D.double()] + ([E.double()] if E is not None else []) + [r.double()[None]])
    lengths = rows.norm(dim=1)
    A = rows / lengths.clamp_min(1e-300)[:, None]
    G = A @ A.T
    G = (G + G.T) / 2
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
    return SpanBasis(A, B, Dq, Ce)


def _cholesky_basis(G: torch.Tensor, cut: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(coordinates of the rows [q0, q], B [q0, q]) from G = L L^T, when the eigendecomposition's cut is
    certain to drop at most r's part outside the other rows' span; None when it is not (then eigh decides).

    The rows but the last (r) must have Gram eigenvalues certainly above 2 cut: lambda_min = 1 / ||L1^-1||_2^2
    >= 1 / ||L1^-1||_F^2 (the margin of 2 covers the bound's own round-off). r's squared distance p to their
    span then decides: p <= cut / 2, r lies in the span (B = L1^-T, r's row is left out of the basis);
    p >= 2 cut and the whole G certified, r adds a direction (B = L^-T); in between, None."""
    q0 = G.shape[0]
    L1, info = torch.linalg.cholesky_ex(G[:-1, :-1])
    if int(info) != 0:
        return None
    L1_inv = torch.linalg.solve_triangular(L1, torch.eye(q0 - 1, dtype=G.dtype), upper=False)
    f1 = float(L1_inv.square().sum())
    if not (math.isfinite(f1) and 0 < f1 < 1 / (2 * cut)):
        return None
    l = L1_inv @ G[:-1, -1]  # L1 l = g: r's coordinates in the other rows' basis
    p = float(G[-1, -1] - l @ l)
    zero = torch.zeros(1, q0 - 1, dtype=G.dtype)
    if p <= cut / 2:
        return torch.cat([L1, l[None]]), torch.cat([L1_inv.T, zero])
    if p < 2 * cut:
        return None
    last = -(l @ L1_inv) / math.sqrt(p)  # the last row of L^-1 for L = [[L1, 0], [l^T, sqrt p]]
    if not f1 + float(last @ last) + 1 / p < 1 / (2 * cut):
        return None
    L = torch.cat([torch.cat([L1, zero.T], 1), torch.cat([l, torch.tensor([math.sqrt(p)], dtype=G.dtype)])[None]])
    L_inv = torch.cat(
        [torch.cat([L1_inv, zero.T], 1), torch.cat([last, torch.tensor([1 / math.sqrt(p)], dtype=G.dtype)])[None]]
    )
    return L, L_inv.T


Select = Callable[[torch.Tensor], int]


def span_eigh(
    D: torch.Tensor,
    E: torch.Tensor | None,
    r: torch.Tensor,
    alpha: float,
    select: Select | None = None,
    center: bool = False,
    basis: SpanBasis | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of C = D^T D / n - alpha E^T E / m restricted to span(D, E, r).

    D: [n, d] (center: D - mean(D) is used), E: [m, d] or None, r: [d]; basis: span_basis(D, r, E) when
    the caller solves several times; select(eigenvalues) -> how many eigenvectors to return (default all).
    Returns (eigenvalues [q] descending, eigenvectors [d, select(w)]) in float64. Everything but the basis
    runs on q x q matrices, and only the returned eigenvectors are mapped back to R^d.
    """
    use_e = E is not None and alpha != 0 and E.shape[0] > 0
    basis = basis if basis is not None else span_basis(D, r, E if use_e else None)
    w, V = _eigh_desc(_span_matrix(basis, alpha if use_e else 0.0, center))
    n_vec = V.shape[1] if select is None else min(select(w), V.shape[1])
    return w, basis.to_rd(V[:, :n_vec])


def _span_matrix(basis: SpanBasis, alpha: float, center: bool) -> torch.Tensor:
    """C [q, q] in basis coordinates (symmetric)."""
    Dq = basis.Dq - basis.Dq.mean(0) if center else basis.Dq
    C = Dq.T @ Dq / max(Dq.shape[0], 1)
    if alpha != 0 and basis.Ce is not None:
        C = C - alpha * basis.Ce
    return (C + C.T) / 2


def _eigh_desc(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues [q] descending and their eigenvectors [q, q] of a symmetric C."""
    w, V = torch.linalg.eigh(C)
    return w.flip(0), V.flip(1)


def _cannot_keep(C: torch.Tensor, x: torch.Tensor, select: Select, share: float) -> bool:
    """Whether the top eigenvectors of C (select(eigenvalues) of them) certainly keep less than `share` of
    x's length, decided from the eigenvalues alone (a third of an eigendecomposition's cost).

    With C's eigenvalues w_i and c_i = (u_i . x)^2, R = sum over the taken i of c_i, and w_k the smallest
    taken eigenvalue: ||(C - t) x||^2 = sum_i c_i (w_i - t)^2 >= R (w_k - t)^2 for every t < w_k. The best t
    gives R <= c - a1^2 / (4 a0), with c = |x|^2, a0 = ||(C - w_k) x||^2, a1 = 2 (x.Cx - w_k c) < 0."""
    w = torch.linalg.eigvalsh(C).flip(0)
    n_take = select(w)
    if n_take == 0:
        return True
    wk = float(w[n_take - 1])
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
    return _eigh_desc((C + C.T) / 2)


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

    def select(w: torch.Tensor) -> int:
        return select_k(w, k, floor)

    if not dense:
        r_q = basis.B.T @ (basis.A @ r.double())  # r in basis coordinates: U^T r = V^T r_q for U = Q V
        # the centered C, built once: auto's bound and the centered solve both read it
        C_centered = _span_matrix(basis, a_eff, True) if moment != "uncentered" else None

    def solve(centered: bool) -> Factorization:
        if dense:
            w, V = dense_eigh(Dmo, Emo if use_e else None, a_eff, centered)
            n_take = select(w)
            proj = V[:, :n_take].T @ r.double()
            to_rd = lambda X: X  # noqa: E731
        else:
            w, V = _eigh_desc(C_centered if centered else _span_matrix(basis, a_eff, False))
            n_take = select(w)
            proj = V[:, :n_take].T @ r_q
            to_rd = basis.to_rd
        retained = float(proj.norm()) / r_norm
        spectrum = _trim(w) if dense else w
        kind, solver = "centered" if centered else "uncentered", "dense" if dense else "span"
        U_k = to_rd(V[:, :n_take]).float() if with_U_k else None
        if n_take == 0 or retained < 1e-8:
            return Factorization((r / r_norm).float(), spectrum.float(), n_take, retained, kind, solver, U_k)
        dvec = to_rd(V[:, :n_take] @ proj[:, None])[:, 0]
        return Factorization((dvec / dvec.norm()).float(), spectrum.float(), n_take, retained, kind, solver, U_k)

    if moment == "uncentered":
        return solve(False)
    # auto: where centering certainly removes r, its eigenvectors are not needed to know it (the span
    # solver's second solve would otherwise double its cost)
    if moment == "auto" and not dense and _cannot_keep(C_centered, r_q / r_norm, select, RETAIN_THRESHOLD):
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


def factorize(
    stats: RefusalStats,
    method: str = defaults.METHOD,
    k: int = defaults.K,
    alpha: float = defaults.ALPHA,
    moment: str = defaults.MOMENT,
    preserve: float = defaults.PRESERVE,
    ridge: float = defaults.RIDGE,
    keep_rank: int = defaults.KEEP_RANK,
) -> RefusalEdit:
    """The edit of one concept: per layer the unit direction d [1, d_in] at strength 1, or with method
    "closed_form" the map of closed_form.py (preserve and ridge are its settings; k, alpha, moment unused).
    Layers with keep rows (keep prompts) get d orthogonal to their leading keep_rank directions (keep.py;
    0 leaves d as solved); the closed form ignores them."""
    if method == CLOSED_FORM:
        from .closed_form import closed_form  # it imports this module's PROVENANCE

        return closed_form(stats, preserve, ridge)
    layers: list[LayerEdit] = []
    report = []
    inside = []
    residuals: list[float] = []
    for layer in stats.layers:
        f = factorize_layer(layer.diffs, layer.neutral, layer.r, method, k, alpha, moment)
        direction, kept = f.direction, ""
        if layer.keep is not None and n_rows(layer.keep) > 0 and keep_rank > 0:
            U = keep_basis(layer.keep, keep_rank)
            direction, left = kept_off(f.direction, U)
            kept = f", kept off {U.shape[1]} keep directions ({left:.2f} of d left)"
            if left < 1e-6:
                inside.append(layer.point)
        layers.append(
            LayerEdit(layer.point, layer.edit_keys, direction[None], (1.0,), f.spectrum, f.k_used, f.retained)
        )
        residuals.append(pair_residual(layer.diffs, direction))
        if method == "mean_diff":
            report.append(f"{layer.point}: d = r / |r|{kept}")
            continue
        capped = f" (capped: the data supports {f.k_used})" if f.k_used < k else ""
        solver = ", dense (more rows than width)" if f.solver == "dense" else ""
        report.append(
            f"{layer.point}: k={f.k_used} of {k}{capped}, keeps {f.retained:.2f} of |r|, C_r {f.moment}{solver}{kept}"
        )
    if inside:
        raise RefusalError(
            f"at {inside[0]} the concept lies inside what the keep prompts hold: nothing would be erased. "
            "Keep prompts should show look-alikes without the concept (e.g. 'a cartoon mouse' to keep "
            "while erasing a named mouse); remove the ones that show the concept itself"
        )
    residual = sum(residuals) / max(len(residuals), 1)
    kept_note = (
        f", kept off the keep prompts' top {keep_rank} directions"
        if any(layer.keep is not None and n_rows(layer.keep) and keep_rank > 0 for layer in stats.layers)
        else ""
    )
    report.insert(
        0,
        f"rank-1 refusal direction ({method}) at {len(layers)} layer(s){kept_note}; residual on the pairs {residual:.3f} "
        "(|D (I - d d^T)| / |D|, mean over layers: the share of the unsafe - safe differences still read)",
    )
    meta = {
        **{key: stats.meta[key] for key in PROVENANCE if key in stats.meta},
        "edit": "refusal_direction",
        "rank": "1",
        "residual": f"{residual:.6f}",
        "method": method,
        "k": str(k),
        "alpha": str(alpha if method == "cpca" else 0.0),
        "moment": moment,
        **(
            {"keep_rank": str(keep_rank)}
            if any(layer.keep is not None and n_rows(layer.keep) for layer in stats.layers)
            else {}
        ),
        "factorization": "; ".join(report),
        "version": __version__,
    }
    return RefusalEdit(tuple(layers), meta, source=stats)
