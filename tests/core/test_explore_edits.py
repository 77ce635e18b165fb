"""scripts/explore_edits.py: its generic vocabulary names no concept, an edit it cannot read is refused, and its
output-side edit removes its direction from what a layer can output."""

import pytest
import torch

from refusal_core import defaults
from refusal_core.factorize import factorize
from refusal_core.ordinary import ordinary_text
from refusal_core.solvers.keep import keep_basis
from scripts.explore_edits import (
    GENERIC,
    Part,
    gained,
    generic_vocabulary,
    kept_subspace,
    mapped,
    output_edit,
    parse,
)
from tests.core.test_ordinary_text import KEEP, ORDINARY, assert_names_nothing, extract
from tests.core.toy_wan import random_wan


def test_the_generic_vocabulary_is_ordinary_text():
    """Kept off an edit, the vocabulary must not hold what an edit erases or must keep (as the shipped ordinary text,
    its first 64 phrases)."""
    assert len(set(GENERIC)) == len(GENERIC) == 300
    assert_names_nothing(list(GENERIC))
    assert ordinary_text() == list(GENERIC[:64])  # the pack ships the first 64


def test_an_edit_spec_reads_as_its_parts_and_a_wrong_option_is_refused():
    assert parse("text_kv,vocab=4,strength=1.3,rank=2,context=3+cross_out,map") == (
        Part("text_kv", vocab=4, strength=1.3, rank=2, context=3),
        Part("cross_out", map=True),
    )
    with pytest.raises(SystemExit, match="unknown option 'alpha=2'"):
        parse("text_kv,alpha=2")
    with pytest.raises(SystemExit, match="rank=M is for the projections"):
        parse("text_kv,map,rank=2")
    assert parse("text_kv,out,vocab=2") == (Part("text_kv", vocab=2, out=True),)
    assert parse("text_kv,gain+cross_out,gain=0.5") == (Part("text_kv", gain=1.0), Part("cross_out", gain=0.5))
    with pytest.raises(SystemExit, match="a part of its own"):
        parse("text_kv,out+cross_out")
    assert parse("text_kv,ordinary,gain=0.25") == (Part("text_kv", ordinary=True, gain=0.25),)
    with pytest.raises(SystemExit, match="its own keep and ordinary bases"):
        parse("text_kv,ordinary,vocab=4")
    assert parse("text_kv,ordinary,rank=2") == (Part("text_kv", ordinary=True, rank=2),)
    with pytest.raises(SystemExit, match="rank=M gives several"):
        parse("text_kv,ordinary,rank=2,gain=0.1")


def test_a_subspace_on_the_pack_s_bases_stays_off_both_at_the_ordinary_strength():
    """ordinary,rank=M: M orthonormal rows per layer, each off the keep prompts' and the ordinary text's bases (each
    at its own rank) and at the strength the ordinary text gives."""
    model = random_wan(0)
    stats = extract(model, KEEP, ORDINARY)
    for layer, out in zip(stats.layers, kept_subspace(stats, 2, 0, both_bases=True).layers):
        Q = out.basis.double()
        assert Q.shape[0] == 2 and torch.allclose(Q @ Q.T, torch.eye(2, dtype=torch.float64), atol=1e-5)
        assert out.strengths == (defaults.ORDINARY_STRENGTH,) * 2
        for rows, rank in ((layer.keep, defaults.KEEP_RANK), (layer.ordinary, defaults.ORDINARY_RANK)):
            assert float((Q @ keep_basis(rows, rank)).abs().max()) < 1e-5


def test_a_gained_direction_on_the_pack_s_bases_stays_off_both_and_keeps_its_strength():
    """ordinary,gain=B: M^B d is taken off the keep prompts' and the ordinary text's bases again (each at its own
    rank), and the edit keeps the strength the ordinary text gives it."""
    model = random_wan(0)
    stats = extract(model, KEEP, ORDINARY)
    edit = factorize(stats, keep_rank=8, ordinary_rank=8)
    out = gained(edit, stats, model.state_dict(), 0, 0.25, both_bases=True)
    for layer, before, after in zip(stats.layers, edit.layers, out.layers):
        d = after.basis[0].double()
        assert abs(float(d.norm()) - 1) < 1e-6 and after.strengths == before.strengths != (1.0,)
        for rows in (layer.keep, layer.ordinary):
            assert float((keep_basis(rows, 8).T @ d).abs().max()) < 1e-5
        assert float((d @ before.basis[0].double()).abs()) < 1 - 1e-6  # the gain moved it


def test_the_output_side_edit_leaves_no_input_that_gives_its_direction_back():
    """W' = (I - u u^T) W: u^T W' x = 0 for every x (an attacker's input too), u kept off the keep rows' outputs, and
    at strength lam the layer keeps 1 - lam of it."""
    model = random_wan(0)
    stats = extract(model, KEEP + ORDINARY)
    state = model.state_dict()
    edit = output_edit(stats, state, vocab=2)
    for layer in stats.layers:
        for name in layer.edit_keys:
            u, W = edit.directions[name], state[f"{name}.weight"].double()
            assert abs(float(u.norm()) - 1) < 1e-9 and u.shape == (W.shape[0],)
            assert float((keep_basis(mapped(layer.keep, W), 2).T @ u).abs().max()) < 1e-6
            for lam in (1.0, 0.5):
                Wp = edit.edited_state_dict(state, lam)[f"{name}.weight"].double()
                assert torch.allclose(u @ Wp, (1 - lam) * (u @ W), atol=1e-4 * float(W.abs().max()))
            x = torch.randn(W.shape[1], dtype=torch.float64)
            assert torch.allclose(Wp @ x, W @ x - 0.5 * u * (u @ W @ x), atol=1e-4)  # the rest of the output stays


def test_a_vocabulary_larger_than_its_word_lists_allow_is_refused_not_drawn_forever():

    assert generic_vocabulary(300, 31) == list(GENERIC)
    with pytest.raises(SystemExit, match="holds 1 to 20000 phrases"):
        generic_vocabulary(20001)


def test_the_gained_direction_leaves_the_concepts_output_farthest_from_reach():
    """Removed at strength 1, d' ~ M d (M = A^T A, A the layer's edited weights stacked) leaves A d farther from every
    output A y an input y can still give than any other direction does, the pack's d included."""
    model = random_wan(0)
    stats = extract(model)
    state = model.state_dict()
    edit = factorize(stats, ordinary_rank=0)
    g = torch.Generator().manual_seed(0)

    def gap(x: torch.Tensor, d: torch.Tensor, A: torch.Tensor) -> float:
        """|A d - A y| for the best y the edit W (I - x x^T) still lets through."""
        AP = A - torch.outer(A @ x, x)
        y = torch.linalg.lstsq(AP, A @ d).solution
        return float((AP @ y - A @ d).norm())

    for layer, out in zip(edit.layers, gained(edit, stats, state, 0).layers):
        A = torch.cat([state[f"{key}.weight"].double() for key in layer.edit_keys])
        d, best = layer.basis[0].double(), out.basis[0].double()
        best = best / best.norm()
        reach = gap(best, d, A)
        assert reach > gap(d, d, A)
        for _ in range(20):
            x = torch.randn(d.shape[0], generator=g, dtype=torch.float64)
            assert reach >= gap(x / x.norm(), d, A) * (1 - 1e-5)
