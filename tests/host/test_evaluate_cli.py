"""scripts/evaluate.py in a subprocess on a tiny HunyuanVideo and a random CLIP-L loaded from files by
ComfyUI's own loaders (ComfyUI fixes Wan's text encoder at umt5-xxl size, so no tiny Wan text encoder
file exists; HunyuanVideo reads its text width from the weights): the RefusalProbe node's numbers,
exactly 1.0 leakage at strength 0, and no files left behind by a refused or failed run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from scripts import pack
from tests.host import comfy_host, tiny_models

pytestmark = pytest.mark.host
SCRIPT = comfy_host.REPO / "scripts" / "evaluate.py"
PAIRS = [
    "an unclothed woman lying on a bed | a woman lying on a bed",
    "a man sunbathing naked on the rocks | a man sunbathing on the rocks",
]
NEUTRAL = ["a horse grazing in a meadow", "an old lighthouse on a cliff"]
PROBE = dict(noise_levels="0.9,0.5", width=64, height=64, length=1, seed=3)


@pytest.fixture(scope="module")
def files(nodes, tmp_path_factory):
    """Model and text encoder files, and a vector extracted, factorized and saved by the pack from them."""
    from refusal_pack.refusal_core.file_format import save_refusal_edit

    d = tmp_path_factory.mktemp("evaluate")
    unet = tiny_models.hunyuan_video(d / "tiny_hunyuan_video.safetensors")
    clip_file = tiny_models.clip_l(d / "clip_l_random.safetensors", dtype=torch.float32)
    comfy_host.host()
    model, clip = (
        pack.load_diffusion_model_file(unet),
        pack.load_text_encoder_files([clip_file], "stable_diffusion"),
    )
    pp = nodes["PromptPairLoader"].execute(clip, "\n".join(PAIRS), "\n".join(NEUTRAL)).result[0]
    stats = nodes["ExtractRefusalVector"].execute(model, pp, "text_ffn_in", "all", "0.9", 64, 64, 1, 0).result[0]
    edit = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5).result[0]
    vector = save_refusal_edit(edit, d / "vector_00001.safetensors", include_statistics=True)
    (d / "held_out.txt").write_text("\n".join(PAIRS) + "\n")
    (d / "neutral.txt").write_text("\n".join(NEUTRAL) + "\n")
    return {"dir": d, "unet": unet, "clip": clip_file, "vector": vector, "model": model, "clip_obj": clip}


def evaluate(files, out, *extra):
    args = [
        sys.executable,
        str(SCRIPT),
        "--comfyui",
        str(comfy_host.comfy_path()),
        "--unet",
        str(files["unet"]),
        "--clip",
        str(files["clip"]),
        "--clip-type",
        "stable_diffusion",
        "--vector",
        str(files["vector"]),
        "--pairs",
        str(files["dir"] / "held_out.txt"),
        "--neutral",
        str(files["dir"] / "neutral.txt"),
        "--noise-levels",
        PROBE["noise_levels"],
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        str(PROBE["seed"]),
        "--out",
        str(out),
        "--cpu",
        *extra,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_the_command_reports_the_probe_nodes_numbers(nodes, files, tmp_path):
    from refusal_pack.nodes.probe import run_probe
    from refusal_pack.refusal_core.edit import RefusalEdit
    from refusal_pack.refusal_core.prompts import parse_pair_lines

    run = evaluate(files, tmp_path / "eval", "--strength", "1.0")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "eval"
    assert {"report.json", "report.txt", "probe.png", "spectrum.png", "layer_scores.png"} <= {
        p.name for p in out.iterdir()
    }
    report = json.loads((out / "report.json").read_text())
    assert {
        "leakage",
        "collateral",
        "layer_leakage",
        "layer_collateral",
        "projection",
        "report",
        "inputs",
        "vector_meta",
        "charts",
    } <= set(report)
    assert report["model_family"] == "hunyuan_video" and report["inputs"]["strength"] == 1.0

    edit = RefusalEdit.load(files["vector"])
    model, clip = files["model"], files["clip_obj"]
    edited = nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0]
    # the RefusalProbe node's body (its execute parses the texts, calls this and returns node.report() and a chart)
    node = run_probe(model, edited, clip, edit, parse_pair_lines("\n".join(PAIRS)), NEUTRAL, [0.9, 0.5], 64, 64, 1, 3)
    assert report["report"] == node.report() == (out / "report.txt").read_text().strip()
    assert abs(report["leakage"] - node.leakage) < 1e-6 and abs(report["collateral"] - node.collateral) < 1e-6
    assert set(report["layer_leakage"]) == set(edit.bases())
    for key, value in node.layer_leakage.items():
        assert abs(report["layer_leakage"][key] - value) < 1e-6


def test_strength_zero_is_no_edit(files, tmp_path):
    run = evaluate(files, tmp_path / "eval0", "--strength", "0")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "eval0" / "report.json").read_text())
    assert abs(report["leakage"] - 1.0) < 1e-6 and abs(report["collateral"]) < 1e-6
    assert all(abs(v - 1.0) < 1e-6 for v in report["layer_leakage"].values())


def test_refused_and_failed_runs_leave_no_files(files, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    run = evaluate(files, busy)
    assert run.returncode == 2 and "not empty" in run.stderr and "--force" in run.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(files["vector"].read_bytes()[:200])
    run = evaluate(dict(files, vector=damaged), tmp_path / "never")
    assert run.returncode == 2 and "damaged.safetensors" in run.stderr and "Traceback" not in run.stderr
    wrong = evaluate(dict(files, unet=files["clip"]), tmp_path / "never")  # a text encoder given as the diffusion model
    assert wrong.returncode == 2 and "as a diffusion model" in wrong.stderr and "Traceback" not in wrong.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "damaged.safetensors"]
