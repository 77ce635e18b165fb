"""The ordinary text (ordinary.py): phrases that name no concept, whose leading directions each edit is taken off,
each set of rows (keep prompts, ordinary text) with its own rank."""

import json
import re

import pytest
import torch

from refusal_core import defaults
from refusal_core.edit import load_refusal_file
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.file_format import save_refusal_edit
from refusal_core.forwards import schedule
from refusal_core.ordinary import ordinary_text
from refusal_core.presets import PRESET_DIR
from refusal_core.solvers.keep import joint_basis, keep_basis
from refusal_core.stats import Moments
from refusal_core.types import PromptPair, PromptPairs, RefusalError
from refusal_core.weights import edited_state_dict
from testbed.worlds import WORLDS
from tests.core.toy_wan import NEUTRAL, PAIRS, Counter, encode, random_wan

WAN = FAMILIES["wan"].sites
KEEP = ["a man walks"]
ORDINARY = ["a red fox runs", "a blue lake", "green trees sway", "a man sits"]
LATENT = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
SMALL = {"a", "an", "the", "in", "on", "at", "of", "with", "to", "and", "by", "from"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z'-]+", text.lower()))


def extract(model, keep=(), ordinary=(), site="text_kv", sigmas=(0.9, 0.6)):
    prompts = PromptPairs.from_texts([PromptPair(u, s) for u, s in PAIRS], NEUTRAL, encode, keep, ordinary)
    return extract_refusal_stats(
        model, Counter(model), prompts, LATENT, ExtractSettings(WAN[site], [0, 1, 2], sigmas, "wan")
    )


def assert_names_nothing(phrases: list[str]) -> None:
    """No phrasing of any testbed's concepts, look-alikes, word-senses or characters occurs in the phrases, no word of
    an unsafe concept's phrasings, and no word of any preset's unsafe sides that its safe sides lack."""
    text = " | ".join(phrases).lower()
    used = set().union(*map(words, phrases))
    for world in WORLDS.values():
        for mark in world.marks.values():
            for phrasing in mark.phrasings:
                assert phrasing.lower() not in text, (world.name, phrasing)
                if mark.group == "unsafe":
                    assert not (words(phrasing) - SMALL) & used, (world.name, phrasing)
    for path in PRESET_DIR.glob("*.json"):
        for unsafe, safe in json.loads(path.read_text())["pairs"]:
            assert not (words(unsafe) - words(safe) - SMALL - {"name"}) & used, (path.stem, unsafe)


def test_the_shipped_phrases_name_nothing_an_edit_erases_or_keeps():
    phrases = ordinary_text()
    assert len(set(phrases)) == len(phrases) == 64
    assert_names_nothing(phrases)


def test_the_ordinary_text_adds_its_rows_at_one_sigma_and_changes_nothing_else():
    model = random_wan(0)
    plain, both = extract(model, KEEP, site="cross_out"), extract(model, KEEP, ORDINARY, site="cross_out")
    for a, b in zip(plain.layers, both.layers):
        for field in ("r", "diffs", "neutral", "keep"):
            x, y = getattr(a, field), getattr(b, field)
            if isinstance(x, Moments):
                x, y = torch.cat([x.total, x.gram.flatten()]), torch.cat([y.total, y.gram.flatten()])
            assert torch.equal(x, y), field
        assert a.ordinary is None and b.ordinary is not None and b.ordinary.shape[1] == a.dim
    assert both.meta["n_ordinary"] == "4" and "n_ordinary" not in plain.meta
    assert plain.meta["pairs_sha256"] != both.meta["pairs_sha256"]
    prompts = PromptPairs.from_texts([PromptPair(u, s) for u, s in PAIRS], NEUTRAL, encode, KEEP, ORDINARY)
    jobs, units = schedule(prompts, [0.9, 0.6, 0.3])
    read = [jobs[u[1][0]][1] for u in units if u[0] == "ordinary"]
    assert read == [0.6] * len(ORDINARY)  # the middle sigma, once per phrase


@pytest.mark.parametrize("site", ["text_kv", "cross_out"])
def test_each_direction_is_kept_off_both_sets_each_at_its_own_rank(site):
    model = random_wan(0)
    stats = extract(model, KEEP, ORDINARY, site=site)
    edit, without = factorize(stats, ordinary_rank=2), factorize(stats, ordinary_rank=0)
    keep_only = factorize(extract(model, KEEP, site=site))
    for layer, e, w, k in zip(stats.layers, edit.layers, without.layers, keep_only.layers):
        d = e.basis[0].double()
        for U in (keep_basis(layer.keep, defaults.KEEP_RANK), keep_basis(layer.ordinary, 2)):
            assert float((U.T @ d).abs().max()) < 1e-6
        assert torch.equal(w.basis, k.basis)  # rank 0: the edit of statistics without the ordinary text
        assert float((d @ w.basis[0].double()).abs()) < 1 - 1e-6  # the ordinary text did move d
    assert edit.meta["ordinary_rank"] == "2" and "ordinary-text directions" in edit.meta["factorization"]


def test_a_basis_joined_with_one_inside_it_adds_nothing():
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64))[0]
    assert joint_basis(U, U[:, :2]).shape == (10, 3)
    J = joint_basis(U, V)
    assert J.shape == (10, 5) and torch.allclose(J.T @ J, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(J @ (J.T @ V), V, atol=1e-12)


def test_ordinary_rows_are_saved_and_loaded_with_the_statistics(tmp_path):
    stats = extract(random_wan(0), KEEP, ORDINARY)
    path = save_refusal_edit(factorize(stats), tmp_path / "ordinary.safetensors", include_statistics=True)
    edit, back = load_refusal_file(path)
    assert all(torch.equal(a.ordinary, b.ordinary) for a, b in zip(stats.layers, back.layers))
    assert all(torch.equal(a.basis, b.basis) for a, b in zip(factorize(back).layers, edit.layers))


def test_an_edit_kept_off_the_ordinary_text_carries_its_strength_and_applies_it():
    model = random_wan(0)
    stats = extract(model, ordinary=ORDINARY)
    edit = factorize(stats, ordinary_rank=2)
    assert all(layer.strengths == (defaults.ORDINARY_STRENGTH,) for layer in edit.layers)
    assert edit.meta["ordinary_strength"] == f"{defaults.ORDINARY_STRENGTH:g}"
    assert all(layer.strengths == (1.0,) for layer in factorize(stats, ordinary_rank=0).layers)  # the paper's
    sd = model.state_dict()
    layer = edit.layers[0]
    key = layer.edit_keys[0]
    d = layer.basis[0].double()
    W = sd[f"{key}.weight"].double()
    expected = W - defaults.ORDINARY_STRENGTH * torch.outer(W @ d, d)  # W (I - lambda d d^T), Apply at 1
    assert torch.allclose(edited_state_dict(sd, edit, 1.0)[f"{key}.weight"].double(), expected, atol=1e-5)
    with pytest.raises(RefusalError, match="strength must be above 0"):
        factorize(stats, ordinary_strength=0.0)
