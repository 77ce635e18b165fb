"""The first world's trained model inside a real ComfyUI: loaded by ComfyUI's own loader, erased with the pack's
nodes at their defaults, the RefusalProbe node gives the numbers the testbed script reports."""

from __future__ import annotations

import pytest

from tests.host import comfy_host, tiny_models

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def testbed():
    from testbed import evaluate, run
    from testbed.train import checkpoint_path, config
    from testbed.worlds import FIRST

    bed = evaluate.Bed(FIRST, 0)
    return bed, evaluate.Groups.build(FIRST, "held_out", run.SIZES), checkpoint_path(config(FIRST.name))


@pytest.fixture(scope="module")
def comfy_edit(nodes, testbed):
    from tests.host.minilm_clip import MiniLMClip

    bed, _, path = testbed
    model = tiny_models.load(path)
    clip = MiniLMClip(seed=bed.cfg.text_seed, pad_to=bed.world.text_pad)
    pp = nodes["PromptPairLoader"].execute(clip, "", "", "(none)", "nudity", "").result[0]
    stats = nodes["ExtractRefusalVector"].execute(model, pp, "auto", "all", "0.9,0.6,0.3", 64, 64, 1, 0).result[0]
    edit = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]
    return model, clip, edit, nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0]


def _probe(original, edited, clip, edit, groups):
    from testbed import evaluate
    from testbed.worlds import FIRST

    PromptPair = comfy_host.pack_module("refusal_core.types").PromptPair  # the pack's own type, as its nodes get it
    probe = comfy_host.pack_module("nodes.probe")
    pairs = [PromptPair(u.text, s.text) for u, s in evaluate.concept_pairs(FIRST, "nudity", "held_out", 36)[:6]]
    neutral = [p.text for p in groups.prompts["clean"][:8]]
    return probe.run_probe(original, edited, clip, edit, pairs, neutral, [0.9, 0.6, 0.3], 64, 64, 1, 1)


def test_the_probe_in_comfyui_agrees_with_the_testbed_script(comfy_edit, testbed):
    from refusal_core import defaults
    from refusal_core.factorize import factorize
    from testbed import run

    bed, groups, _ = testbed
    model, clip, edit, edited = comfy_edit
    ours = run.probe_default(
        bed,
        factorize(bed.extract("nudity", run.DEFAULTS.site, defaults.SIGMAS, run.SEED), method="cpca", k=100, alpha=0.5),
        "nudity",
        groups,
    )
    theirs = _probe(model, edited, clip, edit, groups)
    assert theirs.leakage == pytest.approx(ours.leakage, abs=2e-3)
    assert theirs.collateral == pytest.approx(ours.collateral, abs=2e-3)
    for key, value in ours.layer_leakage.items():
        assert theirs.layer_leakage[key] == pytest.approx(value, abs=2e-3)
    assert theirs.leakage < 0.9  # the default edit erases part of the concept on this trained model


def test_the_probe_reports_exactly_one_for_the_unedited_testbed(comfy_edit, testbed):
    _, groups, _ = testbed
    model, clip, edit, _ = comfy_edit
    result = _probe(model, model, clip, edit, groups)
    assert result.leakage == pytest.approx(1.0, abs=1e-6)
    assert result.collateral == pytest.approx(0.0, abs=1e-6)
