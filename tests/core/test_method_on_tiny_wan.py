"""The whole method on a small Wan-architecture model (pure torch), without ComfyUI."""

from dataclasses import replace

import pytest
import torch

from refusal_core.edit import RefusalEdit
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.types import EncodedPrompt, RefusalError
from refusal_core.weights import edited_state_dict
from testbed.tiny_wan import TinyWan
from tests.core.toy_wan import NEUTRAL, PAIRS, SHAPE, Counter, encode, linear_text_wan, prompts, random_wan

WAN_SITES = FAMILIES["wan"].sites


@pytest.fixture(scope="module")
def model():
    return random_wan(0)


def test_text_site_is_read_once_per_prompt_and_video_site_per_sigma(model):
    latent = torch.randn(1, 16, 1, 8, 8)
    for site, per_prompt in (("text_kv", 1), ("ffn_in", 3)):
        fwd = Counter(model)
        stats = extract_refusal_stats(
            model,
            fwd,
            prompts(PAIRS, NEUTRAL),
            latent,
            ExtractSettings(WAN_SITES[site], [0, 2], [0.9, 0.6, 0.3], "wan"),
        )
        assert fwd.calls == per_prompt * (2 * len(PAIRS) + len(NEUTRAL))
        assert [layer.point for layer in stats.layers] == [WAN_SITES[site].point(b) for b in (0, 2)]
        assert all(layer.r.norm() > 0 for layer in stats.layers)
    for module in model.modules():
        assert not module._forward_pre_hooks


@pytest.mark.parametrize("method", ["cpca", "pca", "mean_diff"])
def test_erasing_a_planted_concept(model, method):
    """A concept planted as one direction of the text context (the text MLP made linear, so the
    truth is known): the text_kv edit erases it on unseen phrasings, a random direction does not."""
    linear = linear_text_wan(0)
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    stats = extract_refusal_stats(
        linear,
        Counter(linear),
        prompts(PAIRS, NEUTRAL),
        latent,
        ExtractSettings(WAN_SITES["text_kv"], [0, 1, 2], [0.6], "wan"),
    )
    edit = factorize(stats, method, 100, 0.5)
    g = torch.Generator().manual_seed(4)
    random = RefusalEdit(
        tuple(
            replace(layer, basis=torch.nn.functional.normalize(torch.randn(1, 64, generator=g)))
            for layer in edit.layers
        ),
        {},
    )

    def out(m, text):
        with torch.no_grad():
            return m(0.6 * latent, torch.tensor([600.0]), encode(text).conditioning)

    def edited(edit):
        m = TinyWan(**SHAPE).eval()
        m.text_embedding[1] = torch.nn.Identity()
        m.load_state_dict(edited_state_dict(linear.state_dict(), edit, 1.0))
        return m

    erased, control = edited(edit), edited(random)
    for u, s in [("a nude dog runs", "a dog runs"), ("two nude friends laugh", "two friends laugh")]:
        before = (out(linear, u) - out(linear, s)).norm()
        # every difference row is r: no method has noise to remove, and none may tilt d off the concept
        assert (out(erased, u) - out(erased, s)).norm() < 0.01 * before
        assert (out(control, u) - out(control, s)).norm() > 0.9 * before


def test_identical_sides_and_non_finite_activations_are_refused(model):
    latent = torch.randn(1, 16, 1, 8, 8)
    same = prompts([("a man walks", "a man walks"), ("people swim", "people swim")], NEUTRAL)
    with pytest.raises(RefusalError, match="identical activations"):
        extract_refusal_stats(
            model, Counter(model), same, latent, ExtractSettings(WAN_SITES["text_kv"], [0], [0.5], "wan")
        )

    def nan_forward(cond, noise, sigma):
        return model(sigma * noise, torch.tensor([500.0]), cond * float("nan"))

    with pytest.raises(RefusalError, match="NaN or inf"):
        extract_refusal_stats(
            model, nan_forward, prompts(PAIRS, NEUTRAL), latent, ExtractSettings(WAN_SITES["ffn_in"], [0], [0.5], "wan")
        )
    for module in model.modules():
        assert not module._forward_pre_hooks


def test_auto_layers_keep_the_best_separated_blocks(model):
    import json

    from refusal_core.layer_choice import separation

    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    full = extract_refusal_stats(
        model,
        Counter(model),
        prompts(PAIRS, NEUTRAL),
        latent,
        ExtractSettings(WAN_SITES["ffn_in"], [0, 1, 2], [0.6, 0.3], "wan"),
    )
    auto = extract_refusal_stats(
        model,
        Counter(model),
        prompts(PAIRS, NEUTRAL),
        latent,
        ExtractSettings(WAN_SITES["ffn_in"], [0, 1, 2], [0.6, 0.3], "wan", auto_pick=2),
    )
    scores = json.loads(auto.meta["layer_scores"])
    assert list(scores) == [layer.point for layer in full.layers]
    best = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [layer.point for layer in auto.layers] == sorted(best, key=lambda p: int(p.split(".")[1]))
    assert auto.meta["layer_choice"] == "auto2" and auto.meta["blocks"] == ",".join(
        p.split(".")[1] for p in sorted(best)
    )
    for layer in full.layers:
        assert abs(scores[layer.point] - separation(layer.diffs, layer.neutral, layer.r)) < 1e-4 * max(
            1.0, scores[layer.point]
        )


def test_separation_prefers_a_direction_neutral_prompts_do_not_use():
    from refusal_core.layer_choice import separation

    g = torch.Generator().manual_seed(0)
    E = torch.randn(50, 8, generator=g) * torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 1])  # neutral prompts vary along axis 0
    along_busy = torch.zeros(20, 8)
    along_busy[:, 0] = 1.0
    along_quiet = torch.zeros(20, 8)
    along_quiet[:, 1] = 1.0
    assert separation(along_quiet, E, along_quiet.mean(0)) > 5 * separation(along_busy, E, along_busy.mean(0))


def test_joint_sequences_split_video_and_text_rows():
    from refusal_core.align import pair_rows, prompt_rows
    from refusal_core.families import FAMILIES

    site = FAMILIES["hunyuan_video"].sites["joint_in"]
    u = EncodedPrompt("a nude man", (1, 5, 7, 2), None, text_len=6)  # 4 real tokens, 2 padding rows
    s = EncodedPrompt("a man", (1, 5, 2), None, text_len=6)
    a_u, a_s = torch.randn(10 + 6, 4), torch.randn(10 + 6, 4)  # 10 video tokens then the text
    D = pair_rows(site, a_u, a_s, u, s)
    assert D.shape == (10 + 4, 4)
    assert torch.equal(D[:10], a_u[:10] - a_s[:10])
    assert torch.equal(D[10 + 2], a_u[10 + 2] - a_s[10 + 2])  # "nude" pairs with "man", the word it modifies
    assert prompt_rows(site, a_u, u).shape == (10 + 4, 4)
