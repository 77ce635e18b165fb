"""What the ComfyUI frontend reads from the pack: seeds that stay fixed, file inputs that re-run when the
file changes, node help pages, templates that offer their model downloads and thumbnails."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.host.graphs import common_nodes, erase_nodes
from tests.host.prompts_unseen import EXTRACTION_PAIRS
from tests.host.test_server_http import NODE_IDS

pytestmark = pytest.mark.host
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((REPO / "example_workflows").glob("*.json"))
LOADERS = {
    "UNETLoader": "unet_name",
    "CLIPLoader": "clip_name",
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
    "VAELoader": "vae_name",
    "CLIPVisionLoader": "clip_name",
}


def test_no_seed_of_the_pack_randomizes_after_a_queue(server):
    """The frontend gives an INT named seed a 'control after generate' set to randomize unless the spec says
    control_after_generate; a randomized seed re-runs extraction on every queue with another result."""
    info = server.get("/object_info")
    seeds = [
        (n, name, spec)
        for n in NODE_IDS
        for section in ("required", "optional")
        for name, spec in info[n]["input"].get(section, {}).items()
        if spec[0] == "INT" and name in ("seed", "noise_seed")
    ]
    assert {n for n, _, _ in seeds} >= {"ExtractRefusalVector", "RefusalProbe"}
    for node, name, spec in seeds:
        assert spec[1].get("control_after_generate") is False, f"{node}.{name} would randomize"


def test_editing_the_pairs_file_between_two_queues_changes_the_result(server):
    path = server.base / "input" / "pairs_edit_test.txt"
    path.write_text(EXTRACTION_PAIRS + "\n")
    g = {**common_nodes(), **erase_nodes(pairs_file=path.name)}
    g["save_vec"] = {
        "class_type": "SaveRefusalVector",
        "inputs": {"refusal_vector": ["factor", 0], "filename_prefix": "edit_test/v"},
    }
    del g["apply"]
    assert server.run(g)["status"]["status_str"] == "success"
    again = server.run(g)  # nothing changed: ComfyUI's cache answers
    assert "pairs" in next(m[1]["nodes"] for m in again["status"]["messages"] if m[0] == "execution_cached")
    path.write_text("\n".join(EXTRACTION_PAIRS.splitlines()[:-1]) + "\n")  # one pair fewer
    third = server.run(g)
    assert "pairs" not in next(m[1]["nodes"] for m in third["status"]["messages"] if m[0] == "execution_cached")
    from safetensors import safe_open

    folder = server.base / "models" / "refusal_vectors" / "edit_test"
    hashes = []
    for f in sorted(folder.glob("v_*.safetensors")):
        with safe_open(str(f), "pt") as h:
            hashes.append(h.metadata()["pairs_sha256"])
    assert len(hashes) >= 2 and hashes[0] != hashes[-1], "the edited file did not change the vector"


def test_every_node_has_a_help_page_the_frontend_finds(server):
    """The frontend fetches /extensions/<pack folder>/docs/<node id>.md for a custom node's help."""
    info = server.get("/object_info")
    for node in NODE_IDS:
        folder = info[node]["python_module"].split(".")[1]
        with urllib.request.urlopen(f"{server.url}/extensions/{folder}/docs/{node}.md", timeout=30) as r:
            page = r.read().decode()
        assert page.startswith("# "), node
        widgets = [n for s in ("required", "optional") for n in info[node]["input"].get(s, {})]
        missing = [w for w in widgets if w not in page]
        assert not missing, f"{node}'s help does not mention {missing}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_templates_offer_the_downloads_of_their_models_and_have_a_thumbnail(server, path):
    wf = json.loads(path.read_text())
    for node in wf["nodes"]:
        if node["type"] not in LOADERS:
            continue
        names = LOADERS[node["type"]]
        files = [node["widgets_values"][i] for i, _ in enumerate([names] if isinstance(names, str) else names)]
        models = {m["name"]: m for m in node["properties"].get("models", [])}
        for f in files:
            assert f in models, f"{path.stem}: {node['type']} names {f} without a download"
            assert models[f]["url"].startswith("https://huggingface.co/Comfy-Org/") and models[f]["url"].endswith(
                "/" + f
            )
            assert models[f]["directory"] in ("diffusion_models", "text_encoders", "vae", "clip_vision")
    ours = [n for n in wf["nodes"] if n["type"] in NODE_IDS]
    assert ours and all(n["properties"].get("cnr_id") == "refusal-vector-unlearning" for n in ours)
    with urllib.request.urlopen(
        f"{server.url}/api/workflow_templates/refusal_pack/{urllib.request.quote(path.stem)}.jpg", timeout=30
    ) as r:
        assert r.status == 200 and r.read(3) == b"\xff\xd8\xff"  # a JPEG, where the template browser looks for it


def test_requirements_hold_only_what_comfyui_lacks():
    """ComfyUI-Manager pip-installs requirements.txt into the user's ComfyUI: nothing there may duplicate (or
    re-pin) ComfyUI's own requirements, and the library's dependencies must all come with one or the other."""
    import re

    import tomllib

    from tests.host import comfy_host

    def names(path: Path) -> set[str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return {re.split(r"[<>=!~\[; ]", line)[0].lower() for line in lines if line}

    ours, comfy = names(REPO / "requirements.txt"), names(comfy_host.comfy_path() / "requirements.txt")
    assert not ours & comfy, f"requirements.txt repeats ComfyUI's own: {ours & comfy}"
    deps = {
        re.split(r"[<>=!~\[; ]", d)[0].lower()
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert deps <= ours | comfy, deps - ours - comfy


def test_statistics_and_edits_are_different_wires(server):
    """Extraction's statistics go to Low-Rank Factorize only; a statistics wire into an edit input is refused
    before anything runs (the frontend does not join sockets of different types; the server's check agrees)."""
    info = server.get("/object_info")
    assert info["ExtractRefusalVector"]["output"][0] == "REFUSAL_STATS"
    assert info["LowRankFactorize"]["input"]["required"]["refusal_vector"][0] == "REFUSAL_STATS"
    assert info["LowRankFactorize"]["output"][0] == "REFUSAL_VECTOR"
    for node in ("ApplyRefusalToModel", "SaveRefusalVector", "SaveRefusalAsLoRA", "RefusalProbe"):
        assert info[node]["input"]["required"]["refusal_vector"][0] == "REFUSAL_VECTOR", node
    g = {**common_nodes(), **erase_nodes()}
    g["save"] = {
        "class_type": "SaveRefusalVector",
        "inputs": {"refusal_vector": ["extract", 0], "filename_prefix": "wrong/wire"},
    }
    result = server.run(g)
    errors = [e for node in result["rejected"].get("node_errors", {}).values() for e in node["errors"]]
    assert any("mismatch" in e["message"].lower() for e in errors), result
    assert not (server.base / "models" / "refusal_vectors" / "wrong").exists()
