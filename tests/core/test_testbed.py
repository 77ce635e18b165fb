"""The testbed's worlds: their ground truth reads back exactly, look-alikes share a part of their concept's rendering,
no text an edit is built from and no dev prompt holds a test phrasing, training is deterministic, cached and keyed
without floats, and the shipped models are the ones the code trains."""

from __future__ import annotations

import random

import pytest
import torch

from refusal_core.presets import held_out, load_preset, preset_keep, preset_names
from refusal_core.types import RefusalError
from testbed import characters, evaluate, guided, protocol, scoring, train
from testbed.evaluate import Groups, Sizes, split_of
from testbed.worlds import FIRST, HARD, WORLDS


def _single_mark_prompts(world, n: int, seed: int):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = world.sample_prompt(rng)
        if len(p.marks) == 1 and world.parts_of(p.marks[0]):
            out.append(p)
    return out


@pytest.mark.parametrize("world", list(WORLDS.values()), ids=list(WORLDS))
def test_a_clean_latent_reads_back_its_subject_scene_and_marks_in_the_right_frames(world):
    prompts = _single_mark_prompts(world, 300, 1)
    X = torch.stack([world.clean_latent(p) for p in prompts])
    base, rest = scoring.read_base(world, X)
    for i, p in enumerate(prompts):
        assert (
            float(base[f"subject:{p.subject}"][i]) > 0.7 and float(base[f"scene:{p.scene}"][i]) > 0.7
        )  # a mark leaks a little into the base fit
    for mark in world.marks:
        if not world.parts_of(mark):
            continue
        s = scoring.mark_scores(world, X, prompts, mark, rest=rest)
        frames = world.frames_of(mark)
        for i, p in enumerate(prompts):
            if mark in p.marks:
                assert float(s[i, list(frames)].min()) > 0.8, (p.text, mark)
                assert all(
                    float(s[i, t]) < scoring.RENDER_THRESHOLD for t in range(world.latent_shape[1]) if t not in frames
                ), (p.text, mark)
            else:
                assert float(s[i].max()) < scoring.RENDER_THRESHOLD, (p.text, mark)
    concept = world.concepts["nudity"]
    assert scoring.render_rate(world, X, prompts, concept) == pytest.approx(
        sum("nudity" in p.marks for p in prompts) / len(prompts)
    )


def test_a_look_alike_paints_a_part_of_its_concept_and_loses_it_with_that_part():
    """A swimsuit paints the skin that nudity paints, in the same place: removing the shared part from a swimsuit's
    latent removes the swimsuit, removing nudity's own part keeps it."""
    for concept in HARD.concepts:
        for look in HARD.near(concept, "lookalike"):
            (shared,) = set(HARD.parts_of(look)) & set(HARD.parts_of(HARD.concepts[concept][0]))
            p = HARD.mark_prompts(look, list(HARD.marks[look].phrasings), 1, "t")[0][0]
            x = HARD.clean_latent(p)[None]
            assert scoring.rendered(HARD, x, [p], (look,)).all()
            without = x.clone()
            y, xx = HARD.cells[HARD.cells_of(look, p.scene)[HARD.parts_of(look).index(shared)]]
            h, w = HARD.cell
            for t in HARD.frames_of(look):
                without[0, :, t, y : y + h, xx : xx + w] -= HARD.rendering(shared, p.subject, p.variant, t)
            assert not scoring.rendered(HARD, without, [p], (look,)).any(), look
    for concept in HARD.concepts:  # a word-sense shares nothing of the rendering, only the word
        for sense in HARD.near(concept, "wordsense"):
            assert not set(HARD.parts_of(sense)) & set(HARD.parts_of(HARD.concepts[concept][0]))
            assert any(
                any(scoring.contains(p, w) for w in ("nude", "naked", "blood", "bloody", "mouse"))
                for p in HARD.marks[sense].phrasings
            )


def test_a_mark_is_rendered_differently_for_every_subject_variant_and_frame():
    cos = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()))  # noqa: E731
    r = HARD.rendering("nudity", "woman", 0, 1)
    assert cos(r, HARD.rendering("nudity", "man", 0, 1)) < 0.95
    assert cos(r, HARD.rendering("nudity", "woman", 1, 1)) < 0.5
    assert cos(r, HARD.rendering("nudity", "woman", 0, 2)) < 0.95
    assert HARD.marks["violence"].frames == (1, 2)  # some concepts appear only in the later frames


def _every_extraction_and_preset_text() -> list[str]:
    """Built from the pack's preset API, not from the testbed's own list: every preset's pairs (with every character's
    name where it takes one), neutral, keep and held-out prompts; the characters run's pairs (twins too); the word edits'."""
    names = [HARD.marks[m].phrasings[0] for m in HARD.of_group("character")]
    texts = []
    for preset in preset_names():
        for name in names:  # a preset without a name leaves the name unused
            pairs, neutral = load_preset(preset, name)
            texts += [t for p in pairs for t in (p.unsafe, p.safe)] + neutral + preset_keep(preset)
        try:
            ho_pairs, ho_neutral = held_out(preset)
        except RefusalError:  # most presets hold no held-out set
            continue
        texts += [t for p in ho_pairs for t in (p.unsafe, p.safe)] + ho_neutral
    texts += [
        t
        for m in characters.EIGHT
        for twin in (False, True)
        for p in characters.pairs_of(m, twin)[0]
        for t in (p.unsafe, p.safe)
    ]
    texts += [t for pairs in evaluate.WORD_PAIRS.values() for p in pairs for t in p]
    return texts


def _dev_prompts() -> list[str]:
    out = []
    for sizes in (Sizes(), protocol.DEV_SIZES):
        out += [p.text for p in Groups.build(HARD, "dev", sizes).flat]
        for concept in HARD.concepts:
            out += [t.text for pair in evaluate.concept_pairs(HARD, concept, "dev", sizes.unsafe) for t in pair]
    return out + [p.text for ps in characters.eval_prompts("dev").values() for p in ps]


def test_no_extraction_preset_keep_neutral_or_dev_text_contains_a_test_phrasing():
    """The split as scored: every phrasing of the test split (unsafe, look-alike, word-sense, character) occurs in no
    text an edit is built from and in no dev prompt; the test prompts scored carry only test phrasings."""
    sp = split_of(HARD)
    test = {(m, p) for m, s in sp.items() for p in s["test"]}
    assert all(sp[m]["test"] for m in HARD.marks if HARD.marks[m].group != "filler")
    for text in _every_extraction_and_preset_text() + _dev_prompts():
        hit = [p for _, p in test if scoring.contains(text, p)]
        assert not hit, (text, hit)
    for name, prompts in Groups.build(HARD, "test", Sizes()).prompts.items():
        if name == "clean":
            continue
        kind, key = name.split(":")
        marks = HARD.concepts[key] if kind == "unsafe" else (key,)
        for p in prompts:
            assert any(scoring.contains(p.text, ph) for m in marks for ph in sp[m]["test"]), (name, p.text)


def test_the_keep_prompts_look_alikes_are_never_scored():
    """The character preset's keep prompts name a cartoon mouse, duck and rabbit: those phrasings are in no split."""
    sp = split_of(HARD)
    for keep in preset_keep("copyrighted_character"):
        for mark in HARD.of_group("lookalike"):
            assert not any(scoring.contains(keep, p) for s in sp[mark].values() for p in s), (keep, mark)


def test_guidance_one_is_the_conditional_flow_and_the_schedule_is_shifted():
    torch.manual_seed(0)
    model = train.TrainConfig(dim=32, heads=1, layers=1).model().eval()
    ctx, neg, noise = torch.randn(2, 5, 4096), torch.randn(1, 5, 4096), torch.randn(2, *HARD.latent_shape)
    s = guided.shifted_sigmas(4, 5.0)
    assert float(s[0]) == 1.0 and float(s[-1]) == 0.0 and bool((s[1:] < s[:-1]).all()) and float(s[2]) > 0.5
    plain = noise.clone()
    with torch.no_grad():
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            plain = plain + (b - a) * model(plain, torch.full((2,), a * 1000.0), ctx)
    assert torch.allclose(guided.generate(model, ctx, neg, noise, steps=4, guidance=1.0), plain, atol=1e-5)
    assert torch.allclose(guided.generate(model, ctx, neg, noise, steps=4, guidance=1.0 + 1e-9), plain, atol=1e-4)


def test_sampling_with_the_text_computed_once_is_bit_for_bit_recomputing_it_every_step():
    """generate() computes the text embedding and each block's cross-attention keys and values once per batch; the
    samples must be those of the plain per-step loop."""
    torch.manual_seed(0)
    model = train.TrainConfig(dim=32, heads=1, layers=2).model().eval()
    modules = [model.text_embedding] + [m for b in model.blocks for m in (b.cross_attn.k, b.cross_attn.v)]
    ctx, neg, noise = torch.randn(3, 5, 4096), torch.randn(1, 5, 4096), torch.randn(3, *HARD.latent_shape)
    s = guided.shifted_sigmas(4)
    plain = noise.clone()
    with torch.no_grad():
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            plain = plain + (b - a) * guided.guided_velocity(model, plain, a, ctx, neg.expand(3, -1, -1))
    assert torch.equal(guided.generate(model, ctx, neg, noise, steps=4), plain)
    assert [model.text_embedding] + [m for b in model.blocks for m in (b.cross_attn.k, b.cross_attn.v)] == modules


def test_intervals_are_taken_over_training_seeds_not_runs():
    ci = evaluate.interval([0.0, 0.5, 1.0])
    assert ci["mean"] == pytest.approx(0.5) and ci["hi"] - ci["mean"] == pytest.approx(4.303 * 0.5 / 3**0.5, rel=1e-4)
    assert evaluate.interval([0.2])["lo"] == 0.2
    # two models, two noise seeds each: the noise seeds of one model are one value, so n = 2, not 4
    runs = [{"train_seed": s, "x": x} for s, xs in ((0, (0.1, 0.3)), (1, (0.5, 0.7))) for x in xs]
    got = evaluate.interval_over_models(runs, "x")
    assert got["n"] == 2 and got["runs"] == 4 and got["mean"] == pytest.approx(0.4)
    assert got["hi"] - got["mean"] == pytest.approx(12.706 * 0.2, rel=1e-4)  # sd of (0.2, 0.6) over sqrt(2)


def test_training_is_deterministic_cached_and_keyed_by_what_shapes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSAL_TESTBED_CACHE", str(tmp_path))
    cfg = train.TrainConfig(world="hard", dim=32, heads=1, layers=1, prompts=24, steps=3, batch=4)
    a, b = train.train(cfg, log=lambda s: None), train.train(cfg, log=lambda s: None)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "blocks.0.cross_attn.k.weight" in a and a["text_embedding.0.weight"].shape == (32, 4096)
    model = train.load_or_train(cfg, log=lambda s: None)
    assert train.checkpoint_path(cfg).exists()
    assert cfg.key() != train.TrainConfig(world="hard", dim=32, heads=1, layers=1, prompts=24, steps=4, batch=4).key()
    assert train.config("hard", 1).key() != train.config("hard", 0).key()
    # Keys hash the training loop's source: none may be computed (and cached) while it is replaced below
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("a cached checkpoint must not be trained again"))
    again = train.load_or_train(cfg, log=lambda s: None)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("name", list(WORLDS))
def test_the_shipped_model_is_the_one_the_code_trains(name):
    """testbed/data/ holds training seed 0 of each world; a change to what builds its training data, the model, the text
    or the training loop makes it stale: then `python -m testbed.train --world NAME --ship` trains and ships it again.
    The key hashes sources and prompt texts, never floats, so every machine computes the same key."""
    cfg = train.config(name)
    assert train.checkpoint_path(cfg) == train.SHIPPED[name], (
        f"stale: run python -m testbed.train --world {name} --ship"
    )
    assert train.sha256(train.SHIPPED[name]) == train.SHIPPED_SHA256[name]
    assert train.SHIPPED[name].stat().st_size < 30e6
    assert cfg.heads == max(1, cfg.dim // 128)  # ComfyUI reads a Wan checkpoint's head count as dim // 128
    assert FIRST.guidance == 1 and HARD.guidance > 1 and cfg.dropout == (0.0 if name == "first" else 0.1)
