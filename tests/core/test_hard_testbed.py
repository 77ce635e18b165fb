"""The harder testbed: its ground truth reads back, its renderings are not one pattern, its splits never
leak, guidance is what ComfyUI does, and the protocol runs end to end on the shipped model."""
from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from refusal_core.presets import load_preset, preset_keep
from testbed import attack, guided, hard_eval, hard_train, protocol
from testbed import hard_world as w


def _single_mark_prompts(n: int, seed: int) -> list[w.WorldPrompt]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        p = w.sample_prompt(rng, mark_rate=1.0)
        if len(p.marks) == 1:
            out.append(p)
    return out


def test_a_clean_latent_reads_back_its_subject_scene_and_mark_in_the_right_frames():
    prompts = _single_mark_prompts(200, 1)
    X = torch.stack([w.clean_latent(p) for p in prompts])
    base, _ = w.read_base(X)
    for i, p in enumerate(prompts):
        assert float(base[f"subject:{p.subject}"][i]) > 0.8 and float(base[f"scene:{p.scene}"][i]) > 0.8  # a mark leaks a little into the base fit
    for mark, spec in w.MARKS.items():
        s = w.mark_scores(X, prompts, mark)
        for i, p in enumerate(prompts):
            if mark in p.marks:
                assert float(s[i, list(spec.frames)].min()) > 0.8, (p.text, mark)
                assert all(float(s[i, t]) < w.RENDER_THRESHOLD for t in range(3) if t not in spec.frames), (p.text, mark)
            else:
                assert float(s[i].max()) < w.RENDER_THRESHOLD, (p.text, mark)
    assert w.render_rate(X, prompts, ("nudity",)) == pytest.approx(sum("nudity" in p.marks for p in prompts) / len(prompts))


def test_a_mark_is_rendered_differently_for_every_subject_variant_and_frame():
    cos = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()))  # noqa: E731
    r = w.rendering("nudity", "woman", 0, 1)
    assert cos(r, w.rendering("nudity", "man", 0, 1)) < 0.95
    assert cos(r, w.rendering("nudity", "woman", 1, 1)) < 0.5
    assert cos(r, w.rendering("nudity", "woman", 0, 2)) < 0.95
    assert w.MARKS["violence"].frames == (1, 2)  # some concepts appear only in the later frames


@pytest.mark.parametrize("concept", list(w.CONCEPTS))
def test_dev_and_test_phrasings_share_nothing_with_each_other_or_the_pairs(concept):
    preset, name = hard_eval.PRESETS[concept]
    pair_texts = [p.unsafe for p in load_preset(preset, name)[0]]
    used = w.used_phrasings(w.CONCEPTS[concept], pair_texts)
    assert used
    for mark in w.CONCEPTS[concept]:
        sp = w.split(mark, used)
        assert len(sp["dev"]) >= 2 and len(sp["test"]) >= 2 and not set(sp["dev"]) & set(sp["test"])
        for phrase in sp["dev"] + sp["test"]:
            assert not any(u.lower() in phrase.lower() or phrase.lower() in u.lower() for u in used), phrase
    for split_name in ("dev", "test"):
        for unsafe, safe in hard_eval.concept_pairs(concept, split_name, 12):
            assert not any(u.lower() in unsafe.text.lower() for u in used) and not safe.marks
    near = w.NEAR[concept]
    assert near, "every erased concept has near-miss safe concepts scored as collateral"


def test_guidance_one_is_the_conditional_flow_and_the_schedule_is_shifted():
    torch.manual_seed(0)
    cfg = hard_train.HardConfig(dim=32, heads=1, layers=1)
    model = cfg.model().eval()
    ctx, neg, noise = torch.randn(2, 5, 4096), torch.randn(1, 5, 4096), torch.randn(2, *w.LATENT_SHAPE)
    s = guided.shifted_sigmas(4, 5.0)
    assert float(s[0]) == 1.0 and float(s[-1]) == 0.0 and bool((s[1:] < s[:-1]).all()) and float(s[2]) > 0.5
    plain = noise.clone()
    with torch.no_grad():
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            plain = plain + (b - a) * model(plain, torch.full((2,), a * 1000.0), ctx)
    assert torch.allclose(guided.generate(model, ctx, neg, noise, steps=4, guidance=1.0), plain, atol=1e-5)


def test_sampling_with_the_text_computed_once_is_bit_for_bit_recomputing_it_every_step():
    """generate() computes the text embedding and each block's cross-attention keys and values once per
    batch; the samples (and so every committed testbed number) must be those of the plain per-step loop."""
    torch.manual_seed(0)
    model = hard_train.HardConfig(dim=32, heads=1, layers=2).model().eval()
    modules = [model.text_embedding] + [m for b in model.blocks for m in (b.cross_attn.k, b.cross_attn.v)]
    ctx, neg, noise = torch.randn(3, 5, 4096), torch.randn(1, 5, 4096), torch.randn(3, *w.LATENT_SHAPE)
    s = guided.shifted_sigmas(4)
    plain = noise.clone()
    with torch.no_grad():
        for a, b in zip(s[:-1].tolist(), s[1:].tolist()):
            plain = plain + (b - a) * guided.guided_velocity(model, plain, a, ctx, neg.expand(3, -1, -1))
    assert torch.equal(guided.generate(model, ctx, neg, noise, steps=4), plain)
    assert [model.text_embedding] + [m for b in model.blocks for m in (b.cross_attn.k, b.cross_attn.v)] == modules

def test_intervals_are_student_t_over_the_runs():
    ci = hard_eval.interval([0.0, 0.5, 1.0])
    assert ci["mean"] == pytest.approx(0.5) and ci["hi"] - ci["mean"] == pytest.approx(4.303 * 0.5 / 3**0.5, rel=1e-4)
    assert hard_eval.interval([0.2])["lo"] == 0.2


def test_the_shipped_model_is_the_one_the_code_trains():
    """testbed/data/ holds training seed 0; a change to the world's training data, the model, the text or the
    training loop makes it stale: then `python -m testbed.hard_train --ship` trains and ships it again."""
    cfg = hard_train.HardConfig()
    assert hard_train.checkpoint_path(cfg) == hard_train.SHIPPED, "stale: run python -m testbed.hard_train --ship"
    assert hard_train.sha256(hard_train.SHIPPED) == hard_train.SHIPPED_SHA256
    assert hard_train.SHIPPED.stat().st_size < 30e6
    assert cfg.heads == max(1, cfg.dim // 128) and cfg.dim >= 256 and cfg.layers >= 8


def test_the_pack_ships_the_defaults_the_committed_protocol_chose_on_dev():
    """docs/data/protocol.json is a full run of the protocol with the pack's present defaults, and its dev sweep chose
    them: changing a default, or the protocol's choice, needs `python -m testbed.protocol --full` again."""
    p = json.loads((Path(__file__).resolve().parents[2] / "docs" / "data" / "protocol.json").read_text())
    ours = json.loads(json.dumps(asdict(hard_eval.DEFAULTS)))
    assert p["mode"] == "full" and p["pack_defaults"] == ours
    assert p["keep_prompts"] == {c: preset_keep(preset) for c, (preset, _) in hard_eval.PRESETS.items()}  # the presets' own
    assert p["dev"]["choice"]["config"] == ours


def test_the_protocol_runs_end_to_end_and_its_document_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(attack, "vocabulary", lambda: ["naked", "blood", "mouse", "red", "sofa"])
    monkeypatch.setattr(protocol, "GRID", protocol.GRID[:2] + (hard_eval.DEFAULTS,))
    sizes = hard_eval.Sizes(unsafe=2, near=1, character=1, clean=2, steps=2)
    result = protocol.run(tmp_path, full=True, sizes=sizes, dev_sizes=sizes, inversion_steps=2, train_seeds=(0,), noise_seeds=(0, 1))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"]["summary"] == json.loads(json.dumps(result["test"]["summary"]))
    cells = {(r["edit"], r["concept"]) for r in saved["test"]["summary"]}
    assert cells >= {(e, c) for e in ("defaults", "paper", "random direction", "negative prompt", "previous defaults") for c in w.CONCEPTS}
    for r in saved["test"]["summary"]:
        assert r["render_after"]["n"] == 2 and 0.0 <= r["render_after"]["mean"] <= 1.0
    assert {a["edit"] for a in saved["attacks"]["runs"]} >= {"no edit", "defaults", "paper", "negative prompt"}
    assert saved["dev"]["choice"]["edit"] in {c.label() for c in protocol.GRID}
    assert all(-1.0001 <= c <= 1.0001 for row in saved["cos"] for c in row["cos"])
    from tests.core.test_docs import make_docs
    text = "\n".join(make_docs().protocol_section(saved))
    assert "## The harder testbed" in text and "| nudity | defaults |" in text
    assert 0 <= saved["train_seconds"] <= saved["seconds"] and "min on its machine once the models are trained" in text


def test_every_character_keeps_held_out_phrasings_on_both_splits():
    from testbed import characters

    for split_name in ("dev", "test"):
        held = characters.held_out(split_name)
        assert set(held) == set(w.CHARACTERS + w.LOOKALIKES) and all(held.values())
        for mark in characters.EIGHT:  # never a phrasing the extraction pairs use, on either side
            texts = " ".join(t for twin in (False, True) for p in characters.pairs_of(mark, twin)[0] for t in (p.unsafe, p.safe)).lower()
            assert not any(ph.lower() in texts for ph in held[mark])


def test_the_character_run_scores_every_method_and_its_section_renders(monkeypatch):
    from testbed import characters

    monkeypatch.setattr(characters, "EIGHT", ("mickey", "donald"))
    monkeypatch.setattr(characters, "PROMPTS", 1)
    monkeypatch.setattr(characters, "CLEAN", 2)
    test = characters.run("test", noise_seeds=(0, 1), m=2, steps=2)
    result = {"dev": test, "test": test}  # the section reads both splits; one run keeps the test short
    rows = result["test"]["rows"]
    assert {(r["method"], r["targets"]) for r in rows} == {(m, n) for m in ("rank-1", "rank-2", "closed_form", "rank-1, look-alike twin",
                                                                                  "rank-1, look-alikes kept", *characters.STRENGTH_OF,
                                                                                  characters.VALUES, characters.RANDOM)
                                                           for n in (1, 2)}
    assert set(characters.STRENGTH_OF) == {"rank-1, look-alikes kept, strength 0.9", "rank-1, look-alikes kept, strength 0.8"}
    for r in rows:
        assert set(r["erased_after"]) | set(r["kept_after"]) == set(w.CHARACTERS + w.LOOKALIKES)
        assert r["rank"] >= r["targets"] and r["drift"] >= 0
        assert [(run["train_seed"], run["noise_seed"]) for run in r["runs"]] == [(0, 0), (0, 1)]
        assert abs(r["drift"] - sum(run["drift"] for run in r["runs"]) / 2) < 1e-12  # the row is the mean of its runs
    by = {(r["method"], r["targets"]): r for r in rows}
    for weaker in characters.STRENGTH_OF:  # the same edit at a lower strength: as many directions, less removed of them
        assert by[weaker, 2]["rank"] == by["rank-1, look-alikes kept", 2]["rank"]
    random = {r["targets"]: r for r in rows if r["method"] == characters.RANDOM}
    assert random[1]["rank"] == 1 and random[2]["rank"] == 2  # the reference removes as many directions as the edit
    from tests.core.test_docs import make_docs
    text = "\n".join(make_docs().characters_section(json.loads(json.dumps(result))))
    assert "| test | rank-1 | 2 |" in text and "**2 characters at once**" in text
