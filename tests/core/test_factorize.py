import math

import pytest
import torch

from refusal_core.solvers import rank_one, span
from refusal_core.solvers.linalg import ROUND_OFF, eigh_desc
from refusal_core.solvers.rank_one import factorize_layer
from refusal_core.types import RefusalError


def span_eigh(
    D: torch.Tensor,
    E: torch.Tensor | None,
    r: torch.Tensor,
    alpha: float,
    select=None,
    center: bool = False,
    basis: span.SpanBasis | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of C = D^T D / n - alpha E^T E / m restricted to span(D, E, r).

    D: [n, d] (center: D - mean(D) is used), E: [m, d] or None, r: [d]; basis: span.span_basis(D, r, E) when
    the caller solves several times; select(eigenvalues) -> how many eigenvectors to return (default all).
    Returns (eigenvalues [q] descending, eigenvectors [d, select(w)]) in float64. Everything but the basis
    runs on q x q matrices, and only the returned eigenvectors are mapped back to R^d.
    """
    use_e = E is not None and alpha != 0 and E.shape[0] > 0
    basis = basis if basis is not None else span.span_basis(D, r, E if use_e else None)
    w, V = eigh_desc(span.span_matrix(basis, alpha if use_e else 0.0, center))
    n_vec = V.shape[1] if select is None else min(select(w), V.shape[1])
    return w, basis.to_rd(V[:, :n_vec])


def problem(n, m, d, seed, offset=2.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    D = scale * (torch.randn(n, d, generator=g) + offset * torch.randn(d, generator=g))
    E = 3 * torch.randn(m, d, generator=g)
    return D, E, D.mean(0)


def dense_direction(D, E, r, k, alpha_eff, centered):
    """Reference: dense d x d eigendecomposition of C = C_r - alpha' C_e."""
    Dm = (D - D.mean(0)) if centered else D
    Ec = E - E.mean(0)
    C = Dm.double().T @ Dm.double() / D.shape[0] - alpha_eff * Ec.double().T @ Ec.double() / E.shape[0]
    w, U = torch.linalg.eigh(C)
    U = U[:, torch.argsort(w, descending=True)[:k]]
    v = U @ (U.T @ r.double())
    return (v / v.norm()).float()


@pytest.mark.parametrize("n,m,d,k", [(20, 15, 64, 5), (40, 30, 128, 12), (60, 50, 300, 30), (12, 40, 48, 3)])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("scale", [1.0, 1e-6])  # difference rows can be a millionth of the activations
def test_small_span_solver_equals_the_dense_one(n, m, d, k, alpha, scale):
    D, E, r = problem(n, m, d, seed=n + d, scale=scale)
    f = factorize_layer(D, E, r, "cpca" if alpha else "pca", k, alpha, moment="centered")
    Dc, Ec = D - D.mean(0), E - E.mean(0)
    a_eff = alpha * float((Dc.double() ** 2).sum() / n) / float((Ec.double() ** 2).sum() / m)
    ref = dense_direction(D, E, r, f.k_used, a_eff, centered=True)
    assert f.k_used == k
    assert min(float((f.direction - ref).abs().max()), float((f.direction + ref).abs().max())) < 1e-5


def test_span_eigh_eigenvalues_match_dense_ones():
    D, E, r = problem(30, 20, 80, seed=3)
    w, U = span_eigh(D, E, r, 0.7)
    C = D.double().T @ D.double() / 30 - 0.7 * E.double().T @ E.double() / 20
    dense = torch.linalg.eigvalsh(C).flip(0)
    nz = dense[dense.abs() > 1e-9 * dense.abs().max()]
    assert torch.allclose(w[w.abs() > 1e-9 * w.abs().max()], nz, atol=1e-8)
    assert torch.allclose(U.T @ U, torch.eye(U.shape[1], dtype=U.dtype), atol=1e-10)


def test_methods_agree_where_they_must():
    D, E, r = problem(30, 20, 40, seed=5)
    mean_diff = factorize_layer(D, E, r, "mean_diff", 100, 1.0)
    assert torch.allclose(mean_diff.direction, r / r.norm())
    # uncentered PCA with k >= rank keeps all of r: it equals mean_diff
    full = factorize_layer(D, E, r, "pca", 1000, 0.0, moment="uncentered")
    assert torch.allclose(full.direction, mean_diff.direction, atol=1e-5)
    # cpca with alpha = 0 is pca
    a = factorize_layer(D, E, r, "cpca", 7, 0.0)
    b = factorize_layer(D, E, r, "pca", 7, 5.0)
    assert torch.allclose(a.direction, b.direction, atol=1e-6)
    for f in (mean_diff, full, a):
        assert math.isclose(float(f.direction.norm()), 1.0, rel_tol=1e-5)


def test_alpha_is_relative_to_the_scale_of_the_neutral_activations():
    D, E, r = problem(30, 20, 50, seed=6)
    a = factorize_layer(D, E, r, "cpca", 6, 1.0)
    b = factorize_layer(D, 100 * E, r, "cpca", 6, 1.0)
    assert torch.allclose(a.direction, b.direction, atol=1e-5)


def test_auto_moment_switches_when_centering_removes_r():
    g = torch.Generator().manual_seed(7)
    r_true = torch.randn(64, generator=g)
    D = r_true + 0.01 * torch.randn(40, 64, generator=g)  # every row is r plus a little noise
    E = torch.randn(20, 64, generator=g)
    centered = factorize_layer(D, E, D.mean(0), "pca", 5, 0.0, moment="centered")
    auto = factorize_layer(D, E, D.mean(0), "pca", 5, 0.0, moment="auto")
    assert centered.retained < 0.5
    assert auto.moment == "uncentered" and auto.retained > 0.99
    assert float(auto.direction @ (r_true / r_true.norm())) > 0.99


def test_k_is_capped_by_the_data():
    D, E, r = problem(6, 10, 100, seed=8)
    f = factorize_layer(D, E, r, "pca", 100, 0.0, moment="centered")
    assert f.k_used <= 5  # 6 centered rows have rank 5


@pytest.mark.parametrize(
    "kwargs",
    [dict(method="svd"), dict(alpha=float("nan")), dict(alpha=-1.0), dict(k=0), dict(moment="both")],
)
def test_bad_parameters_are_refused(kwargs):
    D, E, r = problem(10, 10, 16, seed=9)
    args = dict(method="cpca", k=5, alpha=0.5, moment="auto") | kwargs
    with pytest.raises(RefusalError):
        factorize_layer(D, E, r, **args)


def test_zero_refusal_vector_is_refused():
    D = torch.zeros(5, 8)
    with pytest.raises(RefusalError, match="pairs do not differ"):
        factorize_layer(D, torch.randn(5, 8), D.mean(0), "cpca", 3, 0.5)


def _subsampled(n, m, d, seed, offset):
    """D keeps half of the rows its r was averaged from (as extraction's row budget does): r is outside span(D)."""
    D_all, E, _ = problem(2 * n, m, d, seed, offset=offset)
    return D_all[::2].contiguous(), E, D_all.mean(0)


CASES = [
    ("r is D's mean", lambda s, o: problem(30, 20, 96, s, offset=o)),
    ("D subsampled", lambda s, o: _subsampled(30, 20, 96, s, o)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("moment", ["auto", "centered", "uncentered"])
def test_the_cholesky_basis_gives_the_eigendecomposition_basis_result(name, make, moment, monkeypatch):
    """The fast basis (Cholesky, certified well conditioned) and G's eigendecomposition span the same space:
    the same direction, k and retained share, whichever is taken."""
    for seed, offset in [(1, 0.0), (2, 0.5), (3, 2.0), (4, 8.0)]:
        D, E, r = make(seed, offset)
        fast = factorize_layer(D, E, r, "cpca", 10, 0.5, moment)
        with monkeypatch.context() as m:
            m.setattr(span, "_cholesky_basis", lambda G, cut: None)
            slow = factorize_layer(D, E, r, "cpca", 10, 0.5, moment)
        assert (fast.k_used, fast.moment) == (slow.k_used, slow.moment)
        assert abs(fast.retained - slow.retained) < 1e-9
        assert min(float((fast.direction - s * slow.direction).abs().max()) for s in (1, -1)) < 1e-6


def test_the_cholesky_basis_is_taken_where_it_is_certain():
    D, E, r = problem(30, 20, 96, seed=7)
    rows = torch.cat([D.double(), E.double(), r.double()[None]])
    A = rows / rows.norm(dim=1, keepdim=True)
    _, B = span._cholesky_basis(A @ A.T, ROUND_OFF**2)
    assert B.shape == (51, 50)  # r = mean(D) adds no direction
    Q = A.T @ B
    assert torch.allclose(Q.T @ Q, torch.eye(50, dtype=Q.dtype), atol=1e-10)
    planted = torch.randn(96, dtype=torch.float64).repeat(5, 1) * (1 + 1e-7 * torch.randn(5, 1, dtype=torch.float64))
    assert span._cholesky_basis(planted @ planted.T / planted.norm(dim=1).square().max(), ROUND_OFF**2) is None


def test_auto_skips_the_centered_eigenvectors_only_where_centering_certainly_removes_r(monkeypatch):
    """The eigenvalue bound that lets auto go straight to the uncentered solve never fires where centering
    keeps half of |r|: on problems from 'r is all offset' to 'r is all spread' it agrees with the full solve."""
    verdicts = []
    bound = rank_one.cannot_keep
    monkeypatch.setattr(rank_one, "cannot_keep", lambda *a: verdicts.append(bound(*a)) or verdicts[-1])
    fired = 0
    for seed in range(40):
        offset = [0.0, 0.3, 0.6, 1.0, 1.5, 3.0][seed % 6]
        D, E, r = problem(25, 30, 90, seed=100 + seed, offset=offset)
        verdicts.clear()
        auto = factorize_layer(D, E, r, "cpca", 8, 0.5, moment="auto")
        assert len(verdicts) == 1
        if verdicts[0]:
            fired += 1
            assert factorize_layer(D, E, r, "cpca", 8, 0.5, moment="centered").retained < rank_one.RETAIN_THRESHOLD
            assert auto.moment == "uncentered"
    assert fired >= 5  # the shortcut is exercised, not only never wrong


def test_select_with_slack_bounds_every_count_the_exact_eigenvalues_could_give():
    """cannot_keep decides from float32 eigenvalues: select_k with their error as slack is never below the count
    of any spectrum within that error, ties and the positivity cut included."""
    from refusal_core.solvers.linalg import TIE, select_k

    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        q = int(torch.randint(2, 40, (1,), generator=g))
        w = torch.randn(q, generator=g, dtype=torch.float64).sort(descending=True).values
        if trial % 2 == 0:  # gaps at the tie threshold and eigenvalues at zero, where a count can flip
            gaps = TIE * (0.5 + torch.rand(q, generator=g, dtype=torch.float64))
            w = torch.cat([torch.ones(1, dtype=torch.float64), 0.5 - gaps.cumsum(0), torch.zeros(q // 4)])
            w = w.sort(descending=True).values
        if trial % 4 == 1:  # fewer clearly positive eigenvalues than asked for, the rest at zero
            w = torch.cat([torch.tensor([1.0, 0.5], dtype=torch.float64), torch.zeros(q)])
        slack = float(w.abs().max()) * 10 ** float(torch.empty(1).uniform_(-8, -6, generator=g))
        bound = select_k(w, 3, 0.0, slack)
        for _ in range(20):
            moved = (w + slack * (2 * torch.rand(w.shape, generator=g, dtype=torch.float64) - 1)).sort(descending=True)
            assert select_k(moved.values, 3, 0.0) <= bound
        assert select_k(w, 3, 0.0, 0.0) <= bound


def test_the_uncentered_matrix_is_the_centered_one_plus_the_mean_rows_outer_product():
    """The second solve reuses the first's C: D^T D / n = cov(D) + mu mu^T in the basis, to round-off."""
    D, E, r = problem(40, 30, 128, seed=3)
    basis = span.span_basis(D, r, E, center_e=True)
    for alpha in (0.0, 0.7):
        C_c = span.span_matrix(basis, alpha, True)
        want = span.span_matrix(basis, alpha, False)
        assert torch.allclose(span.uncentered(C_c, basis), want, atol=1e-12 * float(want.abs().max()))


def test_the_basis_holds_the_rows_without_stacking_them():
    """The Gram matrix from the row blocks equals A A^T of the stacked unit rows and is symmetric to the bit, and the
    basis maps coordinates to R^d as Q = A^T B does."""
    D, E, r = problem(30, 20, 96, seed=5)
    basis = span.span_basis(D, r, E)
    A = torch.cat(basis.blocks)
    G = span._gram(basis.blocks)
    assert torch.equal(G, G.T) and torch.allclose(G, A @ A.T, atol=1e-13)
    V = torch.randn(basis.B.shape[1], 3, dtype=torch.float64)
    assert torch.allclose(basis.to_rd(V), A.T @ (basis.B @ V), atol=1e-12)
    assert torch.allclose(basis.coords(r.double()), basis.B.T @ (A @ r.double()), atol=1e-12)


def test_the_float32_bound_still_takes_the_shortcut_at_the_template_row_budget(monkeypatch):
    """At Wan 1.3B's width with the template's 512 + 512 rows, where centering removes an r that is mostly offset,
    the float32 eigenvalues still prove it (the shortcut that saves an eigendecomposition is not lost to their
    error bound), and the answer is the full solve's."""
    from refusal_core import defaults

    verdicts = []
    bound = rank_one.cannot_keep
    monkeypatch.setattr(rank_one, "cannot_keep", lambda *a: verdicts.append(bound(*a)) or verdicts[-1])
    D, E, r = problem(defaults.MAX_ROWS, defaults.MAX_ROWS, 1536, seed=1)
    auto = factorize_layer(D, E, r, "cpca", defaults.K, defaults.ALPHA, moment="auto")
    assert verdicts == [True] and auto.moment == "uncentered"
    centered = factorize_layer(D, E, r, "cpca", defaults.K, defaults.ALPHA, moment="centered")
    assert centered.retained < rank_one.RETAIN_THRESHOLD


def test_the_report_names_the_edit_its_rank_and_its_residual_on_the_pairs():
    """The residual is the share of the pairs' differences the edited layer still reads: 0 when they all lie
    along d, the same from rows as from their moments, and in the node's report and the file's metadata."""
    from refusal_core.factorize import factorize
    from refusal_core.solvers.rank_one import pair_residual
    from refusal_core.stats import Moments
    from refusal_core.types import LayerStats, RefusalStats

    g = torch.Generator().manual_seed(3)
    d = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    along = torch.randn(10, 1, generator=g) * d
    assert pair_residual(along, d) < 1e-6 and pair_residual(Moments.of(along), d) < 1e-6
    D, E, r = problem(30, 20, 32, seed=4)
    stats = RefusalStats(
        (
            LayerStats("blocks.0.cross_attn.k", ("blocks.0.cross_attn.k",), D, E, r),
            LayerStats("blocks.1.cross_attn.k", ("blocks.1.cross_attn.k",), Moments.of(D), E, r),
        ),
        {},
    )
    edit = factorize(stats)
    q = edit.layers[0].basis[0].double()
    by_hand = float((D.double() - (D.double() @ q)[:, None] * q).norm() / D.double().norm())
    assert 0 < by_hand < 1
    assert float(edit.meta["residual"]) == pytest.approx(by_hand, abs=1e-6) and edit.meta["rank"] == "1"
    assert edit.meta["factorization"].startswith(
        "rank-1 refusal direction (cpca) at 2 layer(s); residual on the pairs "
    )
    assert f"{by_hand:.3f}" in edit.meta["factorization"]


def _nuisance_problem(seed: int = 11, d: int = 64, n: int = 40, m: int = 40):
    """A planted concept t and a nuisance u (orthonormal): every pair differs by t at a strength that varies, and by u
    unevenly (0.6 on average), as pairs differ by more than the concept; the neutral prompts vary mostly along u."""
    g = torch.Generator().manual_seed(seed)
    t, u = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))[0].T
    a = 1 + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    c = 0.6 + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    D = a * t + c * u + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)
    E = 3 * torch.randn(m, 1, generator=g, dtype=torch.float64) * u + 0.05 * torch.randn(
        m, d, generator=g, dtype=torch.float64
    )
    return D.float(), E.float(), D.mean(0).float(), t.float()


def test_contrast_removes_a_nuisance_the_neutral_prompts_share():
    """Where the pairs also differ along something the neutral prompts vary along, the mean difference tilts off the
    concept; cPCA with alpha > 0 gives that direction a negative eigenvalue, so d is the concept; alpha = 0 (pca) does not."""
    from refusal_core.factorize import factorize
    from refusal_core.types import LayerStats, RefusalStats

    D, E, r, t = _nuisance_problem()
    cos = lambda f: abs(float(f.direction @ t))  # noqa: E731
    assert cos(factorize_layer(D, E, r, "mean_diff", 100, 0.0)) < 0.9
    assert cos(factorize_layer(D, E, r, "pca", 100, 0.0)) < 0.9
    assert cos(factorize_layer(D, E, r, "cpca", 100, 0.0)) < 0.9
    for alpha in (0.5, 2.0):
        f = factorize_layer(D, E, r, "cpca", 100, alpha)
        assert cos(f) > 0.97 and f.moment == "centered", alpha
    stats = RefusalStats((LayerStats("blocks.0.cross_attn.k", ("blocks.0.cross_attn.k",), D, E, r),), {})
    assert abs(float(factorize(stats).layers[0].basis[0] @ t)) > 0.97  # the pack's defaults are cPCA with alpha > 0
    for seed in range(12, 20):  # not one lucky draw
        D, E, r, t = _nuisance_problem(seed)
        assert (
            abs(float(factorize_layer(D, E, r, "cpca", 100, 0.5).direction @ t))
            > 0.95
            > abs(float(r @ t / r.norm())) + 0.05
        )
