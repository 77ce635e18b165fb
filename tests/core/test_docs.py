"""The documents tell the truth about the repository: generated ones match their data, every link and
file they name exists, and the README stays a short user guide."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "web" / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# `path/like/this.ext` or `folder/` in backticks: a file of the repository, named in prose
CODE_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]*)`")


def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_documents_are_what_their_data_give():
    for path, text in make_docs().documents().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run python scripts/make_docs.py"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_file_reference_exists(doc):
    text = doc.read_text()
    missing = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            missing.append(target)
    for ref in CODE_PATH.findall(text):
        if (
            ref.startswith(("models/", "input/", "custom_nodes/", "ComfyUI/", "testbed_out/", "~", "/"))
            or "<" in ref
            or "*" in ref
        ):
            continue  # ComfyUI's folders, the testbed's output folder and placeholders, not files of this repository
        if not ((ROOT / ref).exists() or (doc.parent / ref).exists()):
            missing.append(f"`{ref}`")
    assert not missing, f"{doc.relative_to(ROOT)} names what is not in the repository: {missing}"


def test_no_document_or_code_cites_the_specification_we_started_from():
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in [*DOCS, *ROOT.rglob("*.py")]
        if "METHOD.md" in p.read_text() and "tests/data" not in p.as_posix() and p.name != "test_docs.py"
    ]
    assert offenders == []


def test_the_readme_is_a_short_user_guide_with_the_quick_start_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 170
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:2] == ["## Install", "## Quick start: erase nudity from Wan 2.1"], headings
    assert any(line.startswith("python -m pytest") for line in lines)  # the test command .ci/run calls


def test_every_node_has_a_help_page():
    pages = {p.stem for p in (ROOT / "web" / "docs").glob("*.md")}
    ids = set(re.findall(r'node_id="(\w+)"', "".join(p.read_text() for p in (ROOT / "nodes").glob("*.py"))))
    assert ids and ids == pages


def test_the_readme_cost_section_is_generated_from_the_full_size_bench():
    module = make_docs()
    text = (ROOT / "README.md").read_text()
    assert module.COST_BEGIN in text and module.COST_END in text
    assert (ROOT / "bench" / "full_size.json").exists()
    assert not json.loads((ROOT / "bench" / "full_size.json").read_text())["run"]["tiny"]


def test_the_character_rule_chooses_only_an_edit_the_pack_makes_at_its_default_strength():
    """The reference, the values-only lead and the lower strengths chart what else is possible: even when one of them
    scores best, the documents report the best edit the presets make as they ship."""
    md = make_docs()

    def row(method: str, drift: float) -> dict:
        cell = {"mean": 0.0, "lo": 0.0, "hi": 0.0}
        return {
            "method": method,
            "worst": {"erased": cell, "kept": {**cell, "mean": 1.0}, "drift": {**cell, "mean": drift}},
            "kept_after": {"x": 1.0},
            "erased_after": {"y": 0.0},
        }

    rows = [
        row("rank-1, look-alikes kept", 0.02),
        row(md.WEAKER + "0.8", 0.01),
        row(md.VALUES_LEAD, 0.005),
        row(md.RANDOM_REFERENCE, 0.001),
    ]
    assert md.character_choice(rows)["method"] == "rank-1, look-alikes kept"
    data = json.loads((ROOT / "docs" / "data" / "characters.json").read_text())
    assert any(
        r["method"].startswith(md.WEAKER) for r in data["dev"]["rows"]
    )  # the committed data do carry the trade-off rows


def test_every_data_file_was_made_by_the_code_at_head():
    """Each docs/data file records the commit and the hash of the code (refusal_core and testbed) that made it, and the
    documents show both: a change of that code makes every number stale until `python scripts/make_docs.py --collect`."""
    from testbed.provenance import code_hash

    want = code_hash()
    results = (ROOT / "docs" / "results.md").read_text()
    for path in sorted((ROOT / "docs" / "data").glob("*.json")):
        made = json.loads(path.read_text()).get("made_by", {})
        assert made.get("code") == want, (
            f"{path.name} was made by other code than HEAD's: run python scripts/make_docs.py --collect"
        )
        assert f"code hash `{want}`" in results or path.name == "bad_inputs.json"
    assert f"code hash `{want}`" in (ROOT / "docs" / "bad-input.md").read_text()


def test_every_bench_verdict_is_the_rule_applied_to_its_spread_and_the_docs_show_it():
    """bench/results.json cannot claim a pass its repeats do not give, and docs/results.md shows each figure's goal,
    spread, control and verdict as bench/run.py printed them."""
    from bench import paired

    md, results = make_docs(), (ROOT / "docs" / "results.md").read_text()
    for key, f in json.loads((ROOT / "bench" / "results.json").read_text())["figures"].items():
        assert "verdict" in f, "bench/results.json predates interleaved repeats: run python -m bench.run"
        assert f["verdict"] == paired.verdict(f["value"], f["goal"], f["spread"], f["control"]), key
        assert md.bench_row(key, f) in results.splitlines(), f"docs/results.md does not show {key} as its data give"


def test_the_bench_table_prints_goal_spread_control_and_verdict():
    from bench.run import figure

    md = make_docs()
    figures = {
        "noisy": figure(None, 1.01, "x", [1.0, 1.02, 1.03], [0.97, 1.0, 1.03]),
        "slow": figure(None, 1.0, "y", [1.8, 1.9, 2.0]),
        "bytes": figure(0.001, 0.01, "z"),
    }
    run = {"layers": 30, "threads": 1, "torch": "2", "reps": 9}
    lines = md.bench_section({"figures": figures, "run": run})
    assert "| `noisy` | 1.02 | [1.01, 1.02] of 3 | 1.000 [0.985, 1.02] of 3 | ≤ 1.01 | within noise | x |" in lines
    assert "| `slow` | 1.9 | [1.85, 1.95] of 3 |  | ≤ 1 | **FAIL** | y |" in lines
    assert "| `bytes` | 0.001 | once |  | ≤ 0.01 | pass | z |" in lines


def full_size_report(seconds: float, device: str, gpu: bool) -> dict:
    """A bench/full_size.py report of the shape cost_section reads, every time `seconds` (a fabricated stand-in)."""
    node = {"type": "ExtractRefusalVector", "seconds": seconds, "peak_mib": 2048.0}
    spread = {"median": 1.0, "q1": 0.99, "q3": 1.02, "min": 0.9, "max": 1.1, "n": 9}
    line = {"one_block": seconds, "per_block": seconds, "at_40": 40 * seconds}
    return {
        "run": {"comfyui": "0.3", "cores": 2, "cpu": "a CPU", "device": device, "gpu": gpu},
        "wan21_1.3B": {
            "shape": {"num_layers": 30, "dim": 1536},
            "nodes": [{**node, "gpu_after_mib": 1024.0} if gpu else node],
            "files": [{"file": "models/loras/bench/x.safetensors", "bytes": 2048}],
            "edited_weights": 60,
            "residual_max": 1e-7,
            "sampling": {
                "goal": 1.01,
                "edited_over_original": 1.0,
                "spread": spread,
                "control": spread,
                "size": 256,
                "median_step_seconds": {"original": seconds},
                "verdict": "within noise",
            },
        },
        "wan_14B_width": {
            "shape": {"dim": 5120, "num_heads": 40},
            "per_block": {
                "seconds": {"ExtractRefusalVector": line},
                "peak_mib": line,
                "file_bytes": {"refusal_vectors": line},
            },
        },
    }


def test_the_cost_section_shows_the_gpu_beside_the_cpu_or_says_not_measured():
    md = make_docs()
    cpu = full_size_report(140.25, "cpu", False)
    alone = "\n".join(md.cost_section(cpu))
    assert "| Extract Refusal Vector | 140.2 | 2.0 GB | not measured | not measured |" in alone
    assert "on the GPU not measured." in alone and "Extract at 40 blocks: not measured." in alone
    assert "on the CPU 1.000 (quartiles [0.990, 1.020] of 9 paired steps" in alone and "**within noise**" in alone
    both = "\n".join(md.cost_section(cpu, full_size_report(3.5, "cuda:0 NVIDIA H100", True)))
    assert "| Extract Refusal Vector | 140.2 | 2.0 GB | 3.5 | 2.0 GB / 1.0 GB |" in both
    assert "not measured" not in both and "cuda:0 NVIDIA H100" in both and "3.50 s a step" in both
