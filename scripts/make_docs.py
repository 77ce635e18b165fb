"""Writes docs/results.md, docs/bad-input.md and README.md's cost section from the committed data: every
number in them comes from docs/data/*.json, bench/results.json and bench/full_size.json
(tests/core/test_docs.py fails when a document and its data disagree).

    python scripts/make_docs.py             render the documents from the data
    python scripts/make_docs.py --collect   first produce the data: the testbed run and rank sweep,
                                            and the host tests that report tables (needs the host)

The benchmark data come from `python bench/run.py` (bench/results.json) and `python -m bench.full_size`
(bench/full_size.json, a real ComfyUI at Wan's full size).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"
HOST_REPORTS = {"bad_inputs.json": "bad_inputs.json", "host_leakage.json": "host_leakage.json",
                "families.jsonl": "families.json", "families_leakage.jsonl": "families_leakage.json", "quantized.json": "quantized.json"}
HOST_TESTS = ["tests/host/test_bad_input_http.py", "tests/host/test_families.py", "tests/host/test_quantized.py",
              "tests/host/test_nodes_in_process.py::test_held_out_leakage_beats_a_random_edit"]


def pct(x: float) -> str:
    return f"{round(100 * x)} %"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def method_label(row: dict) -> str:
    return f"cpca α={row['alpha']:g}" if row["method"] == "cpca" else row["method"]


def testbed_section(tb: dict, sweep: dict) -> list[str]:
    d = tb["defaults"]
    out = [
        "## The trained testbed",
        "",
        f"`python -m testbed.run` (data: [data/testbed.json](data/testbed.json)). A small Wan ({tb['train']['dim']} wide, "
        f"{tb['train']['layers']} blocks, ComfyUI's WanModel key names) trained on a synthetic world in which each concept renders a "
        f"known pattern. **Render rate**: the share of {tb['held_out_per_concept']} held-out unsafe prompts per concept (phrasings in "
        "none of the pairs) whose generation still carries the concept. **Others**: the other concepts' held-out prompts after the "
        f"edit. **Drift**: mean change of the subject and scene coefficients (about 1 before) on {tb['clean_prompts']} prompts "
        "without a concept. **Change**: mean relative change of those prompts' generated latents. Every site and method; the "
        f"pack's defaults (site {d['site']}, layers {d['layers']}, {d['method']} α={d['alpha']:g}, k {d['k']}, strength "
        f"{d['strength']:g}) in bold.",
        "",
        "| concept | site | method | render before → after | others after | drift | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tb["rows"]:
        cells = [r["concept"], r["site"], method_label(r), f"{pct(r['render_before'])} → {pct(r['render_after'])}",
                 pct(r["others_after"]), f"{r['drift']:.3f}", f"{r['change']:.3f}"]
        out.append("| " + " | ".join(f"**{c}**" if r["default"] else c for c in cells) + " |")
    out += ["", "![Before / after on the testbed](images/testbed_before_after.png)", "",
            "*Held-out prompts per concept before and after the default edit for that concept; each cell paints the coefficients "
            "measured on the generated latent (scene as background, subject as figure, each concept as a mark whose opacity is its "
            "coefficient).*", ""]
    probes = tb.get("probe_default", {})
    if probes:
        out += ["The Refusal Probe's numbers for the default edits (leakage: 1 = untouched, 0 = erased):", "",
                "| concept | output leakage | output collateral |", "|---|---|---|"]
        out += [f"| {c} | {p['leakage']:.3f} | {p['collateral']:.3f} |" for c, p in probes.items()]
        out.append("")
    if sweep:
        out += [f"### How many directions does the {sweep['rows'][0]['concept']} take?", "",
                "`python -m testbed.rank_sweep` (data: [data/rank_sweep.json](data/rank_sweep.json)) removes a rank-m subspace: d "
                "plus the next m − 1 eigenvectors of the factorization's C.", "",
                "| site | rank m | render before → after | others after | drift |", "|---|---|---|---|---|"]
        out += [f"| {r['site']} | {r['rank']} | {pct(r['render_before'])} → {pct(r['render_after'])} | {pct(r['others_after'])} | "
                f"{r['drift']:.3f} |" for r in sweep["rows"]]
        out.append("")
    out += ["![Spectrum of C for the default nudity edit](images/testbed_spectrum.png)", ""]
    return out


def host_section(leakage: dict, families: list, fam_leak: list) -> list[str]:
    out = ["## Tiny random models in a real ComfyUI", "",
           "A random model has no concept of nudity: these numbers cannot show that a video stops showing a concept. They show that "
           "the pipeline is right end to end in the real host for every family, and that the direction found from five pairs moves "
           "held-out phrasings more than a random direction of the same rank (leakage below the random control).", ""]
    if leakage:
        out += ["Held-out leakage / collateral on a tiny Wan behind a text encoder the pack was not built with "
                "([data/host_leakage.json](data/host_leakage.json)):", "", "| site / method | leakage | collateral |", "|---|---|---|"]
        out += [f"| {k} | {v['leakage']:.3f} | {v['collateral']:.3f} |" for k, v in leakage.items()]
        out.append("")
    if families:
        out += ["Every site of every family: blocks, edited weights and extraction time on CPU ([data/families.json](data/families.json)):",
                "", "| model | site | blocks | edited weights | extraction (s) |", "|---|---|---|---|---|"]
        out += [f"| {r['variant']} | {r['site']} | {r['blocks']} | {r['keys']} | {r['extract_s']:.2f} |" for r in families]
        out.append("")
    if fam_leak:
        out += ["Each family's default site, layers `auto` against `last2` and a random edit "
                "([data/families_leakage.json](data/families_leakage.json)):", "",
                "| model | site | layers | blocks | leakage | collateral |", "|---|---|---|---|---|---|"]
        out += [f"| {r['variant']} | {r['site']} | {r['layers']} | {r['blocks']} | {r['leakage']:.3f} | {r['collateral']:.3f} |" for r in fam_leak]
        out.append("")
    return out


def quantized_section(q: dict) -> list[str]:
    """The residual ||W' d|| / ||W d|| on the weights as the forward computes with them (tests/host/test_quantized.py)."""
    out = ["## Quantized checkpoints and LoRAs", "",
           "`tests/host/test_quantized.py` (data: [data/quantized.json](data/quantized.json)): a tiny Wan with weights of a real "
           "model's scale, loaded by ComfyUI's own loaders; the residual ||W′d|| / ||Wd|| on the weights as the forward computes "
           "with them (0 = the layer no longer reads d).", "", "| checkpoint | what | residual |", "|---|---|---|"]
    for name, rows in q.get("fp8_scaled", {}).items():
        out.append(f"| fp8-scaled (UNETLoader) | Apply, `{name}` | {rows['residual']:.4f} (storing W (I − d dᵀ) in fp8 itself: {rows['floor']:.4f}) |")
    for qtype in ("F16", "Q8_0", "Q4_0"):
        g = q.get(f"gguf_{qtype}")
        if g:
            out.append(f"| GGUF {qtype} (UnetLoaderGGUF) | Apply / Combine / exported LoRA | {g['apply']:.1e} / {g['combined']:.1e} / {g['lora_file']:.1e} |")
    for key, label in (("lora_before_fp16", "fp16"), ("lora_before_fp8_scaled", "fp8-scaled"), ("lora_before_gguf_F16", "GGUF F16"),
                       ("lora_before_gguf_Q8_0", "GGUF Q8_0")):
        if key in q:
            out.append(f"| {label} | a LoRA loaded before the edit | {q[key]:.1e} |")
    after = q.get("lora_after_gguf_Q8_0")
    if after:
        out.append(f"| GGUF Q8_0 | a LoRA (changing each weight by 30 % of its norm) loaded after the edit | up to {after['max']:.3f} "
                   f"(mean {after['mean']:.3f}) |")
    return out + [""]


def bench_section(bench: dict) -> list[str]:
    run = bench["run"]
    out = ["## Cost at Wan 2.1 1.3B's shape", "",
           f"`python bench/run.py` (data: [../bench/results.json](../bench/results.json)): pure torch, a Wan of the 1.3B shape ({run['layers']} "
           f"blocks, random fp32 weights), the default site, {run['threads']} torch thread(s), torch {run['torch']}. Every figure is a "
           "ratio measured side by side in one run.", "", "| figure | measured | goal | how |", "|---|---|---|---|"]
    for key, f in bench["figures"].items():
        goal = "" if f["goal"] is None else f"≤ {f['goal']:g}"
        out.append(f"| `{key}` | {f['value']:.4g} | {goal} | {cell(f['how'])} |")
    return out + [""]


def results_md() -> str:
    load = lambda name, default=None: json.loads((DATA / name).read_text()) if (DATA / name).exists() else default  # noqa: E731
    lines = ["# Results", "",
             "Generated by `python scripts/make_docs.py` from the data beside it; do not edit by hand. How the numbers are measured: "
             "[method.md](method.md#measuring).", ""]
    tb = load("testbed.json")
    if tb:
        lines += testbed_section(tb, load("rank_sweep.json"))
    bench_path = ROOT / "bench" / "results.json"
    if bench_path.exists():
        lines += bench_section(json.loads(bench_path.read_text()))
    quantized = load("quantized.json")
    if quantized:
        lines += quantized_section(quantized)
    lines += host_section(load("host_leakage.json", {}), load("families.json", []), load("families_leakage.json", []))
    return "\n".join(lines).rstrip() + "\n"


def bad_input_md() -> str:
    rows = json.loads((DATA / "bad_inputs.json").read_text())
    lines = ["# Bad input and failures", "",
             "Generated by `python scripts/make_docs.py` from [data/bad_inputs.json](data/bad_inputs.json), which "
             "`tests/host/test_bad_input_http.py` checks against what a headless ComfyUI answers: each bad graph is sent to one "
             "server, then a good one, and the base model must sample bit-identically before and after. Nothing is changed before "
             "the error, no partial file is left, and the server keeps running. *ComfyUI validation* answers before any node runs.",
             "", "| bad input | answered by | message the user sees |", "|---|---|---|"]
    lines += [f"| {cell(r['input'])} | {cell(r['answered by'])} | {cell(r['message'])} |" for r in rows]
    return "\n".join(lines) + "\n"


COST_BEGIN = "<!-- cost: generated by scripts/make_docs.py from bench/full_size.json -->"
COST_END = "<!-- cost: end -->"
NODE_NAMES = {"UNETLoader": "Load Diffusion Model", "RefusalTestMiniLMCLIPLoader": "text encoder (the stand-in)",
              "ModelSamplingSD3": "ModelSamplingSD3", "PromptPairLoader": "Prompt Pairs", "ExtractRefusalVector": "Extract Refusal Vector",
              "LowRankFactorize": "Low-Rank Factorize", "PreviewImage": "its spectrum preview", "SaveRefusalVector": "Save Refusal Vector",
              "ApplyRefusalToModel": "Apply Refusal To Model", "SaveRefusalAsLoRA": "Save Refusal As LoRA"}


def size(n: float) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def cost_section(fs: dict) -> list[str]:
    """README's table: the template's erasure part at Wan 2.1 1.3B's shape, and Wan 14B's width per block."""
    run, small, wide = fs["run"], fs["wan21_1.3B"], fs["wan_14B_width"]
    shape = small["shape"]
    out = [COST_BEGIN,
           f"Measured by `python -m bench.full_size` in a real ComfyUI ({run['comfyui']}, `--cpu`) on {run['cores']} CPU cores "
           f"({run['cpu']}), with a Wan 2.1 1.3B-shaped checkpoint ({shape['num_layers']} blocks × {shape['dim']}, random fp16 weights, "
           "ComfyUI computes in float32 on CPU) through the Wan 2.1 template's erasure part with the defaults. The text encoder "
           "is a small stand-in with umt5's output shape (512 × 4096): a real umt5-xxl cannot be made small.", "",
           "| node | seconds | peak memory of ComfyUI |", "|---|---|---|"]
    out += [f"| {NODE_NAMES.get(r['type'], r['type'])} | {r['seconds']:.1f} | {r['peak_mib'] / 1024:.1f} GB |" for r in small["nodes"]]
    kinds = {"refusal_vectors": "the refusal vector", "loras": "the LoRA", "temp": "the spectrum preview", "output": "an output"}
    files = ", ".join(f"{kinds.get(f['file'].split('/')[1] if f['file'].startswith('models/') else f['file'].split('/')[0], f['file'])} "
                      f"{size(f['bytes'])}" for f in small["files"])
    samp = small["sampling"]
    steps = [t for ts in samp["step_seconds"].values() for t in ts]
    per = wide["per_block"]
    ext = per["seconds"]["ExtractRefusalVector"]
    vec = per["file_bytes"]["refusal_vectors"]
    out += ["", "The loader's peak holds the fp16 file and its float32 copy at once. "
            f"Files written: {files}. After the edit, each of the {small['edited_weights']} edited weights reads at most "
            f"{small['residual_max']:.1e} of its direction (‖W′d‖ / ‖Wd‖, on the weights ComfyUI computes with). A sampling step on the "
            f"edited model (the edit folded into the weights by ComfyUI's ModelPatcher) took {samp['edited_over_original']:.2f}× the "
            f"original's: the median of {len(samp['step_seconds']['edited'])} steps each at {samp['size']}×{samp['size']}, while single steps "
            f"spread from {min(steps):.1f} to {max(steps):.1f} s on this machine, so no cost of the edit is measurable.", "",
            f"Wan 14B's width ({wide['shape']['dim']}, {wide['shape']['num_heads']} heads), measured with 1 and 2 blocks: each block adds "
            f"{ext['per_block']:.1f} s to Extract Refusal Vector, {per['peak_mib']['per_block'] / 1024:.2f} GB to the peak memory and "
            f"{size(vec['per_block'])} to the saved vector. At 40 blocks: Extract {ext['one_block']:.1f} + 39 × {ext['per_block']:.1f} = "
            f"{ext['at_40'] / 60:.0f} min, peak {per['peak_mib']['one_block'] / 1024:.1f} + 39 × {per['peak_mib']['per_block'] / 1024:.2f} = "
            f"{per['peak_mib']['at_40'] / 1024:.0f} GB (float32 on CPU; on a GPU the weights stay in their own format), "
            f"vector {size(vec['one_block'])} + 39 × {size(vec['per_block'])} = {size(vec['at_40'])}.", COST_END]
    return out


def readme_md() -> str:
    """README.md with its cost section rendered from bench/full_size.json (the rest is written by hand)."""
    text = (ROOT / "README.md").read_text()
    path = ROOT / "bench" / "full_size.json"
    if COST_BEGIN not in text or not path.exists():
        return text
    head, rest = text.split(COST_BEGIN, 1)
    _, tail = rest.split(COST_END, 1)
    return head + "\n".join(cost_section(json.loads(path.read_text()))) + tail


def documents() -> dict[Path, str]:
    return {ROOT / "docs" / "results.md": results_md(), ROOT / "docs" / "bad-input.md": bad_input_md(), ROOT / "README.md": readme_md()}


def collect() -> None:
    """Run what produces the data (minutes): the testbed with its pictures, the rank sweep, the host report tests."""
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run([sys.executable, "-m", "testbed.run", "--out", str(out / "testbed")], cwd=ROOT, check=True)
        shutil.copy(out / "testbed" / "results.json", DATA / "testbed.json")
        shutil.copy(out / "testbed" / "before_after.png", ROOT / "docs" / "images" / "testbed_before_after.png")
        shutil.copy(out / "testbed" / "spectrum.png", ROOT / "docs" / "images" / "testbed_spectrum.png")
        subprocess.run([sys.executable, "-m", "testbed.rank_sweep", "--out", str(DATA / "rank_sweep.json")], cwd=ROOT, check=True)
        reports = out / "reports"
        reports.mkdir()
        env = {**os.environ, "REFUSAL_REPORT_DIR": str(reports)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", *HOST_TESTS], cwd=ROOT, env=env, check=True)
        for src, dst in HOST_REPORTS.items():
            text = (reports / src).read_text()
            data = [json.loads(line) for line in text.splitlines() if line.strip()] if src.endswith(".jsonl") else json.loads(text)
            (DATA / dst).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collect", action="store_true", help="produce the data first (minutes; the host tests need a ComfyUI host)")
    args = ap.parse_args(argv)
    if args.collect:
        collect()
    for path, text in documents().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
