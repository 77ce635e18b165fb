"""RefusalProbe on a tiny Wan in a real ComfyUI: exactly 1.0 leakage for an unedited model, the same
numbers as an independent computation for an edit, a chart of the expected size."""

from __future__ import annotations

import pytest

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, HELD_OUT_NEUTRAL, HELD_OUT_PAIRS, NEUTRAL

pytestmark = pytest.mark.host
HELD = "\n".join(f"{u} | {s}" for u, s in HELD_OUT_PAIRS)
NEUTRAL_HELD = "\n".join(HELD_OUT_NEUTRAL)


@pytest.fixture(scope="module")
def setup(nodes, tmp_path_factory):
    from tests.host.minilm_clip import MiniLMClip

    model = tiny_models.load(tiny_models.testbed_wan(tmp_path_factory.mktemp("probe") / "wan.safetensors"))
    clip = MiniLMClip()
    pp = nodes["PromptPairLoader"].execute(clip, EXTRACTION_PAIRS, NEUTRAL).result[0]
    edit = (
        nodes["LowRankFactorize"]
        .execute(
            nodes["ExtractRefusalVector"].execute(model, pp, "text_kv", "all", "0.9", 64, 64, 1, 0).result[0],
            "cpca",
            100,
            0.5,
        )
        .result[0]
    )
    return model, clip, edit, nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0]


def probe(nodes, original, edited, clip, edit):
    return (
        nodes["RefusalProbe"]
        .execute(original, edited, clip, edit, HELD, NEUTRAL_HELD, "0.9,0.6,0.3", 64, 64, 1, 11)
        .result
    )


def test_an_unedited_model_leaks_exactly_one(nodes, setup):
    model, clip, edit, _ = setup
    report, chart = probe(nodes, model, model, clip, edit)
    assert "model output: leakage 1.000" in report and "collateral 0.000" in report
    assert chart.shape == (1, 260, 640, 3)


def test_probe_agrees_with_an_independent_computation(nodes, setup):
    from refusal_pack.refusal_core.metrics import collateral, leakage

    model, clip, edit, edited = setup
    report, _ = probe(nodes, model, edited, clip, edit)
    host = comfy_host.host()
    texts = [t for p in HELD_OUT_PAIRS for t in p] + HELD_OUT_NEUTRAL
    enc = {t: host.encode.encode_prompt(clip, t).conditioning for t in texts}
    latent = host.models.probe_latent(model, 64, 64, 1, 11)

    b, a = comfy_host.outputs(model, enc, latent), comfy_host.outputs(edited, enc, latent)
    lk = leakage([(b[u], b[s]) for u, s in HELD_OUT_PAIRS], [(a[u], a[s]) for u, s in HELD_OUT_PAIRS])
    col = collateral([b[n] for n in HELD_OUT_NEUTRAL], [a[n] for n in HELD_OUT_NEUTRAL])
    assert (
        f"model output: leakage {lk:.3f}, collateral {col:.3f}".replace(",", " (1 = untouched, 0 = erased),", 1)
        in report
    )
    assert lk < 0.99
    for key in edit.bases():
        assert f"{key}: leakage" in report


def test_held_out_pairs_from_a_file_give_the_same_report(nodes, setup, tmp_path, monkeypatch):
    import folder_paths

    model, clip, edit, edited = setup
    (tmp_path / "held_out.txt").write_text(HELD + "\n", encoding="utf-8")
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    from_text, _ = probe(nodes, model, edited, clip, edit)
    from_file, _ = (
        nodes["RefusalProbe"]
        .execute(
            model, edited, clip, edit, "", NEUTRAL_HELD, "0.9,0.6,0.3", 64, 64, 1, 11, held_out_file="held_out.txt"
        )
        .result
    )
    assert from_file == from_text
