"""A map edit (P != Q, many directions per layer; here the closed-form map, which the nodes do not offer yet) in a
real ComfyUI, on the hard world's shipped model: the extraction node keeps the same aligned token rows as
pure torch, ApplyRefusalToModel applies the map exactly, its LoRA through the stock LoraLoaderModelOnly equals
it, and the base stays as loaded."""

from __future__ import annotations

import pytest
import torch

from tests.host import comfy_host, tiny_models

pytestmark = pytest.mark.host


def delta(edit, key):
    P, s, Q = edit.maps()[key]
    return P.double().T @ torch.diag(s.double()) @ Q.double()


def test_a_map_edit_through_the_nodes_equals_pure_torch_and_exports_exactly(nodes, loras, caplog):
    from safetensors.torch import load_file

    from refusal_core.factorize import factorize
    from testbed import evaluate, train
    from testbed.evaluate import CHARACTER_NAME
    from testbed.worlds import HARD
    from tests.host.minilm_clip import MiniLMClip

    model = tiny_models.load(train.SHIPPED["hard"])
    weights = load_file(str(train.SHIPPED["hard"]))
    clip = MiniLMClip(seed=0, pad_to=HARD.text_pad)
    _, frames, h, w = HARD.latent_shape
    pp = nodes["PromptPairLoader"].execute(clip, "", "", "(none)", "copyrighted_character", CHARACTER_NAME).result[0]
    stats = (
        nodes["ExtractRefusalVector"]
        .execute(model, pp, "text_kv", "all", "0.9", 8 * w, 8 * h, 4 * frames - 3, 0)
        .result[0]
    )
    theirs = factorize(stats, method="closed_form", preserve=3.0)
    assert "closed-form map" in theirs.meta["factorization"] and int(theirs.meta["rank"]) > 1

    ours = factorize(
        evaluate.Bed(HARD, 0).extract("character", "text_kv", (0.9,), 0), method="closed_form", preserve=3.0
    )
    assert theirs.meta["rank"] == ours.meta["rank"]
    for key in ours.maps():
        a, b = delta(theirs, key), delta(ours, key)
        assert float((a - b).norm() / b.norm()) < 1e-3, key

    comfy_host.check_applied_and_exported(
        nodes, model, weights, theirs, loras, caplog, "refusal/mickey", "Mickey Mouse"
    )
