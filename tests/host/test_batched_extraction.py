"""ExtractRefusalVector with several prompts per forward (one apply_model call for a batch) gives the refusal
vector of one prompt per forward, on tiny random checkpoints loaded by ComfyUI's own loader: with padded text
(every prompt one shape, so batches run), unpadded text of other lengths (those batches fall back to one
forward per prompt) and, for HunyuanVideo, padded text with an attention mask (its model takes a mask for one
prompt only: the first batch fails and the extraction goes on one prompt per forward)."""

from __future__ import annotations

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host

# family: (builder, text width, pooled width, sites, probe length)
MODELS = {
    "wan": (tiny_models.testbed_wan, 4096, None, ["text_kv", "ffn_in"], 1),
    "hunyuan_video": (tiny_models.hunyuan_video, 768, 768, ["joint_in"], 5),
}
# text: "pad" (one shape), "unpadded" (lengths differ), "pad_mask" (one shape, with an attention mask HunyuanVideo reads)
CASES = [(f, s, t) for f, (_, _, _, sites, _) in MODELS.items() for s in sites for t in ("pad", "unpadded")] + [
    ("hunyuan_video", "joint_in", "pad_mask")
]


@pytest.fixture(scope="module")
def models(nodes, tmp_path_factory):
    d = tmp_path_factory.mktemp("batched")
    return {f: tiny_models.load(build(d / f"tiny_{f}.safetensors")) for f, (build, *_) in MODELS.items()}


@pytest.fixture(scope="module")
def host(nodes):
    return comfy_host.host()


def pairs_for(nodes, family, text):
    from tests.host.minilm_clip import MiniLMClip

    class Clip(MiniLMClip):
        """Without the attention mask unless asked: ComfyUI's HunyuanVideo encoder drops its all-ones mask."""

        def encode_from_tokens_scheduled(self, tokens, **kwargs):
            out = super().encode_from_tokens_scheduled(tokens, **kwargs)
            if family == "hunyuan_video" and text != "pad_mask":
                out[0][1].pop("attention_mask")
            return out

    _, width, pooled, _, _ = MODELS[family]
    clip = Clip(width=width, pooled_width=pooled, pad_to=None if text == "unpadded" else 32)
    return nodes["PromptPairLoader"].execute(clip, EXTRACTION_PAIRS, NEUTRAL).result[0]


def same_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> float:
    return min(float((a - b).abs().max()), float((a + b).abs().max()))


def extract(nodes, host, monkeypatch, model, pairs, site, length, batch):
    """The node's own run with `batch` prompts per forward; returns (vector, number of apply_model calls)."""
    monkeypatch.setattr(host.forward, "batch_size", lambda m, latent: batch)
    calls = []
    apply_model = model.model.apply_model

    def counted(x, *args, **kwargs):
        calls.append(x.shape[0])
        return apply_model(x, *args, **kwargs)

    model.model.apply_model = counted
    try:
        stats = nodes["ExtractRefusalVector"].execute(model, pairs, site, "all", "0.9,0.5", 64, 64, length, 0).result[0]
    finally:
        del model.model.apply_model
        monkeypatch.undo()
    return stats, calls


@pytest.mark.parametrize("family,site,text", CASES, ids=[f"{f}-{s}-{t}" for f, s, t in CASES])
def test_batched_extraction_equals_one_prompt_per_forward(nodes, host, models, monkeypatch, family, site, text):
    model = models[family]
    pairs = pairs_for(nodes, family, text)
    length = MODELS[family][4]
    one, calls_one = extract(nodes, host, monkeypatch, model, pairs, site, length, 1)
    four, calls_four = extract(nodes, host, monkeypatch, model, pairs, site, length, 4)
    assert set(calls_one) == {1}
    if text == "pad_mask":  # one failed batch of a pair, then one prompt per forward: the user is told
        assert calls_four[0] == 2 and calls_four[1:] == calls_one
        assert "this model did not run 2 prompts as one batch" in four.meta["fallbacks"]
    else:
        assert sum(calls_four) == sum(calls_one)
        assert "one batch" not in four.meta.get("fallbacks", "")
    if text == "pad":  # one shape: prompts really ran together
        # a batch holds prompts at one sigma: at a site read per sigma a pair gives 2, the ordinary text (one sigma,
        # 64 prompts) full batches
        per_sigma = comfy_host.pack_module("refusal_core.families").get_site(family, site).per_sigma
        assert max(calls_four) == 4 and len(calls_four) < len(calls_one)
        assert not per_sigma or 2 in calls_four
    elif text == "unpadded":  # lengths differ: batches of such prompts fell back to one forward per prompt
        lengths = {int(u.conditioning[0][0].shape[1]) for pair in pairs.pairs for u in pair}
        assert len(lengths) > 1 and 1 in calls_four
    assert [layer.point for layer in one.layers] == [layer.point for layer in four.layers]
    for a, b in zip(four.layers, one.layers):
        assert float((a.r - b.r).norm()) <= 1e-5 * float(b.r.norm()), a.point
    fa = nodes["LowRankFactorize"].execute(four, "cpca", 100, 0.5).result[0]
    fb = nodes["LowRankFactorize"].execute(one, "cpca", 100, 0.5).result[0]
    for a, b in zip(fa.layers, fb.layers):
        assert same_up_to_sign(a.basis[0], b.basis[0]) < 1e-5, a.point
    for _, module in model.model.diffusion_model.named_modules():
        assert not module._forward_pre_hooks


def test_batch_size_follows_free_memory(nodes, host, models, monkeypatch):
    import comfy.model_management as mm

    model = models["wan"]
    latent = host.models.probe_latent(model, 64, 64, 1, 0)
    one = model.model.memory_required([1, *latent.shape[1:]])
    assert 1 <= host.forward.batch_size(model, latent) <= comfy_host.pack_module("refusal_core.defaults").MAX_BATCH
    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 0)
    assert host.forward.batch_size(model, latent) == 1
    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 3.1 * 1.5 * one)
    assert host.forward.batch_size(model, latent) == 3
    monkeypatch.setattr(mm, "get_free_memory", lambda *a, **k: 1e18)
    assert host.forward.batch_size(model, latent) == comfy_host.pack_module("refusal_core.defaults").MAX_BATCH
