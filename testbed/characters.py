"""Named characters on the harder testbed: erase one, or eight at once, with each edit the pack can make.

    python -m testbed.characters [--split both] [--seeds 0,1,2] [--noise-seeds 0,1,2] [--ranks 4] [--out FILE] [--quiet]

Per method and per target set (Mickey Mouse alone; eight characters together, three of them sharing
"Mouse" and two "Duck"), on the split's held-out phrasings: each erased character's render rate
before and after, the kept characters' and the look-alikes' (a cartoon mouse, duck, rabbit) after,
and drift on prompts without a mark. The methods: the pack's rank-1 cPCA direction per layer, a
rank-m subspace per layer (rank_sweep.py), the closed-form map (refusal_core/closed_form.py), and the
rank-1 direction from pairs whose safe side names the look-alike ("a cartoon mouse" in place of "a
cartoon character"), the rank-1 direction kept off the rows of a few generic look-alike prompts (KEEP: the preset's
keep prompts, refusal_core/keep.py; the preset's default), the same on the value projection alone (a lead: no site of the
nodes edits the value without the key); and, as a reference, a random subspace of the same rank at the
same layers, which shows what removing that many directions costs this model whatever they are.
Every character's pairs are the copyrighted_character preset's with its name, read at site text_kv,
and the eight edits are joined as CombineRefusalVectors joins them. Every method runs on each
training seed x noise seed (by default 3 x 3, with 95 % intervals over the nine runs, which share
prompts and so understate the spread): the measurement that chooses the character presets' edit (on
dev) and reports it (on test); docs/results.md renders docs/data/characters.json, which this writes.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from refusal_core import defaults
from refusal_core.combine import combine
from refusal_core.factorize import factorize
from refusal_core.presets import load_preset, preset_keep
from refusal_core.types import LayerEdit, PromptPair, RefusalEdit, RefusalStats

from .hard_eval import Bed, Groups, edited_model, interval
from .hard_world import (CHARACTERS, LATENT_SHAPE, LOOKALIKES, MARKS, WorldPrompt, clean_prompts, drift, mark_prompts, render_rate,
                         split, used_phrasings)
from . import guided
from .hard_train import contexts
from .progress import Progress
from .rank_sweep import subspace_edit

ONE = ("mickey",)
EIGHT = ("mickey", "minnie", "mighty", "donald", "daffy", "bugs", "pikachu", "sonic")
PROMPTS = 12  # per character or look-alike
CLEAN = 24
SITE = "text_kv"
PRESET = "copyrighted_character"
KEPT = "rank-1, look-alikes kept"
RANDOM = "random subspace (reference)"
# The look-alikes-kept edit at lower strengths (Apply's or Combine Refusal Vectors' strength): what a user who needs
# less drift trades for it in erasure (0.7 to 1.0 tried on dev with training and noise seed 0: 0.7 let 42 % through)
WEAKER = (0.9, 0.8)


def weaker(strength: float) -> str:
    return f"{KEPT}, strength {strength:g}"


STRENGTH_OF = {weaker(s): s for s in WEAKER}
# The look-alikes-kept edit on the value projection alone (a lead the nodes do not offer: no site edits v without k)
VALUES = "rank-1, look-alikes kept, values only"
# The generic look-alike of a character, as the safe side of its pairs in place of "a cartoon character"
# (the "rank-1, look-alike twin" edit): the pair's difference then holds the name, not the animal.
LOOKALIKE_TWIN = {"mickey": "a cartoon mouse", "minnie": "a cartoon mouse", "mighty": "a cartoon mouse", "donald": "a cartoon duck",
                  "daffy": "a cartoon duck", "bugs": "a cartoon rabbit"}

# The "rank-1, look-alikes kept" edit (the preset's default): the preset's keep prompts are those of every
# character's extraction; each direction is taken orthogonal to the top defaults.KEEP_RANK directions of their
# rows at the site, so that the joined edit leaves them alone (rank 3, 8, 16 tried on dev).
KEEP = tuple(preset_keep(PRESET))


def name_of(mark: str) -> str:
    """What a user types into the preset: the character's first phrasing ("Mickey Mouse")."""
    return MARKS[mark].phrasings[0]


def pairs_of(mark: str, twin: bool) -> tuple[list[PromptPair], list[str]]:
    """The preset's pairs and neutral prompts for the character; with twin, its look-alike as the safe side."""
    pairs, neutral = load_preset(PRESET, name_of(mark))
    if twin and mark in LOOKALIKE_TWIN:
        pairs = [PromptPair(p.unsafe, p.safe.replace("a cartoon character", LOOKALIKE_TWIN[mark])) for p in pairs]
    return pairs, neutral


def held_out(split_name: str) -> dict[str, list[str]]:
    """Per character and look-alike, its phrasings in the split that no character's extraction pairs use (either side)."""
    texts = [t for m in EIGHT for twin in (False, True) for p in pairs_of(m, twin)[0] for t in (p.unsafe, p.safe)]
    out = {mark: split(mark, used_phrasings((mark,), texts))[split_name] for mark in CHARACTERS + LOOKALIKES}
    empty = [m for m, ps in out.items() if not ps]
    if empty:
        raise ValueError(f"no held-out {split_name} phrasing left for {', '.join(empty)}: give them more phrasings in hard_world.py")
    return out


def eval_prompts(split_name: str) -> dict[str, list[WorldPrompt]]:
    """PROMPTS prompts per character and look-alike in its held-out phrasings; and clean prompts."""
    out = {mark: [u for u, _ in mark_prompts(mark, phrasings, PROMPTS, split_name)] for mark, phrasings in held_out(split_name).items()}
    out["clean"] = clean_prompts(CLEAN, f"characters/{split_name}")
    return out


def values_only(edit: RefusalEdit) -> RefusalEdit:
    """The edit with each layer's edit keys cut to the cross-attention value projection: the keys, and so where
    attention goes, stay as they were; only what the text tokens write changes."""
    return replace(edit, layers=tuple(replace(layer, edit_keys=tuple(k for k in layer.edit_keys if k.endswith(".v")))
                                      for layer in edit.layers))


def edit_of(method: str, stats: RefusalStats, m: int) -> RefusalEdit:
    """The method's edit of one character from its statistics (extracted with the KEEP prompts, which only
    "look-alikes kept" uses: keep prompts add rows, they change nothing else of the statistics)."""
    if method == KEPT or method in STRENGTH_OF:
        return factorize(stats)
    if method == VALUES:
        return values_only(factorize(stats))
    if method in ("rank-1", "rank-1, look-alike twin"):
        return factorize(stats, keep_rank=0)
    if method == "rank-m":
        return subspace_edit(stats, m)
    return factorize(stats, method="closed_form")


def random_like(edit: RefusalEdit, draw: int) -> RefusalEdit:
    """A random orthonormal subspace of the edit's rank at each of its layers (seeded by draw), at strength 1: the
    reference for what removing that many directions costs this model whatever they are."""
    g = torch.Generator().manual_seed(9_000 + draw)
    rank = max(layer.basis.shape[0] for layer in edit.layers)
    Q = torch.linalg.qr(torch.randn(edit.layers[0].dim, rank, generator=g, dtype=torch.float64))[0].T.float().contiguous()
    return RefusalEdit(tuple(LayerEdit(layer.point, layer.edit_keys, Q, (1.0,) * rank) for layer in edit.layers), dict(edit.meta))


METHODS = ("rank-1", "rank-m", "closed_form", "rank-1, look-alike twin", KEPT, *STRENGTH_OF, VALUES, RANDOM)


def worst(r: dict, lookalikes: tuple[str, ...] = LOOKALIKES) -> dict[str, float]:
    """One run's summary: the worst erased, kept character and look-alike, and drift."""
    chars = [v for k, v in r["kept_after"].items() if k not in lookalikes]
    looks = [v for k, v in r["kept_after"].items() if k in lookalikes]
    return {"erased": max(r["erased_after"].values()), "characters": min(chars) if chars else float("nan"),
            "lookalikes": min(looks) if looks else float("nan"), "kept": min(r["kept_after"].values()), "drift": r["drift"]}


def summary(runs: list[dict]) -> dict:
    """A row's runs (each a worst()) and, per key of worst(), the mean and 95 % interval over them."""
    return {"runs": runs, "worst": {key: interval([r[key] for r in runs]) for key in ("erased", "characters", "lookalikes", "kept", "drift")}}


def run(split_name: str = "dev", seeds: tuple[int, ...] = (0,), noise_seeds: tuple[int, ...] = (0,), m: int = 4,
        shown: Progress | None = None, steps: int = guided.STEPS) -> dict:
    """Every method on every training seed x noise seed. A row holds the mean render rates and drift over those runs,
    and each run's summary (worst) in "runs"; the random reference draws a new subspace per run."""
    shown = shown or Progress(quiet=True)
    t0 = time.perf_counter()
    evaluated = Groups(split_name, eval_prompts(split_name))
    groups, spans, names = evaluated.prompts, evaluated.slices(), list(evaluated.prompts)
    ctx, empty = evaluated.ctx, contexts([""])
    advance = shown.bar(len(seeds) * (2 * len(EIGHT) + len(noise_seeds) * (1 + 2 * len(METHODS))), f"characters ({split_name})")
    found: dict[tuple[str, int], list[dict]] = {}

    def rates(latents: torch.Tensor) -> dict[str, float]:
        return {n: render_rate(latents[spans[n]], groups[n], (n,)) for n in names if n != "clean"}

    for seed in seeds:
        bed = Bed(seed, log=shown.say, progress=shown.bar)
        stats = {}
        for twin in (False, True):
            for mark in EIGHT:  # the site reads text only: the probe latent (noise seed 0) does not enter
                stats[mark, twin] = bed.extract_pairs(*pairs_of(mark, twin), SITE, defaults.SIGMAS, 0, KEEP)
                advance()
        edits = {}  # (method, targets) -> (edit, strength), the same for every noise seed
        for method in (x for x in METHODS if x != RANDOM):  # the reference is drawn per run, from KEPT's rank
            for targets in (ONE, EIGHT):
                parts = [edit_of(method, stats[t, "twin" in method], m) for t in targets]
                strength = STRENGTH_OF.get(method, defaults.STRENGTH)
                # eight: the strengths go into the joined edit, which then applies at 1
                edits[method, targets] = ((parts[0], strength) if len(parts) == 1 else (combine([(e, strength) for e in parts]), 1.0))
        for ns in noise_seeds:
            noise = torch.randn(len(evaluated.flat), *LATENT_SHAPE, generator=torch.Generator().manual_seed(3_000 + ns))
            base = guided.generate(bed.model, ctx, empty, noise, steps)
            advance()
            before = rates(base)
            for method in METHODS:
                for targets in (ONE, EIGHT):
                    edit, strength = ((random_like(edits[KEPT, targets][0], 100 * seed + ns), 1.0) if method == RANDOM
                                      else edits[method, targets])
                    after_latents = guided.generate(edited_model(bed.model, edit, strength), ctx, empty, noise, steps)
                    after = rates(after_latents)
                    kept = [n for n in names if n != "clean" and n not in targets]
                    found.setdefault((method, len(targets)), []).append({
                        "train_seed": seed, "noise_seed": ns, "rank": max(layer.basis.shape[0] for layer in edit.layers),
                        "erased_before": {t: before[t] for t in targets}, "erased_after": {t: after[t] for t in targets},
                        "kept_after": {n: after[n] for n in kept}, "kept_before": {n: before[n] for n in kept},
                        "drift": drift(base[spans["clean"]], after_latents[spans["clean"]], groups["clean"]),
                    })
                    advance()
    rows = []
    for (method, targets), runs in found.items():
        mean = lambda key: {k: sum(r[key][k] for r in runs) / len(runs) for k in runs[0][key]}  # noqa: E731
        rows.append({"method": method if method != "rank-m" else f"rank-{m}", "targets": targets, "rank": max(r["rank"] for r in runs),
                     **{key: mean(key) for key in ("erased_before", "erased_after", "kept_after", "kept_before")},
                     "drift": sum(r["drift"] for r in runs) / len(runs),
                     **summary([{"train_seed": r["train_seed"], "noise_seed": r["noise_seed"], **worst(r)} for r in runs])})
    return {"split": split_name, "train_seeds": list(seeds), "noise_seeds": list(noise_seeds), "site": SITE, "prompts_per_mark": PROMPTS,
            "clean_prompts": CLEAN, "phrasings": {mark: len(ps) for mark, ps in held_out(split_name).items()},
            "one": list(ONE), "eight": list(EIGHT), "lookalikes": list(LOOKALIKES), "keep_prompts": list(KEEP), "keep_rank": defaults.KEEP_RANK,
            "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}


def table(result: dict) -> str:
    """Per row, over its runs: the mean of each run's worst erased and worst kept, and mean drift with its 95 % interval."""
    lines = [f"{'method':28} {'erased':6} {'rank':>4}  {'erased after (worst)':20} {'kept after (worst)':18} drift [95 %]"]
    for r in result["rows"]:
        er, kept, dr = (r["worst"][key] for key in ("erased", "kept", "drift"))
        lines.append(f"{r['method']:28} {r['targets']:6d} {r['rank']:4d}  {er['mean']:20.0%} {kept['mean']:18.0%} "
                     f"{dr['mean']:.3f} [{dr['lo']:.3f}, {dr['hi']:.3f}]")
    return "\n".join(lines)


def seeds_of(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of seeds (integers >= 0), e.g. 0,1,2")
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="both", choices=("dev", "test", "both"))
    ap.add_argument("--seeds", type=seeds_of, default=(0, 1, 2),
                    help="training seeds (0 ships with the pack; the others train on first use, about 15 min each, and are cached)")
    ap.add_argument("--noise-seeds", type=seeds_of, default=(0, 1, 2), help="sampling noise seeds, each run on every training seed")
    ap.add_argument("--ranks", type=int, default=4, help="m of the rank-m subspace edit")
    ap.add_argument("--out", help="also write the results as JSON to this file ({split: result})")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    splits = ("dev", "test") if args.split == "both" else (args.split,)
    shown = Progress(args.quiet)
    results = {name: run(name, args.seeds, args.noise_seeds, m=args.ranks, shown=shown) for name in splits}
    for result in results.values():
        print(f"named characters, {result['split']} split, training seeds {result['train_seeds']} x noise seeds "
              f"{result['noise_seeds']}, {PROMPTS} prompts per mark")
        print(table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
