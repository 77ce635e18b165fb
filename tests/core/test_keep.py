"""Keep prompts (keep.py): look-alikes whose activations the edit must leave where they are."""

import pytest
import torch

from refusal_core.edit import RefusalEdit, load_refusal_file
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.file_format import save_refusal_edit
from refusal_core.prompts import validate_pairs
from refusal_core.solvers.keep import keep_basis
from refusal_core.stats import Moments
from refusal_core.types import LayerStats, PromptPair, PromptPairs, RefusalError, RefusalStats
from refusal_core.weights import edited_state_dict
from tests.core.toy_wan import NEUTRAL, PAIRS, Counter, encode, random_wan

WAN = FAMILIES["wan"].sites
KEEP = ["a man walks", "green trees sway"]  # 6 tokens: within the keep rank, so every keep row is held exactly
LATENT = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def extract(model, keep=(), pairs=PAIRS, site="text_kv", blocks=(0, 1, 2)):
    prompts = PromptPairs.from_texts([PromptPair(u, s) for u, s in pairs], NEUTRAL, encode, keep)
    return extract_refusal_stats(
        model, Counter(model), prompts, LATENT, ExtractSettings(WAN[site], list(blocks), [0.9, 0.6], "wan")
    )


def test_keep_prompts_add_their_rows_and_change_nothing_else_of_the_statistics():
    model = random_wan(0)
    plain, kept = extract(model), extract(model, KEEP)
    for a, b in zip(plain.layers, kept.layers):
        assert torch.equal(a.r, b.r) and torch.equal(a.diffs, b.diffs) and torch.equal(a.neutral, b.neutral)
        assert a.keep is None and b.keep.shape == (6, a.dim)  # 3 + 3 tokens; text_kv is read at one sigma
    assert kept.meta["n_keep"] == "2" and "n_keep" not in plain.meta
    assert kept.meta["pairs_sha256"] != plain.meta["pairs_sha256"]


@pytest.mark.parametrize("site", ["text_kv", "cross_out"])
def test_the_edit_leaves_the_keep_prompts_activations_where_they_were(site):
    model = random_wan(0)
    stats = extract(model, KEEP, site=site)
    edit, plain = factorize(stats), factorize(stats, keep_rank=0)
    sd = model.state_dict()
    edited = edited_state_dict(sd, edit, 1.0)
    for layer, le, pe in zip(stats.layers, edit.layers, plain.layers):
        U = keep_basis(layer.keep, 8)
        assert float((U.T @ le.basis[0].double()).abs().max()) < 1e-6
        assert float(le.basis[0].double() @ pe.basis[0].double()) < 1 - 1e-6  # the keep list did change d
        assert torch.equal(pe.basis, factorize(extract(model, site=site)).layers[stats.layers.index(layer)].basis)
        if site == "text_kv":  # at most 8 distinct rows: all of them in span(U), so none of them moves
            for key in layer.edit_keys:
                W, W2 = sd[f"{key}.weight"].double(), edited[f"{key}.weight"].double()
                x = layer.keep.double()
                assert float((x @ W2.T - x @ W.T).abs().max()) < 1e-5 * float((x @ W.T).abs().max())
    assert "kept off" in edit.meta["factorization"] and edit.meta["keep_rank"] == "8"


def test_concepts_combined_leave_the_keep_rows_alone_as_each_does():
    model = random_wan(0)
    other = [("a nude dog runs", "a dog runs"), ("nude birds fly", "birds fly")]
    edits = [factorize(extract(model, KEEP)), factorize(extract(model, KEEP, pairs=other))]
    keep_rows = extract(model, KEEP).layers[0].keep.double()
    joined = RefusalEdit.combine([(e, 1.0) for e in edits])
    Q = joined.layers[0].basis.double()
    assert Q.shape[0] == 2 and float((keep_rows @ Q.T).abs().max()) < 1e-5 * float(keep_rows.abs().max())


def test_keep_rows_are_saved_and_loaded_with_the_statistics(tmp_path):
    stats = extract(random_wan(0), KEEP)
    path = save_refusal_edit(factorize(stats), tmp_path / "kept.safetensors", include_statistics=True)
    edit, back = load_refusal_file(path)
    assert all(torch.equal(a.keep, b.keep) for a, b in zip(stats.layers, back.layers))
    assert all(torch.equal(a.basis, b.basis) for a, b in zip(factorize(back).layers, edit.layers))


def test_keep_rows_as_moments_keep_the_same_directions_as_the_rows():
    X = torch.randn(40, 12, generator=torch.Generator().manual_seed(0)) * torch.linspace(3, 0.1, 12)
    U_rows, U_mom = keep_basis(X, 5), keep_basis(Moments.of(X), 5)
    assert U_rows.shape == U_mom.shape == (12, 5)
    assert torch.allclose(U_rows @ U_rows.T, U_mom @ U_mom.T, atol=1e-8)


def test_a_concept_inside_the_keep_list_is_refused_not_silently_kept():
    g = torch.Generator().manual_seed(0)
    D, E = torch.randn(5, 4, generator=g), torch.randn(6, 4, generator=g)
    layer = LayerStats(
        "blocks.0.cross_attn.k", ("blocks.0.cross_attn.k",), D, E, D.mean(0), keep=torch.randn(10, 4, generator=g)
    )
    with pytest.raises(RefusalError, match="inside what the keep prompts hold"):
        factorize(RefusalStats((layer,), {"family": "wan"}))  # 4 keep directions span all of R^4
    with pytest.raises(RefusalError, match="keep prompt 'a nude man walks' is also an unsafe prompt"):
        validate_pairs([PromptPair(u, s) for u, s in PAIRS], NEUTRAL, ["a nude man walks"])
