"""The concept testbed's ground truth: what a latent renders is read exactly, held-out prompts share
no phrasing with the pairs, training is deterministic and cached."""
from __future__ import annotations

import random

import pytest
import torch

from refusal_core.presets import load_preset
from testbed import render, train
from testbed.world import CONCEPTS, clean_latent, held_out_pairs, read_coefficients, sample_prompt, used_phrasings


def test_a_clean_latent_reads_back_as_exactly_its_parts():
    rng = random.Random(3)
    prompts = [sample_prompt(rng, concept_rate=1.0) for _ in range(20)]
    coef = read_coefficients(torch.stack([clean_latent(p) for p in prompts]))
    for i, p in enumerate(prompts):
        present = {f"subject:{p.subject}", f"scene:{p.scene}"} | {f"concept:{c}" for c in p.concepts}
        for name, values in coef.items():
            assert float(values[i]) == pytest.approx(1.0 if name in present else 0.0, abs=1e-5), (p.text, name)
    assert render.render_rate(coef, "nudity") == pytest.approx(sum("nudity" in p.concepts for p in prompts) / len(prompts))


@pytest.mark.parametrize("concept,preset,name", [("nudity", "nudity", ""), ("violence", "graphic_violence", ""),
                                                 ("character", "copyrighted_character", "Mickey Mouse")])
def test_held_out_prompts_use_no_phrasing_of_the_extraction_pairs(concept, preset, name):
    pairs, _ = load_preset(preset, name)
    held = held_out_pairs(concept, [p.unsafe for p in pairs], 24)
    used = used_phrasings(concept, [p.unsafe for p in pairs])
    assert used, "the presets use some of the world's phrasings"
    for unsafe, safe in held:
        assert concept in unsafe.concepts and not safe.concepts
        assert (unsafe.subject, unsafe.scene) == (safe.subject, safe.scene)
        assert not any(u.lower() in unsafe.text.lower() for u in used), unsafe.text
    assert len({u.text for u, _ in held}) > len(held) // 2
    assert len(CONCEPTS) >= 3


def test_training_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSAL_TESTBED_CACHE", str(tmp_path))
    cfg = train.TrainConfig(dim=32, heads=1, layers=1, prompts=24, steps=3, batch=4)
    a, b = train.train(cfg, log=lambda s: None), train.train(cfg, log=lambda s: None)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "blocks.0.cross_attn.k.weight" in a and a["text_embedding.0.weight"].shape == (32, 4096)

    model = train.load_or_train(cfg, log=lambda s: None)
    assert train.checkpoint_path(cfg).exists()
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("a cached checkpoint must not be trained again"))
    again = train.load_or_train(cfg, log=lambda s: None)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))
    assert train.checkpoint_path(train.TrainConfig(steps=4)) != train.checkpoint_path(train.TrainConfig(steps=5))


def test_the_testbed_model_is_the_one_comfyui_builds_from_its_weights():
    # ComfyUI's model detection reads a Wan checkpoint's head count as dim // 128 (comfy/model_detection.py)
    cfg = train.TrainConfig()
    assert cfg.heads == max(1, cfg.dim // 128)


def test_the_shipped_model_is_the_one_the_code_trains():
    """testbed/data/ holds the released model; a change to the world, the model, the text or the trainer
    makes it stale: then `python -m testbed.train --ship` trains and ships it again."""
    assert train.shipped_key() == train.TrainConfig().key(), "the shipped testbed model is stale: run python -m testbed.train --ship"
    assert train.checkpoint_path(train.TrainConfig()) == train.SHIPPED
    assert train.SHIPPED.stat().st_size < 30e6
