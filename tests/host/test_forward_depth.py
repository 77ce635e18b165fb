"""Extraction through the node runs each forward only as deep as the edit, on every family in ComfyUI: at
a site read before the blocks (Wan's and LTX-Video's text context) no block runs, elsewhere no block after the
last one read runs, and the statistics are those of full forwards."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.core.test_forward_depth import assert_same_stats
from tests.host import tiny_models
from tests.host.minilm_clip import MiniLMClip
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host

# variant: (builder, text width, pooled width, site, layers, blocks that may run: None = all up to the last one read)
CASES = {
    "wan21_t2v-text_kv": (lambda p: tiny_models.wan(p), 4096, None, "text_kv", "all", 0),
    "wan21_i2v-text_kv": (lambda p: tiny_models.wan(p, model_type="i2v", in_dim=36), 4096, None, "text_kv", "all", 0),
    "wan22_5b-text_kv": (lambda p: tiny_models.wan(p, in_dim=48, out_dim=48), 4096, None, "text_kv", "all", 0),
    "wan21_t2v-cross_out": (lambda p: tiny_models.wan(p), 4096, None, "cross_out", "0,1", None),
    "ltxv-text_kv": (tiny_models.ltxv, 4096, None, "text_kv", "all", 0),
    "hunyuan_video-text_ffn_in": (tiny_models.hunyuan_video, 768, 768, "text_ffn_in", "0", None),
    "mochi-text_kv": (tiny_models.mochi, tiny_models.MOCHI_TEXT_WIDTH, None, "text_kv", "0", None),
}
BLOCK_LISTS = ("blocks", "transformer_blocks", "double_blocks", "single_blocks")


@contextmanager
def block_calls(diffusion_model):
    """{"list.i": calls} of every transformer block while inside."""
    calls, handles = {}, []
    for name in BLOCK_LISTS:
        for i, block in enumerate(getattr(diffusion_model, name, None) or []):
            key = f"{name}.{i}"
            calls[key] = 0
            handles.append(block.register_forward_pre_hook(lambda *_a, k=key: calls.__setitem__(k, calls[k] + 1)))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def full_depth(core):
    """The reading before forwards stopped early: every point in its block, every forward run to its end."""

    def read(root, points, shared, run):
        with core.capture.capture_inputs(root, list(points)) as acts:
            run()
        return acts

    return read


@pytest.mark.parametrize("case", list(CASES))
def test_extraction_reads_as_deep_as_the_edit_and_no_deeper(nodes, tmp_path, monkeypatch, case):
    import refusal_pack.refusal_core as core
    import refusal_pack.refusal_core.capture  # noqa: F401 (full_depth reads it)
    import refusal_pack.refusal_core.families  # noqa: F401

    build, width, pooled, site, layers, may_run = CASES[case]
    model = tiny_models.load(build(tmp_path / f"tiny_{case}.safetensors"))  # Mochi is loaded by its name
    pairs = nodes["PromptPairLoader"].execute(MiniLMClip(width=width, pooled_width=pooled), EXTRACTION_PAIRS, NEUTRAL)
    args = (model, pairs.result[0], site, layers, "0.9,0.5", 64, 64, 9, 0)
    diffusion_model = model.model.diffusion_model
    with block_calls(diffusion_model) as calls:
        fast = nodes["ExtractRefusalVector"].execute(*args).result[0]
    read = sorted({int(b) for b in fast.meta["blocks"].split(",")})
    ran = [k for k, n in calls.items() if n]
    if may_run == 0:
        assert not ran, ran
    else:  # the blocks up to the last one read, none after it, nor the head's side of other block lists
        blocks = core.families.FAMILIES[fast.meta["family"]].sites[site].capture.split(".{i}")[0]
        assert set(ran) == {f"{blocks}.{i}" for i in range(max(read) + 1)}, ran
    monkeypatch.setattr(core.forwards, "read_inputs", full_depth(core))
    ref = nodes["ExtractRefusalVector"].execute(*args).result[0]
    assert_same_stats(fast, ref)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in diffusion_model.modules())
