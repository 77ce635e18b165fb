"""A headless ComfyUI answers a sequence of bad graphs with clear errors, keeps running, then runs a
good graph; the loaded base model gives bit-identical samples before and after."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.host import tiny_models
from tests.host.graphs import common_nodes, erase_nodes, sampling
from tests.host.prompts_unseen import EXTRACTION_PAIRS

pytestmark = pytest.mark.host
DOC_DATA = Path(__file__).resolve().parents[2] / "docs" / "data" / "bad_inputs.json"
FIRST = EXTRACTION_PAIRS.splitlines()[0]


def erase(unet=None, **kw) -> dict:
    g = {**(common_nodes(unet) if unet else common_nodes()), **erase_nodes(**kw)}
    g.update(sampling(["apply", 0], "bad/out"))
    return g


def apply_saved(vector: str, unet=None) -> dict:
    g = common_nodes(unet) if unet else common_nodes()
    g["load_vec"] = {"class_type": "LoadRefusalVector", "inputs": {"vector_name": vector}}
    g["apply"] = {
        "class_type": "ApplyRefusalToModel",
        "inputs": {"model": ["unet", 0], "refusal_vector": ["load_vec", 0], "strength": 1.0},
    }
    g.update(sampling(["apply", 0], "bad/out"))
    return g


def with_clip_width(g: dict, width: int) -> dict:
    g["clip"]["inputs"]["width"] = width
    return g


def with_save(g: dict, prefix: str) -> dict:
    g["save_vec"] = {
        "class_type": "SaveRefusalVector",
        "inputs": {"refusal_vector": ["factor", 0], "filename_prefix": prefix},
    }
    return g


def with_noise(g: dict, text: str) -> dict:
    g["extract"]["inputs"]["noise_levels"] = text
    return g


# (bad input, graph, text the answer must contain)
CASES = [
    ("empty pair text", lambda: erase(pairs=""), "0 prompt pair(s) given"),
    ("a line without '|'", lambda: erase(pairs="a woman with blood on her face\n" + EXTRACTION_PAIRS), "has no '|'"),
    (
        "a pair with an empty side",
        lambda: erase(pairs="a gory car crash | \n" + EXTRACTION_PAIRS),
        "has no safe prompt",
    ),
    (
        "a pair whose sides are identical",
        lambda: erase(pairs="a red car | a red car\n" + EXTRACTION_PAIRS),
        "same prompt on both sides",
    ),
    ("fewer than 2 pairs", lambda: erase(pairs=FIRST), "1 prompt pair(s) given"),
    ("duplicate pairs", lambda: erase(pairs=EXTRACTION_PAIRS + "\n" + FIRST), "is given twice"),
    (
        "a prompt longer than the text window",
        lambda: erase(pairs=f"{'a ' * 600}bloody wound | {'a ' * 600}wound\n" + EXTRACTION_PAIRS),
        "tokens long",
    ),
    ("a pairs file that is not UTF-8", lambda: erase(pairs_file="latin1.txt"), "is not UTF-8"),
    ("a truncated pairs file", lambda: erase(pairs_file="truncated.json"), "is it truncated?"),
    ("a pairs file with the wrong columns", lambda: erase(pairs_file="three_columns.csv"), "has 3 columns"),
    ("conditioning of the wrong width", lambda: with_clip_width(erase(), 768), "768 wide"),
    ("alpha NaN", lambda: erase(alpha=float("nan")), "alpha must be a finite number"),
    ("alpha out of range", lambda: erase(alpha=-1.0), "smaller than min"),
    ("strength NaN", lambda: erase(strength=float("nan")), "strength must be between 0 and 4"),
    ("strength out of range", lambda: erase(strength=float("inf")), "bigger than max"),
    ("noise levels not numbers", lambda: with_noise(erase(), "0.9,high"), "must be numbers"),
    ("noise levels out of range", lambda: with_noise(erase(), "1.5"), "between 0 (exclusive) and 1"),
    ("layers that do not exist", lambda: erase(layers="7"), "do not exist"),
    ("layers not understood", lambda: erase(layers="middle"), "not understood"),
    ("activations with NaN (fp16 overflow)", lambda: erase(unet="tiny_wan_nan.safetensors"), "contain NaN or inf"),
    (
        "a vector made for another width",
        lambda: apply_saved("bad/base_00001.safetensors", "tiny_wan_dim256.safetensors"),
        "made for a model 128 wide",
    ),
    (
        "a vector made for another layer set",
        lambda: apply_saved("bad/base_00001.safetensors", "tiny_wan_1block.safetensors"),
        "which this model lacks",
    ),
    (
        "a vector applied to another family",
        lambda: apply_saved("bad/base_00001.safetensors", "tiny_hunyuan_video.safetensors"),
        "made for a Wan 2.1 / 2.2 model",
    ),
    ("an unsupported model (an image model)", lambda: erase(unet="tiny_sd3.safetensors"), "is not supported yet"),
    ("a corrupt vector file", lambda: apply_saved("corrupt.safetensors"), "truncated or corrupt"),
    (
        "a vector path outside the folder",
        lambda: apply_saved("../../user/comfy.settings.json"),
        "is not in models/refusal_vectors",
    ),
    ("a save prefix outside the folder", lambda: with_save(erase(), "../../escape"), "may only hold letters"),
    (
        "image_kv without CLIP-vision tokens",
        lambda: erase(site="image_kv", unet="tiny_wan_i2v.safetensors"),
        "reads the images' CLIP-vision tokens",
    ),
]


# Settings a node's validate_inputs (or ComfyUI's own checks) refuses before anything executes.
BEFORE_ANY_NODE_RUNS = {
    "alpha out of range",
    "strength out of range",
    "noise levels not numbers",
    "noise levels out of range",
    "layers not understood",
    "a save prefix outside the folder",
}


def answer(server, graph: dict) -> tuple[str, str]:
    """Run a graph that must fail; returns (who answered, the message)."""
    result = server.run(graph)
    if "rejected" in result:
        errors = [e for node in result["rejected"].get("node_errors", {}).values() for e in node["errors"]]
        return "ComfyUI validation", "; ".join(f"{e['message']}: {e['details']}" for e in errors) or json.dumps(
            result["rejected"]
        )
    status = result["status"]
    assert status["status_str"] == "error", f"the bad graph ran: {status}"
    err = next(m[1] for m in status["messages"] if m[0] == "execution_error")
    return f"{err['node_type']} ({err['exception_type'].rsplit('.', 1)[-1]})", err["exception_message"].strip()


@pytest.fixture(scope="module")
def prepared(server):
    models, inputs = server.base / "models" / "diffusion_models", server.base / "input"
    tiny_models.testbed_wan(models / "tiny_wan_dim256.safetensors", dim=256)
    tiny_models.testbed_wan(models / "tiny_wan_1block.safetensors", layers=1)
    nan = load_file(str(models / "tiny_wan_t2v.safetensors"))
    nan["text_embedding.0.weight"][0, 0] = float("inf")
    save_file(nan, str(models / "tiny_wan_nan.safetensors"))
    tiny_models.hunyuan_video(models / "tiny_hunyuan_video.safetensors")
    tiny_models.sd3(models / "tiny_sd3.safetensors")
    tiny_models.wan(models / "tiny_wan_i2v.safetensors", model_type="i2v", in_dim=36)
    (inputs / "latin1.txt").write_bytes("une femme nue | une femme\n".encode("latin-1") + b"caf\xe9 | bar\n")
    (inputs / "truncated.json").write_text('{"pairs": [["a bloody wound", "a wound"], ["a gory')
    (inputs / "three_columns.csv").write_text("unsafe,safe,extra\na bloody wound,a wound,x\n")
    vectors = server.base / "models" / "refusal_vectors"
    vectors.mkdir(parents=True, exist_ok=True)
    (vectors / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return server


def test_bad_graphs_get_clear_errors_and_the_server_keeps_working(prepared):
    server = prepared
    guard = {**common_nodes(), **sampling(["unet", 0], "bad/guard_before")}
    good = with_save(erase(), "bad/base")
    for graph in (guard, good):
        assert server.run(graph)["status"]["status_str"] == "success"

    table = []
    for name, graph, expected in CASES:
        who, message = answer(server, graph())
        table.append({"input": name, "answered by": who, "message": message})
        assert expected in message, f"{name}: {message}"
        if name in BEFORE_ANY_NODE_RUNS:
            assert who == "ComfyUI validation", f"{name} was answered by {who}, after nodes ran"

    # rank k above what the data supports: clamped and reported, not an error
    clamped = server.run(erase(k=4096))
    assert clamped["status"]["status_str"] == "success"
    report = "".join(clamped["outputs"]["factor"]["text"])
    capped = [
        line for line in report.splitlines() if "capped" in line
    ]  # the first layer's line, under the edit's headline
    assert capped, report
    table.append(
        {
            "input": "rank k larger than the data supports",
            "answered by": "LowRankFactorize (runs, text on the node)",
            "message": capped[0],
        }
    )

    final = {**common_nodes(), **sampling(["unet", 0], "bad/guard_after", advanced=True)}
    assert server.run(final)["status"]["status_str"] == "success"
    out = server.base / "output" / "bad"
    before = load_file(str(next(out.glob("guard_before_*.latent"))))["latent_tensor"]
    after = load_file(str(next(out.glob("guard_after_*.latent"))))["latent_tensor"]
    assert torch.equal(before, after), "the base model changed while answering bad graphs"
    assert not list((server.base / "models").rglob(".tmp-*")), "a partial file was left behind"
    assert not (server.base / "escape_00001.safetensors").exists()

    print("\n" + "\n".join(f"| {r['input']} | {r['answered by']} | {r['message']} |" for r in table))
    if os.environ.get("REFUSAL_REPORT_DIR"):
        Path(os.environ["REFUSAL_REPORT_DIR"], "bad_inputs.json").write_text(json.dumps(table, indent=1))
    else:  # docs/bad-input.md is made from this file: what users see must be what it says
        committed = json.loads(DOC_DATA.read_text())["rows"]
        assert table == committed, "the answers changed: run python scripts/make_docs.py --collect and commit docs/"
