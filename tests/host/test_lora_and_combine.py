"""Sharing and stacking erasures in a real ComfyUI: the exported LoRA through the stock LoraLoaderModelOnly
equals ApplyRefusalToModel; combined concepts are all removed; vectors that do not fit are refused."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host
NUDITY = """a nude woman standing on a beach | a woman standing on a beach
a naked man walking in a park | a man walking in a park
nude people swimming in a lake | people swimming in a lake"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from safetensors.torch import load_file

    d = tmp_path_factory.mktemp("lora")
    out = {}
    for name, build, width, pooled in (
        ("wan", tiny_models.wan, 4096, None),
        ("hunyuan_video", tiny_models.hunyuan_video, 768, 768),
        ("wan_dim256", None, 4096, None),
    ):
        path = d / f"{name}.safetensors"
        tiny_models.testbed_wan(path, dim=256) if build is None else build(path)
        out[name] = (tiny_models.load(path), load_file(str(path)), width, pooled)
    return out


def vector(nodes, model, width, pooled, pairs=EXTRACTION_PAIRS):
    from tests.host.minilm_clip import MiniLMClip

    pp = nodes["PromptPairLoader"].execute(MiniLMClip(width=width, pooled_width=pooled), pairs, NEUTRAL).result[0]
    stats = nodes["ExtractRefusalVector"].execute(model, pp, "auto", "all", "0.9,0.5", 64, 64, 5, 0).result[0]
    return nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]


loaded, unloaded_equals = comfy_host.loaded_weights, comfy_host.base_untouched


@pytest.mark.parametrize("family", ["wan", "hunyuan_video"])
def test_exported_lora_through_the_stock_loader_equals_the_edit(nodes, models, loras, family, caplog):
    import nodes as comfy_nodes

    model, weights, width, pooled = models[family]
    edit = vector(nodes, model, width, pooled)
    edited = loaded(nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0])
    nodes["SaveRefusalAsLoRA"].execute(model, edit, 1.0, f"refusal/{family}", "graphic violence")
    files = sorted(p.relative_to(loras).as_posix() for p in loras.rglob("*.safetensors"))
    assert files == [f"refusal/{family}_00001.safetensors"]
    with caplog.at_level(logging.WARNING):
        via_lora = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, files[0], 1.0)[0]
        got = loaded(via_lora)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()], "ComfyUI left LoRA keys unmapped"
    for name in edit.bases():
        key = f"{name}.weight"
        scale = float(weights[key].abs().max())
        assert float((got[key] - edited[key]).abs().max()) <= 1e-3 * scale, name
        assert not torch.equal(got[key], weights[key])
    from safetensors import safe_open

    with safe_open(str(loras / files[0]), framework="pt") as f:
        meta = f.metadata()
    assert meta["refusal_vector.concept"] == "graphic violence" and meta["refusal_vector.family"] == family
    assert unloaded_equals(model, weights)


def test_combined_concepts_are_all_removed_and_strength_zero_restores(nodes, models):
    model, weights, width, pooled = models["wan"]
    violence, nudity = vector(nodes, model, width, pooled), vector(nodes, model, width, pooled, NUDITY)
    both = nodes["CombineRefusalVectors"].execute(violence, 1.0, nudity, 1.0).result[0]
    W_both = loaded(nodes["ApplyRefusalToModel"].execute(model, both, 1.0).result[0])
    for edit in (violence, nudity):  # both at the same strength: the span of both directions is scaled by 1 - s
        for name, (Q, s) in edit.bases().items():
            key = f"{name}.weight"
            assert comfy_host.reads_as_edited(W_both[key], weights[key], Q[0], float(s[0])), name
    only_violence = loaded(nodes["ApplyRefusalToModel"].execute(model, violence, 1.0).result[0])
    zero = loaded(
        nodes["ApplyRefusalToModel"]
        .execute(model, nodes["CombineRefusalVectors"].execute(violence, 1.0, nudity, 0.0).result[0], 1.0)
        .result[0]
    )
    assert all(torch.allclose(zero[k], only_violence[k], atol=1e-6) for k in weights)
    assert unloaded_equals(model, weights)


@pytest.mark.parametrize(
    "target,message", [("hunyuan_video", "made for a Wan 2.1 / 2.2 model"), ("wan_dim256", "128 wide")]
)
def test_a_vector_for_another_model_is_refused_and_nothing_changes(nodes, models, loras, target, message):
    from refusal_pack.refusal_core.types import RefusalError

    model, weights, width, pooled = models["wan"]
    edit = vector(nodes, model, width, pooled)
    other, other_weights, _, _ = models[target]
    for run in (
        lambda: nodes["ApplyRefusalToModel"].execute(other, edit, 1.0),
        lambda: nodes["SaveRefusalAsLoRA"].execute(other, edit, 1.0, "refusal/wrong"),
    ):
        with pytest.raises(RefusalError, match=message):
            run()
    assert not list(loras.rglob("*.safetensors")) and not list(loras.rglob(".tmp-*"))
    assert unloaded_equals(other, other_weights)
