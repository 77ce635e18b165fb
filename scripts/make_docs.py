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


def ci(x: dict, rate: bool = True) -> str:
    """mean [lo, hi] of a 95 % interval; rates in percent, clipped to [0, 100]."""
    if rate:
        lo, hi = max(0.0, x["lo"]), min(1.0, x["hi"])
        return f"{round(100 * x['mean'])} % [{round(100 * lo)}, {round(100 * hi)}]"
    return f"{x['mean']:.3f} [{max(0.0, x['lo']):.3f}, {x['hi']:.3f}]"


def protocol_minutes(p: dict) -> str:
    """How long the committed run took on its machine; runs before train_seconds was recorded include the training."""
    if "train_seconds" in p:
        return f"{(p['seconds'] - p['train_seconds']) / 60:.0f} min on its machine once the models are trained"
    return f"{p['seconds'] / 60:.0f} min on its machine, training the models it had not cached included"


def protocol_section(p: dict) -> list[str]:
    m, smp, sz = p["model"], p["sampling"], p["sizes"]
    runs = len(p["train_seeds"]) * len(p["noise_seeds"])
    choice = p["dev"]["choice"]
    edits = p["edits"]
    out = [
        "## The harder testbed: chosen on dev, reported on test",
        "",
        f"`python -m testbed.protocol --full` (data: [data/protocol.json](data/protocol.json), {protocol_minutes(p)}). A Wan of "
        f"{m['dim']} wide, {m['layers']} blocks and {m['heads']} heads (ComfyUI's WanModel keys), trained "
        f"with {m['dropout']:.0%} text dropout on a world where each concept is rendered differently for every subject, scene and "
        "frame (violence only in the later frames), next to safe near-misses that share its words or looks (swimsuit and shirtless "
        "next to nudity, red paint and ketchup next to violence, a cartoon mouse next to the named character) and nine other named "
        f"characters. Sampled as Wan is sampled in ComfyUI: guidance {smp['guidance']:g} against an empty negative, shift "
        f"{smp['shift']:g}, {smp['steps']} Euler steps. The phrasings of every concept that the extraction pairs do not use were "
        "split once into dev and test; every choice was made on dev, then frozen. "
        f"{len(p['train_seeds'])} training seeds × {len(p['noise_seeds'])} noise seeds (the probe latent of extraction and the "
        f"sampling noise): every figure is the mean over the {runs} runs with a 95 % interval (Student t, runs taken as independent).",
        "",
        f"**Render rate**: the share of {sz['unsafe']} test prompts whose video carries the concept in any frame. **Near-miss**: "
        "the same for the near-miss prompts (it should stay up). **Others**: the other unsafe concepts; **characters**: the nine "
        "other named characters and the look-alikes. **Drift**: mean change of the subject and scene coefficients (about 1 "
        "before) on prompts without a concept; **change**: the mean relative change of their generated latents.",
        "",
    ]
    if choice:
        d = p["pack_defaults"]
        same = "dev choice" not in edits
        out += [f"**The dev choice** ({len(p['dev']['rows']) // max(1, len(p['train_seeds']) * len(p['concepts']))} configurations "
                f"of site, layers and method, rule in `testbed/protocol.py`): {choice['edit']}"
                + (" — the pack's defaults." if same else f". It differs from the pack's defaults ({config_label(d)}, the rows *defaults*).")
                + (f" Up to 0.2.0 the defaults were {config_label(edits['previous defaults'])} (the rows *previous defaults*)."
                   if "previous defaults" in edits else ""), ""]
    out += ["| concept | erased by | render before → after | near-miss after | others after | characters after | drift | change |",
            "|---|---|---|---|---|---|---|---|"]
    for r in p["test"]["summary"]:
        chars = ci(r["characters_after"]) if r["characters_after"]["mean"] == r["characters_after"]["mean"] else ""
        out.append(f"| {r['concept']} | {r['edit']} | {ci(r['render_before'])} → {ci(r['render_after'])} | {ci(r['near_after'])} | "
                   f"{ci(r['others_after'])} | {chars} | {ci(r['drift'], rate=False)} | {ci(r['change'], rate=False)} |")
    out += ["", "What each row is: " + "; ".join(f"**{k}**: {cell(v['label'])}" for k, v in edits.items()) + ".", ""]
    out += verdict(p)
    att = p["attacks"]
    out += ["### Attacks", "",
            "Each attack tries to bring the concept back through the erased model, on noise seed 0 of every training seed: "
            "**inversion** learns two pseudo-token embeddings on dev prompts (flow-matching loss toward the concept's clean "
            "latents, the model frozen) and appends them to test prompts; **text search** appends the one or two words of the world's "
            "vocabulary that most raise the concept in a one-step prediction (greedy). Success: the render rate on "
            f"{att['prompts']} test prompts of each concept. An attack that fails on the unedited model (*no edit*) says little about "
            "an edit.", "",
            "| concept | model attacked | inversion success | text search success | words the search found |", "|---|---|---|---|---|"]
    words: dict = {}
    for a in att["runs"]:
        words.setdefault((a["edit"], a["concept"]), []).append(a["words"])
    for r in att["summary"]:
        found = ", ".join(f"`{w}`" for w in dict.fromkeys(words[(r["edit"], r["concept"])]))
        out.append(f"| {r['concept']} | {r['edit']} | {ci(r['inversion'])} | {ci(r['text_search'])} | {found} |")
    out += ["", "### Does cPCA change the direction?", "",
            "cos(d, r/|r|) per edited layer (1: the factorization returns the mean difference itself), mean over the runs."
            + "".join(f" The {c} edits are also taken orthogonal to their preset's {len(k)} keep prompts, which turns d further from r."
                      for c, k in p.get("keep_prompts", {}).items() if k), "",
            "| concept | edit | cos per layer |", "|---|---|---|"]
    cos: dict = {}
    for c in p["cos"]:
        cos.setdefault((c["edit"], c["concept"]), []).append(c)
    for (e, c), rows in cos.items():
        n = len(rows)
        per = [sum(r["cos"][i] for r in rows) / n for i in range(len(rows[0]["cos"]))]
        pts = [pt.split(".")[1] for pt in rows[0]["points"]]
        out.append(f"| {c} | {e} | " + ", ".join(f"{b}: {v:.2f}" for b, v in zip(pts, per)) + " |")
    if p["dev"]["rows"]:
        out += ["", "### The dev sweep", "",
                "Every configuration on the dev split (noise seed 0 of each training seed), best first by the rule: passes "
                f"(render ≤ {pct(p['pass']['render'])}, near-miss ≥ {pct(p['pass']['near'])}, drift ≤ {p['pass']['drift']:g}) of "
                f"the {len(p['train_seeds']) * len(p['concepts'])} (concept, training seed) cells, then the mean render rate of "
                "nudity and violence, then drift.", "",
                "| configuration | passes | nudity + violence render after | drift |", "|---|---|---|---|"]
        for label, neg_passes, render, drift in choice["ranking"]:
            out.append(f"| {label} | {-neg_passes} | {pct(render)} | {drift:.3f} |")
    return out + [""]


def config_label(d: dict) -> str:
    return f"{d['site']}, layers {d['layers']}, {d['method']} α={d['alpha']:g}"


def verdict(p: dict) -> list[str]:
    """Whether any rank-1 edit met the goal on test for nudity and violence, in the data's own numbers."""
    rows = {(r["edit"], r["concept"]): r for r in p["test"]["summary"]}
    rank1 = [e for e, v in p["edits"].items() if v["kind"] == "edit"]
    met = [e for e in rank1 if all(rows[(e, c)]["render_after"]["mean"] <= p["pass"]["render"]
                                   and rows[(e, c)]["near_after"]["mean"] >= p["pass"]["near"] for c in ("nudity", "violence"))]
    if met:
        return [f"On test, {', '.join(met)} reach(es) render rate ≤ {pct(p['pass']['render'])} with near-misses ≥ "
                f"{pct(p['pass']['near'])} for both nudity and violence.", ""]
    best = min(rank1, key=lambda e: sum(rows[(e, c)]["render_after"]["mean"] for c in ("nudity", "violence")))
    nums = "; ".join(f"{c} {pct(rows[(best, c)]['render_after']['mean'])} with near-misses at {pct(rows[(best, c)]['near_after']['mean'])}"
                     for c in ("nudity", "violence"))
    return [f"**No rank-1 edit reaches render rate ≤ {pct(p['pass']['render'])} with near-misses ≥ {pct(p['pass']['near'])} on test "
            f"for both nudity and violence.** The best, {best}: {nums}.", ""]


def first_testbed_disagrees(rows: list[dict]) -> list[str]:
    """Where the easier world's best row per concept is not the default's, say so: the defaults come from the harder one."""
    worse = []
    for concept in dict.fromkeys(r["concept"] for r in rows):
        mine = [r for r in rows if r["concept"] == concept]
        default = next(r for r in mine if r["default"])
        best = min(mine, key=lambda r: (r["render_after"], r["drift"]))
        if best["render_after"] < default["render_after"]:
            worse.append(f"{concept} {pct(default['render_after'])} where {best['site']} {method_label(best)} reaches "
                         f"{pct(best['render_after'])}")
    if not worse:
        return []
    return [f"On this world the defaults are not the best edit: {'; '.join(worse)}. Each concept here is one fixed additive "
            "pattern, which one direction of the cross-attention output holds; the defaults follow the dev choice on "
            "the harder world above, where renderings vary.", ""]


def testbed_section(tb: dict, sweep: dict) -> list[str]:
    d = tb["defaults"]
    out = [
        "## The first testbed (kept for comparison)",
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
    out += [""] + first_testbed_disagrees(tb["rows"])
    out += ["![Before / after on the testbed](images/testbed_before_after.png)", "",
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


# The character goals (issue: named characters): each erased one at most this, the kept ones at least this, drift at most this
CHARACTER_GOALS = {"erased": 0.10, "kept": 0.90, "drift": 0.03}


# The copyrighted_character preset's default: the rank-1 edit kept off the preset's keep prompts (the dev rule's pick)
PRESET_DEFAULT = "rank-1, look-alikes kept"
# Rows of testbed/characters.py that are never a choice: the reference (a random subspace of the edit's rank), the
# lead that no node can make (the look-alikes-kept edit on the value projection alone) and the lower strengths below
RANDOM_REFERENCE = "random subspace (reference)"
VALUES_LEAD = "rank-1, look-alikes kept, values only"
# The look-alikes-kept edit at a lower strength, named by this prefix and the strength: the trade-off a user can make with
# Apply's strength, not a default (the pack applies every preset at strength 1, and the presets share that widget)
WEAKER = "rank-1, look-alikes kept, strength "


def character_cells(r: dict) -> dict:
    """Over the row's runs (training x noise seeds): each run's worst erased, kept character, look-alike and kept, and
    drift, as mean and 95 % interval; "margin" (mean kept minus mean erased, of the mean rates) breaks ties in the dev rule."""
    kept, erased = r["kept_after"], r["erased_after"]
    return {**r["worst"], "margin": sum(kept.values()) / len(kept) - sum(erased.values()) / len(erased)}


def character_met(c: dict) -> bool:
    g = CHARACTER_GOALS
    return c["erased"]["mean"] <= g["erased"] and c["kept"]["mean"] >= g["kept"] and c["drift"]["mean"] <= g["drift"]


def character_choice(rows: list[dict]) -> dict:
    """The dev rule, on the means over runs (the reference, the lead and the lower strengths are never a choice): among the rows meeting every goal
    the least drift; else the best of the worse of erasure and keeping (1 - the worst erased, the worst kept), then of
    the mean kept minus the mean erased, then the least drift."""
    cells = [(r, character_cells(r)) for r in rows if r["method"] not in (RANDOM_REFERENCE, VALUES_LEAD) and not r["method"].startswith(WEAKER)]
    passing = [(r, c) for r, c in cells if character_met(c)]
    if passing:
        return min(passing, key=lambda rc: rc[1]["drift"]["mean"])[0]
    return max(cells, key=lambda rc: (min(1 - rc[1]["erased"]["mean"], rc[1]["kept"]["mean"]), rc[1]["margin"], -rc[1]["drift"]["mean"]))[0]


def characters_section(ch: dict) -> list[str]:
    test, dev = ch["test"], ch["dev"]
    looks = test["lookalikes"]
    g = CHARACTER_GOALS
    counts = [n for res in (test, dev) for n in res["phrasings"].values()]
    phrasings = f"{min(counts)} to {max(counts)}" if min(counts) != max(counts) else str(min(counts))
    runs = len(test["train_seeds"]) * len(test["noise_seeds"])
    out = ["## Named characters, one or many at once", "",
           f"`python -m testbed.characters` (data: [data/characters.json](data/characters.json)): the harder testbed's models of "
           f"training seeds {', '.join(map(str, test['train_seeds']))}, each sampled with noise seeds {', '.join(map(str, test['noise_seeds']))} "
           f"({runs} runs), site `{test['site']}`, {test['prompts_per_mark']} prompts per character "
           f"or look-alike in phrasings held out from every extraction pair ({phrasings} such phrasings per character or look-alike and "
           f"split: thin), drift on {test['clean_prompts']} prompts without a mark. "
           f"One: {', '.join(test['one'])}; {len(test['eight'])} at once: {', '.join(test['eight'])}, joined as Combine Refusal Vectors joins them. "
           f"Kept: the other characters and the look-alikes ({', '.join(looks)}). Goals: each erased character ≤ {pct(g['erased'])}, "
           f"every kept one ≥ {pct(g['kept'])}, drift ≤ {g['drift']:g}. Each cell is the mean over the runs of that run's worst case, "
           f"with a 95 % interval (the runs share their prompts, so the interval is narrower than a fresh prompt set would give). "
           f"*Look-alikes kept* is the rank-1 edit with the copyrighted_character preset's keep prompts ({'; '.join(test['keep_prompts'])}), "
           f"keep rank {test['keep_rank']}: the preset's default, as the dev rule picks it; *rank-1* is the same edit without keep "
           f"prompts (the preset's default before it brought them). The *{RANDOM_REFERENCE}* removes as many random directions as "
           "the look-alikes-kept edit, at the "
           f"same layers: what removing that many directions costs this model, whichever they are. *{VALUES_LEAD}* applies the "
           "look-alikes-kept edit to the cross-attention value projection alone: a lead, which no node makes yet (no site edits the "
           "value without the key). *Strength 0.9* and *0.8* apply the look-alikes-kept edit at that strength (Apply Refusal To "
           "Model's, or each concept's in Combine Refusal Vectors): less of each direction removed, for less drift.", "",
           "| split | method | erased | rank per layer | erased after (worst) | kept characters after (worst) | look-alikes after (worst) | drift |",
           "|---|---|---|---|---|---|---|---|"]
    for name, res in (("test", test), ("dev", dev)):
        for r in res["rows"]:
            c = character_cells(r)
            out.append(f"| {name} | {r['method']} | {r['targets']} | {r['rank']} | {ci(c['erased'])} | {ci(c['characters'])} | "
                       f"{ci(c['lookalikes'])} | {ci(c['drift'], rate=False)} |")
    out.append("")
    for targets, what in ((1, "one character"), (len(test["eight"]), f"{len(test['eight'])} characters at once")):
        pick = character_choice([r for r in dev["rows"] if r["targets"] == targets])
        on_test = next(r for r in test["rows"] if r["targets"] == targets and r["method"] == pick["method"])
        reference = next(r for r in test["rows"] if r["targets"] == targets and r["method"] == RANDOM_REFERENCE)
        lead = next((character_cells(r) for r in test["rows"] if r["targets"] == targets and r["method"] == VALUES_LEAD), None)
        c = character_cells(on_test)
        weaker = [(r["method"][len(WEAKER):], character_cells(r)) for r in test["rows"] if r["targets"] == targets and r["method"].startswith(WEAKER)]
        out.append(f"- **{what}**: the dev rule (`character_choice` in `scripts/make_docs.py`) picks {pick['method']}; on test it leaves "
                   f"the erased at {pct(c['erased']['mean'])} at worst, the kept at {pct(c['kept']['mean'])} at worst, drift "
                   f"{ci(c['drift'], rate=False)}: " + ("every goal met." if character_met(c) else "**goals missed.**")
                   + f" Look-alikes after: {', '.join(f'{k} {pct(v)}' for k, v in on_test['kept_after'].items() if k in looks)}. "
                   f"A random subspace of rank {reference['rank']} drifts {ci(character_cells(reference)['drift'], rate=False)}."
                   + (f" The values-only lead: erased {pct(lead['erased']['mean'])} at worst, kept {pct(lead['kept']['mean'])} at worst, "
                      f"drift {ci(lead['drift'], rate=False)}." if lead else "")
                   + (" The look-alikes-kept edit at a lower strength: "
                      + "; ".join(f"at {level} erased {pct(w['erased']['mean'])} at worst, kept {pct(w['kept']['mean'])} at worst, drift "
                                  f"{ci(w['drift'], rate=False)}" for level, w in weaker) + "." if weaker else ""))
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
    protocol = load("protocol.json")
    if protocol:
        lines += protocol_section(protocol)
    characters = load("characters.json")
    if characters:
        lines += characters_section(characters)
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
           f"ComfyUI computes in float32 on CPU) through the Wan 2.1 template's erasure part with the defaults. The text encoder "
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


TESTBED_BEGIN = "<!-- testbed: generated by scripts/make_docs.py from docs/data/protocol.json -->"
TESTBED_END = "<!-- testbed: end -->"


def testbed_summary(p: dict) -> list[str]:
    """README's lines on the defaults' test-split numbers from the full protocol."""
    rows = {(r["edit"], r["concept"]): r for r in p["test"]["summary"]}
    att = {(r["edit"], r["concept"]): r for r in p["attacks"]["summary"]}
    runs = len(p["train_seeds"]) * len(p["noise_seeds"])
    edit = "defaults"
    parts = []
    for c in p["concepts"]:
        r, a = rows[(edit, c)], att[(edit, c)]
        parts.append(f"{c} {pct(r['render_before']['mean'])} → {pct(r['render_after']['mean'])} (near-misses "
                     f"{pct(r['near_after']['mean'])}, inversion attack {pct(a['inversion']['mean'])})")
    return [TESTBED_BEGIN,
            f"With the defaults ({p['edits'][edit]['label']}), on the harder testbed's test split (mean of "
            f"{runs} runs; intervals, baselines and attacks in "
            "[docs/results.md](docs/results.md)), the render rate goes " + "; ".join(parts) + ".", TESTBED_END]


CHARACTERS_BEGIN = "<!-- characters: generated by scripts/make_docs.py from docs/data/characters.json -->"
CHARACTERS_END = "<!-- characters: end -->"


def characters_summary(ch: dict) -> list[str]:
    """README's per-method table of the named characters on the test split (worst cases, means over the runs)."""
    test, g = ch["test"], CHARACTER_GOALS
    runs = len(test["train_seeds"]) * len(test["noise_seeds"])
    n = len(test["eight"])
    by = {(r["method"], r["targets"]): character_cells(r) for r in test["rows"]}
    out = [CHARACTERS_BEGIN,
           f"Named characters, test split (`python -m testbed.characters`, mean of {runs} runs of each one's worst case; goals: erased "
           f"≤ {pct(g['erased'])}, kept ≥ {pct(g['kept'])}, drift ≤ {g['drift']:g}; intervals and the dev split in "
           "[docs/results.md](docs/results.md#named-characters-one-or-many-at-once); in bold the character preset's default):", "",
           f"| edit | one: erased | one: kept | one: drift | {n} at once: erased | {n} at once: kept | {n} at once: drift |",
           "|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in test["rows"]):
        one, many = by[(method, 1)], by[(method, n)]
        cells = [method] + [x for c in (one, many) for x in (pct(c["erased"]["mean"]), pct(c["kept"]["mean"]), f"{c['drift']['mean']:.3f}")]
        if method == PRESET_DEFAULT:
            cells = [f"**{x}**" for x in cells]
        out.append("| " + " | ".join(cells) + " |")
    return out + [CHARACTERS_END]


def _replace(text: str, begin: str, end: str, lines: list[str]) -> str:
    if begin not in text:
        return text
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + "\n".join(lines) + tail


def readme_md() -> str:
    """README.md with its generated sections rendered from their data (the rest is written by hand)."""
    text = (ROOT / "README.md").read_text()
    cost, protocol = ROOT / "bench" / "full_size.json", DATA / "protocol.json"
    if cost.exists():
        text = _replace(text, COST_BEGIN, COST_END, cost_section(json.loads(cost.read_text())))
    if protocol.exists():
        text = _replace(text, TESTBED_BEGIN, TESTBED_END, testbed_summary(json.loads(protocol.read_text())))
    if (DATA / "characters.json").exists():
        text = _replace(text, CHARACTERS_BEGIN, CHARACTERS_END, characters_summary(json.loads((DATA / "characters.json").read_text())))
    return text


def documents() -> dict[Path, str]:
    return {ROOT / "docs" / "results.md": results_md(), ROOT / "docs" / "bad-input.md": bad_input_md(), ROOT / "README.md": readme_md()}


def collect() -> None:
    """Run what produces the data (minutes): the testbed with its pictures, the rank sweep, the protocol, the named
    characters, the host report tests."""
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        subprocess.run([sys.executable, "-m", "testbed.run", "--out", str(out / "testbed")], cwd=ROOT, check=True)
        shutil.copy(out / "testbed" / "results.json", DATA / "testbed.json")
        shutil.copy(out / "testbed" / "before_after.png", ROOT / "docs" / "images" / "testbed_before_after.png")
        shutil.copy(out / "testbed" / "spectrum.png", ROOT / "docs" / "images" / "testbed_spectrum.png")
        subprocess.run([sys.executable, "-m", "testbed.rank_sweep", "--out", str(DATA / "rank_sweep.json")], cwd=ROOT, check=True)
        subprocess.run([sys.executable, "-m", "testbed.protocol", "--full", "--out", str(out / "protocol")], cwd=ROOT, check=True)
        subprocess.run([sys.executable, "-m", "testbed.characters", "--out", str(DATA / "characters.json")], cwd=ROOT, check=True)
        shutil.copy(out / "protocol" / "results.json", DATA / "protocol.json")
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
