"""`python -m bench.full_size` (the cost of the template at Wan's real size in ComfyUI) runs and reports every node and
the interleaved sampling with its control, spread and verdict: its --tiny mode, the same code at toy sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
ROOT = Path(__file__).resolve().parents[2]


def test_the_full_size_bench_reports_every_erasure_node_and_file(tmp_path):
    from bench import paired
    from refusal_core.families import FAMILIES
    from tests.host import comfy_host

    if comfy_host.missing_reason():
        pytest.skip(comfy_host.missing_reason())
    out = tmp_path / "full_size.json"
    env = {**os.environ, "REFUSAL_BENCH_CACHE": str(tmp_path / "cache")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.full_size",
            "--tiny",
            "--quiet",
            "--rounds",
            "1",
            "--steps",
            "3",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=900,
    )
    report = json.loads(out.read_text())
    small = report["wan21_1.3B"]
    ran = {r["type"] for r in small["nodes"]}
    assert {
        "UNETLoader",
        "PromptPairLoader",
        "ExtractRefusalVector",
        "LowRankFactorize",
        "SaveRefusalVector",
        "ApplyRefusalToModel",
        "SaveRefusalAsLoRA",
    } <= ran
    assert all(r["seconds"] >= 0 and r["peak_mib"] > 0 for r in small["nodes"])
    kinds = {f["file"].split("/")[1] for f in small["files"] if f["file"].startswith("models/")}
    assert kinds == {"refusal_vectors", "loras"} and all(f["bytes"] > 0 for f in small["files"])
    wan = FAMILIES["wan"]
    per_block = len(wan.sites[wan.default_site].edit_keys(0))  # text_kv: the key and the value of each block
    assert small["residual_max"] < 1e-3 and small["edited_weights"] == small["shape"]["num_layers"] * per_block
    samp = small["sampling"]
    # one round of 3 steps: the original, the edited and the original again, the first step of each left out
    assert all(len(samp["step_seconds"][k]) == 2 for k in ("original", "edited", "control"))
    assert samp["edited_over_original"] == samp["spread"]["median"] > 0 and samp["spread"]["n"] == 2
    assert samp["control"]["n"] == 2 and samp["goal"] == 1.01
    assert samp["verdict"] == paired.verdict(samp["edited_over_original"], 1.01, samp["spread"], samp["control"])
    assert report["run"]["device"] == "cpu" and not report["run"]["gpu"]
    per = report["wan_14B_width"]["per_block"]
    assert "ExtractRefusalVector" in per["seconds"] and set(per["file_bytes"]) == {"refusal_vectors", "loras"}
    assert per["file_bytes"]["refusal_vectors"]["per_block"] > 0  # one more block, one more direction saved
