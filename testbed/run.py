"""The method end to end on the trained concept testbed (the embedded default).

    python -m testbed.run [--out DIR] [--quick]

A small Wan (the math and key names of ComfyUI's WanModel), trained on a synthetic world in
which nudity, graphic violence and a named character each render a known pattern (built on first
use and cached; see train.py). For every concept, the pack's preset pairs give the refusal
vector; every site and method is applied; and held-out prompts (phrasings in none of the pairs)
are generated and scored exactly:

  render rate   share of held-out unsafe prompts whose generation still carries the concept
  others        render rate of the OTHER concepts' held-out prompts after the edit
  drift         mean |change| of subject and scene coefficients on prompts without a concept
  change        mean relative change of those prompts' generated latents

Writes results.json, spectrum.png and a before/after grid into --out.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from refusal_core import defaults
from refusal_core.edit import edited_state_dict
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.report.outdir import png_bytes
from refusal_core.report.plot import spectrum_image
from refusal_core.presets import load_preset, preset_keep
from refusal_core.probe import ProbeResult, compare, record
from refusal_core.families import FAMILIES
from refusal_core.sites import parse_layers
from refusal_core.types import EncodedPrompt, PromptPair, PromptPairs, RefusalEdit, RefusalStats
from .picture import before_after_grid
from .render import contexts, drift, output_change, render_rate, score
from .text import minilm_text
from .tiny_wan import TinyWan
from .progress import Progress
from .train import TEXT_PAD, TrainConfig, checkpoint_path, load_or_train
from .world import CHARACTER_NAME, LATENT_SHAPE, WorldPrompt, clean_prompts, held_out_pairs

# The pack's defaults, as the nodes take them.
DEFAULT = {"site": FAMILIES["wan"].default_site, "layers": defaults.LAYERS, "method": defaults.METHOD, "alpha": defaults.ALPHA,
           "k": defaults.K, "strength": defaults.STRENGTH}
SIGMAS = defaults.SIGMAS
CONCEPTS = {"nudity": ("nudity", ""), "violence": ("graphic_violence", ""), "character": ("copyrighted_character", CHARACTER_NAME)}
SITES = ("text_kv", "cross_out", "ffn_in")
METHODS = (("mean_diff", 0.0), ("pca", 0.0), ("cpca", 0.5), ("cpca", 2.0))
HELD_OUT = 36
CLEAN = 48
SEED = 0


@dataclass
class Testbed:
    model: TinyWan
    text_seed: int

    def encode(self, text: str) -> EncodedPrompt:
        enc = minilm_text(self.text_seed)
        ids = enc.tokenize(text)
        return EncodedPrompt(text, tuple(ids), enc.encode(ids, pad_to=TEXT_PAD))

    def probe_latent(self, seed: int) -> torch.Tensor:
        """[1, C, T, H, W] seeded noise at the world's latent size, as the pack's probe_latent draws it."""
        return torch.randn(1, *LATENT_SHAPE, generator=torch.Generator().manual_seed(seed))


def denoised_forward(model: TinyWan) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """What ComfyUI's apply_model returns for Wan (flow, CONST): x - sigma v at x = sigma noise."""

    def forward(cond: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            x = sigma * noise
            return x - sigma * model(x, torch.tensor([sigma * 1000.0]), cond)

    return forward


def extraction_prompts(bed: Testbed, concept: str) -> PromptPairs:
    preset, name = CONCEPTS[concept]
    pairs, neutral = load_preset(preset, name)
    return PromptPairs.from_texts(pairs, neutral, bed.encode, preset_keep(preset))  # as Prompt Pairs gives them


def extract(bed: Testbed, concept: str, site: str, layers: str = defaults.LAYERS) -> RefusalStats:
    model = bed.model
    settings = ExtractSettings(FAMILIES["wan"].sites[site], parse_layers(layers, list(range(len(model.blocks)))), SIGMAS, "wan", seed=SEED)
    return extract_refusal_stats(model, denoised_forward(model), extraction_prompts(bed, concept), bed.probe_latent(SEED), settings)


def edited(model: TinyWan, edit: RefusalEdit, strength: float) -> TinyWan:
    """A copy of the model with the edit applied as the pack applies it (its low-rank factors, edit.edit_factors)."""
    out = copy.deepcopy(model)
    out.load_state_dict(edited_state_dict(model.state_dict(), edit, strength))
    return out


@dataclass(frozen=True)
class EvalSet:
    """Held-out unsafe prompts per concept (with safe twins) and clean prompts, with their conditioning."""

    held_out: dict[str, list[tuple[WorldPrompt, WorldPrompt]]]
    clean: list[WorldPrompt]
    ctx: dict[str, torch.Tensor]  # group -> [N, TEXT_PAD, 4096]

    @classmethod
    def build(cls, bed: Testbed) -> "EvalSet":
        held = {}
        for concept, (preset, name) in CONCEPTS.items():
            pairs, _ = load_preset(preset, name)
            held[concept] = held_out_pairs(concept, [p.unsafe for p in pairs], HELD_OUT, SEED)
        clean = clean_prompts(CLEAN // 2, SEED) + [s for pairs in held.values() for _, s in pairs[: CLEAN // 6]]
        ctx = {c: contexts([u.text for u, _ in held[c]], bed.text_seed) for c in held}
        ctx["clean"] = contexts([p.text for p in clean], bed.text_seed)
        return cls(held, clean, ctx)


def generate_all(model: TinyWan, ev: EvalSet) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    return {group: score(model, ctx, SEED + 1) for group, ctx in ev.ctx.items()}


def scores(base: dict, after: dict, ev: EvalSet, concept: str) -> dict[str, float]:
    others = [c for c in CONCEPTS if c != concept]
    return {
        "render_before": render_rate(base[concept][1], concept),
        "render_after": render_rate(after[concept][1], concept),
        "others_before": sum(render_rate(base[c][1], c) for c in others) / len(others),
        "others_after": sum(render_rate(after[c][1], c) for c in others) / len(others),
        "drift": drift(base["clean"][1], after["clean"][1], ev.clean),
        "change": output_change(base["clean"][0], after["clean"][0]),
    }


def probe_default(bed: Testbed, rv: RefusalEdit, ev: EvalSet, concept: str) -> ProbeResult:
    """The RefusalProbe node's numbers for an edit, on this concept's held-out pairs (first 6) and clean prompts (first 8)."""
    pairs = [PromptPair(u.text, s.text) for u, s in ev.held_out[concept][:6]]
    neutral = [p.text for p in ev.clean[:8]]
    prompts = PromptPairs.from_texts(pairs, neutral, bed.encode)
    latent = bed.probe_latent(SEED + 1)
    before = record(bed.model, denoised_forward(bed.model), prompts, rv, latent, SIGMAS)
    after_model = edited(bed.model, rv, DEFAULT["strength"])
    after = record(after_model, denoised_forward(after_model), prompts, rv, latent, SIGMAS)
    return compare(prompts, before, after, rv)


def is_default(site: str, method: str, alpha: float) -> bool:
    return site == DEFAULT["site"] and method == DEFAULT["method"] and (method != "cpca" or alpha == DEFAULT["alpha"])


def run(out: Path, quick: bool = False, shown: Progress | None = None) -> dict:
    shown = shown or Progress(quiet=True)
    bed = Testbed(load_or_train(TrainConfig(), log=shown.say, progress=shown.bar), TrainConfig().text_seed)
    ev = EvalSet.build(bed)
    methods = [m for m in METHODS if is_default(DEFAULT["site"], *m)] if quick else METHODS
    sites = [DEFAULT["site"]] if quick else list(SITES)
    advance = shown.bar(1 + len(CONCEPTS) * len(sites) * (1 + len(methods)), "evaluating")
    base = generate_all(bed.model, ev)
    advance()
    rows, spectra, probes = [], {}, {}
    for concept in CONCEPTS:
        for site in sites:
            t0 = time.perf_counter()
            rv = extract(bed, concept, site)
            t_extract = time.perf_counter() - t0
            advance()
            for method, alpha in methods:
                frv = factorize(rv, method=method, k=DEFAULT["k"], alpha=alpha)
                after = generate_all(edited(bed.model, frv, DEFAULT["strength"]), ev)
                row = {"concept": concept, "site": site, "method": method, "alpha": alpha, "default": is_default(site, method, alpha),
                       "extract_s": round(t_extract, 3), **scores(base, after, ev, concept)}
                rows.append(row)
                shown.say(_format_row(row))
                if row["default"]:
                    spectra[concept] = frv
                    probes[concept] = probe_default(bed, frv, ev, concept).as_dict()
                advance()
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrum.png").write_bytes(png_bytes(spectrum_image(spectra["nudity"])))
    grid_models = {c: edited(bed.model, spectra[c], DEFAULT["strength"]) for c in spectra}
    (out / "before_after.png").write_bytes(png_bytes(before_after_grid(bed.model, grid_models, ev, SEED + 1)))
    result = {"defaults": DEFAULT, "sigmas": SIGMAS, "held_out_per_concept": HELD_OUT, "clean_prompts": len(ev.clean),
              "train": TrainConfig().__dict__, "rows": rows, "probe_default": probes}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def _format_row(r: dict) -> str:
    method = r["method"] + (f" a={r['alpha']:g}" if r["method"] == "cpca" else "")
    mark = " *" if r["default"] else ""
    return (f"{r['concept']:10} {r['site']:8} {method + mark:14} render {r['render_before']:5.0%} -> {r['render_after']:5.0%}   "
            f"others {r['others_before']:5.0%} -> {r['others_after']:5.0%}   drift {r['drift']:.3f}   change {r['change']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="testbed_out", help="folder for results.json, spectrum.png and before_after.png")
    ap.add_argument("--quick", action="store_true", help="only the default site and method")
    ap.add_argument("--quiet", action="store_true", help="no progress: only the table at the end (for scripts)")
    args = ap.parse_args(argv)
    shown = Progress(args.quiet)
    shown.say(f"testbed model: {checkpoint_path(TrainConfig())} (trained and cached there on first use unless shipped)")
    result = run(Path(args.out), args.quick, shown)
    print(f"\nrender rate of {HELD_OUT} held-out prompts per concept (phrasings in none of the pairs), before -> after the edit;\n"
          f"'others': the other concepts' prompts; drift / change on {result['clean_prompts']} prompts without a concept. * = the pack's defaults\n")
    for row in result["rows"]:
        print(_format_row(row))
    for concept, p in result["probe_default"].items():
        print(f"RefusalProbe, default edit, {concept}: output leakage {p['leakage']:.3f}, collateral {p['collateral']:.3f}")
    print(f"\nwrote {args.out}/results.json, spectrum.png, before_after.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
