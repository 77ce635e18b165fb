"""The hard world's shipped model inside a real ComfyUI: ComfyUI's loader builds a 2-head WanModel from
it, and the pack's nodes at their defaults find the same edit as the protocol's pure-torch extraction."""

from __future__ import annotations

import pytest

from tests.host import tiny_models

pytestmark = pytest.mark.host


def test_the_nodes_in_comfyui_find_the_protocols_edit_on_the_shipped_model(nodes):
    from refusal_core.factorize import factorize
    from testbed import evaluate, train
    from testbed.worlds import HARD
    from tests.host.minilm_clip import MiniLMClip

    model = tiny_models.load(train.SHIPPED["hard"])
    assert model.model.diffusion_model.num_heads == train.config("hard").heads
    clip = MiniLMClip(seed=0, pad_to=HARD.text_pad)
    _, frames, h, w = HARD.latent_shape
    pp = nodes["PromptPairLoader"].execute(clip, "", "", "(none)", "nudity", "").result[0]
    stats = (
        nodes["ExtractRefusalVector"]
        .execute(model, pp, "auto", "all", "0.9,0.6,0.3", 8 * w, 8 * h, 4 * frames - 3, 0)
        .result[0]
    )
    theirs = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]

    bed = evaluate.Bed(HARD, 0)
    ours = factorize(
        bed.extract("nudity", evaluate.DEFAULTS.site, evaluate.DEFAULTS.sigmas, 0), method="cpca", k=100, alpha=0.5
    )
    assert [layer.point for layer in theirs.layers] == [layer.point for layer in ours.layers]
    for a, b in zip(theirs.layers, ours.layers):
        assert abs(float(a.basis[0].double() @ b.basis[0].double())) > 0.999, a.point
