"""A forward runs only as deep as the edit: at Wan's text sites no block runs (the text context is read where
it is computed), at video sites the blocks after the last one read and the head never run; the statistics
are those of full forwards, and no hook of ours stays on the model on any path."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from unittest import mock

import pytest
import torch

from refusal_core import ExtractSettings, extract_refusal_stats, forwards
from refusal_core.capture import capture_inputs
from refusal_core.families import FAMILIES
from refusal_core.sites import TEXT, Site
from tests.core.toy_wan import Counter, prompts, random_wan

WAN = FAMILIES["wan"].sites
LATENT = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def full_depth(root, points, shared, run):
    """What the extraction read before forwards stopped early: every point in its block, the whole forward run."""
    with capture_inputs(root, list(points)) as acts:
        run()
    return acts


@contextmanager
def counted_modules(model):
    """{name: calls} of every block and the head while inside."""
    calls = {f"blocks.{i}": 0 for i in range(len(model.blocks))} | {"head": 0}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
        for n in calls
    ]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def extract(model, site, blocks, sigmas=(0.6,), batch_size=1, forward=None, **kwargs):
    settings = ExtractSettings(site, blocks, sigmas, "wan", batch_size=batch_size, **kwargs)
    return extract_refusal_stats(model, forward or Counter(model), prompts(pad_to=8), LATENT, settings)


def tensors(x) -> list[torch.Tensor]:
    """Rows, or the parts of Moments (streamed statistics)."""
    return [x] if isinstance(x, torch.Tensor) else [torch.tensor(float(x.count)), x.total, x.gram]


def assert_same_stats(a, b, tol=1e-6):
    assert [L.point for L in a.layers] == [L.point for L in b.layers]
    for x, y in zip(a.layers, b.layers):
        for name in ("diffs", "neutral", "r"):
            for u, v in zip(tensors(getattr(x, name)), tensors(getattr(y, name)), strict=True):
                assert u.shape == v.shape
                assert float((u - v).abs().max()) <= tol * max(float(v.abs().max()), 1.0), (x.point, name)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_text_site_reads_the_context_before_any_block_and_gives_full_forward_statistics(batch_size):
    model = random_wan(0)
    with counted_modules(model) as calls:
        fast = extract(model, WAN["text_kv"], [0, 1, 2], batch_size=batch_size)
    assert set(calls.values()) == {0}, calls  # only what computes the context ran
    with mock.patch.object(forwards, "read_inputs", full_depth):
        ref = extract(model, WAN["text_kv"], [0, 1, 2], batch_size=batch_size)
    assert_same_stats(fast, ref)
    in_blocks = extract(model, replace(WAN["text_kv"], shared=None), [0, 1, 2], batch_size=batch_size)
    assert_same_stats(in_blocks, ref)
    assert no_hooks(model)


def test_video_site_never_runs_the_blocks_after_the_last_one_read():
    model = random_wan(0)
    n_forwards = 2 * 3 * 2 + 3 * 2  # 3 pairs and 3 neutral prompts at 2 sigmas
    with counted_modules(model) as calls:
        fast = extract(model, WAN["cross_out"], [0, 1], sigmas=(0.9, 0.3))
    assert calls == {"blocks.0": n_forwards, "blocks.1": n_forwards, "blocks.2": 0, "head": 0}
    with mock.patch.object(forwards, "read_inputs", full_depth):
        ref = extract(model, WAN["cross_out"], [0, 1], sigmas=(0.9, 0.3))
    assert_same_stats(fast, ref)
    assert no_hooks(model)


def test_a_model_without_the_shared_module_is_read_in_its_blocks():
    model = random_wan(0)
    site = Site("text_kv", "blocks.{i}.cross_attn.k", ("blocks.{i}.cross_attn.k",), TEXT, False, "", "no_such_module")
    with counted_modules(model) as calls:
        stats = extract(model, site, [1])
    assert calls["blocks.0"] > 0 and calls["blocks.2"] == 0
    assert_same_stats(stats, extract(model, WAN["text_kv"], [1]))


def test_the_stop_passes_a_host_that_catches_every_exception():
    """ComfyUI code on the way may catch Exception to take a fallback of its own: the stop is not an Exception."""
    model = random_wan(0)
    counter = Counter(model)

    def forward(cond, noise, sigma):
        try:
            return counter(cond, noise, sigma)
        except Exception as e:
            raise AssertionError("the stop was caught as an ordinary exception") from e

    assert_same_stats(extract(model, WAN["cross_out"], [0], forward=forward), extract(model, WAN["cross_out"], [0]))


def test_an_interrupted_extraction_leaves_no_hook_and_is_not_swallowed():
    model = random_wan(0)
    counter = Counter(model)

    class Interrupted(Exception):
        pass

    def forward(cond, noise, sigma):  # Cancel in ComfyUI raises from inside the forward
        if counter.calls == 3:
            raise Interrupted
        return counter(cond, noise, sigma)

    for site, blocks in ((WAN["text_kv"], [0, 2]), (WAN["cross_out"], [2])):
        counter.calls = 0
        with pytest.raises(Interrupted):
            extract(model, site, blocks, forward=forward)
        assert no_hooks(model)


def test_progress_still_moves_to_the_end():
    model = random_wan(0)
    seen = []
    settings = ExtractSettings(WAN["text_kv"], [0, 2], [0.6], "wan", batch_size=2)
    extract_refusal_stats(
        model, Counter(model), prompts(pad_to=8), LATENT, settings, progress=lambda d, t: seen.append((d, t))
    )
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == seen[-1][1] == 9


def test_a_site_read_before_the_blocks_cannot_depend_on_sigma():
    with pytest.raises(ValueError, match="sigma"):
        Site("x", "blocks.{i}.a", ("blocks.{i}.a",), TEXT, True, "", "text_embedding")
