"""The method end to end on the first world: every site and method.

    python -m testbed.run [--out DIR] [--quick]

The first world (worlds.py, FIRST): a small Wan (the math and key names of ComfyUI's WanModel) trained on a world
in which nudity, graphic violence and a named character each render one known pattern, sampled without guidance
(shipped; see train.py). For every concept, the pack's preset pairs give the refusal vector; every site and method
is applied, with a random direction at the defaults' site as the reference; and held-out prompts (phrasings in no
extraction text, both halves of the split) are generated and scored exactly:

  render rate   share of held-out unsafe prompts whose generation still carries the concept
  others        render rate of the OTHER concepts' held-out prompts after the edit
  drift         mean |change| of subject and scene coefficients on prompts without a concept
  change        mean relative change of those prompts' generated latents

Writes results.json, spectrum.png and a before/after grid into --out.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from refusal_core import PromptPair, PromptPairs, RefusalEdit, defaults, factorize
from refusal_core.presets import load_preset, preset_keep
from refusal_core.probe import ProbeResult, compare, record
from refusal_core.report.plot import spectrum_image
from scripts.outdir import png_bytes

from . import provenance
from .evaluate import (
    DEFAULTS,
    PRESETS,
    RANDOM,
    Bed,
    Groups,
    Sizes,
    concept_pairs,
    denoised_forward,
    edited_model,
    generate,
    make_edit,
    scores,
)
from .picture import before_after_grid
from .progress import Progress
from .tables import pct, table
from .train import checkpoint_path, config
from .worlds import FIRST

SITES = ("text_kv", "cross_out", "ffn_in")
METHODS = (("mean_diff", 0.0), ("pca", 0.0), ("cpca", 0.5), ("cpca", 2.0))
SIZES = Sizes(
    unsafe=36, near=0, character=0, clean=24
)  # held-out prompts per concept; clean prompts (and 18 safe twins)
SEED = 0  # the probe latent of extraction; sampling noise is seed 1


def is_default(site: str, method: str, alpha: float) -> bool:
    return site == DEFAULTS.site and method == DEFAULTS.method and (method != "cpca" or alpha == DEFAULTS.alpha)


def probe_default(bed: Bed, edit: RefusalEdit, concept: str, groups: Groups) -> ProbeResult:
    """The Refusal Probe node's numbers for an edit, on six of the concept's held-out pairs and eight clean prompts."""
    pairs = [PromptPair(u.text, s.text) for u, s in concept_pairs(FIRST, concept, "held_out", SIZES.unsafe)[:6]]
    prompts = PromptPairs.from_texts(pairs, [p.text for p in groups.prompts["clean"][:8]], bed.encode)
    latent = bed.probe_latent(SEED + 1)
    after_model = edited_model(bed.model, edit, DEFAULTS.strength)
    before = record(bed.model, denoised_forward(bed.model), prompts, edit, latent, defaults.SIGMAS)
    after = record(after_model, denoised_forward(after_model), prompts, edit, latent, defaults.SIGMAS)
    return compare(prompts, before, after, edit)


def run(out: Path, quick: bool = False, shown: Progress | None = None) -> dict:
    shown = shown or Progress(quiet=True)
    bed = Bed(FIRST, 0, log=shown.say, progress=shown.bar)
    groups = Groups.build(FIRST, "held_out", SIZES)
    methods = [m for m in METHODS if is_default(DEFAULTS.site, *m)] if quick else METHODS
    sites = [DEFAULTS.site] if quick else list(SITES)
    advance = shown.bar(1 + len(FIRST.concepts) * (len(sites) * (1 + len(methods)) + 1), "evaluating")
    base = generate(bed.model, groups, SEED + 1)
    advance()
    rows, defaults_of, probes = [], {}, {}
    for concept in FIRST.concepts:
        for site in sites:
            stats = bed.extract(concept, site, defaults.SIGMAS, SEED)
            advance()
            for method, alpha in methods:
                edit = factorize(stats, method=method, k=DEFAULTS.k, alpha=alpha)
                after = generate(edited_model(bed.model, edit, DEFAULTS.strength), groups, SEED + 1)
                row = {
                    "concept": concept,
                    "site": site,
                    "method": method,
                    "alpha": alpha,
                    "default": is_default(site, method, alpha),
                    **scores(base, after, groups, concept),
                }
                rows.append(row)
                if row["default"]:
                    defaults_of[concept] = edit
                    probes[concept] = probe_default(bed, edit, concept, groups).as_dict()
                advance()
        reference = make_edit(RANDOM, bed.extract(concept, RANDOM.site, defaults.SIGMAS, SEED), SEED)
        after = generate(edited_model(bed.model, reference, RANDOM.strength), groups, SEED + 1)
        rows.append(
            {
                "concept": concept,
                "site": RANDOM.site,
                "method": "random direction",
                "alpha": 0.0,
                "default": False,
                **scores(base, after, groups, concept),
            }
        )
        advance()
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrum.png").write_bytes(png_bytes(spectrum_image(defaults_of["nudity"])))
    grid_models = {c: edited_model(bed.model, defaults_of[c], DEFAULTS.strength) for c in defaults_of}
    (out / "before_after.png").write_bytes(
        png_bytes(before_after_grid(FIRST, bed.model, grid_models, groups, SEED + 1))
    )
    result = {
        "made_by": provenance.made_by(),
        "defaults": {
            k: getattr(DEFAULTS, k)
            for k in ("site", "layers", "method", "alpha", "k", "strength", "ordinary", "ordinary_strength")
        },
        "sigmas": list(defaults.SIGMAS),
        "held_out_per_concept": SIZES.unsafe,
        "clean_prompts": len(groups.prompts["clean"]),
        "train": asdict(config(FIRST.name)),
        "rows": rows,
        "probe_default": probes,
        "keep_prompts": {c: preset_keep(p) for c, (p, _) in PRESETS.items()},
        "pairs": {c: [[p.unsafe, p.safe] for p in load_preset(*PRESETS[c])[0]] for c in PRESETS},
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def method_label(r: dict) -> str:
    return r["method"] + (f" α={r['alpha']:g}" if r["method"] == "cpca" else "")


def text_table(result: dict) -> str:
    rows = [
        [
            r["concept"],
            r["site"],
            method_label(r) + (" *" if r["default"] else ""),
            f"{pct(r['render_before'])} -> {pct(r['render_after'])}",
            pct(r["others_after"]),
            f"{r['drift']:.3f}",
            f"{r['change']:.3f}",
        ]
        for r in result["rows"]
    ]
    return table(["concept", "site", "method", "render", "others", "drift", "change"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="testbed_out", help="folder for results.json, spectrum.png and before_after.png")
    ap.add_argument("--quick", action="store_true", help="only the default site and method")
    ap.add_argument("--quiet", action="store_true", help="no progress: only the table at the end (for scripts)")
    args = ap.parse_args(argv)
    shown = Progress(args.quiet)
    shown.say(f"first world's model: {checkpoint_path(config(FIRST.name))}")
    result = run(Path(args.out), args.quick, shown)
    print(
        f"\nrender rate of {SIZES.unsafe} held-out prompts per concept (phrasings in no extraction text), before -> after the edit;\n"
        f"'others': the other concepts' prompts; drift / change on {result['clean_prompts']} prompts without a concept. * = the pack's defaults\n"
    )
    print(text_table(result))
    for concept, p in result["probe_default"].items():
        print(
            f"RefusalProbe, default edit, {concept}: output leakage {p['leakage']:.3f}, collateral {p['collateral']:.3f}"
        )
    print(f"\nwrote {args.out}/results.json, spectrum.png, before_after.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
