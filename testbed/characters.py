"""Named characters on the hard world: erase one, or eight at once, with each edit the pack can make.

    python -m testbed.characters [--split both] [--seeds 0,1,2,3,4] [--noise-seeds 0,1] [--ranks 4] [--out FILE] [--quiet]

Per method and per target set (Mickey Mouse alone; eight characters together, three of them sharing the mouse, two
the duck), on the split's held-out phrasings: each erased character's render rate before and after; after, the kept
characters', the look-alikes' (a cartoon mouse, duck, rabbit: they paint the part a character shares with them) and
the word-senses' (a computer mouse); drift and output change on prompts without a mark. The methods: the pack's
rank-1 cPCA direction per layer, a rank-m subspace per layer (evaluate.subspace_edit), the closed-form map
(refusal_core/solvers/closed_form.py), the rank-1 direction from pairs whose safe side names the look-alike ("a cartoon mouse"
in place of "a cartoon character"), the rank-1 direction kept off the rows of the preset's keep prompts and of the ordinary text
(the pack's default: keep rank 8, the ordinary text's rank and strength of defaults.py; on dev also keep ranks 3 and 16),
the same without the ordinary text at strength 1 (the default before it), the same at lower Apply strengths and on the value projection alone (a
lead: no site of the nodes edits the value without the key); and, as a reference, a random subspace of the same rank
at the same layers, which shows what removing that many directions costs this model whatever they are. Every
character's pairs are the copyrighted_character preset's with its name, read at site text_kv, and the eight edits are
joined as CombineRefusalVectors joins them. Every method runs on each training seed x noise seed, with 95 % intervals
over training seeds; docs/results.md renders docs/data/characters.json, which this writes. Stopped part-way, the same
command resumes from the training seeds it finished (testbed/checkpoint.py).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from refusal_core import LayerEdit, PromptPair, RefusalEdit, RefusalStats, defaults, factorize
from refusal_core.ordinary import ordinary_text
from refusal_core.presets import load_preset, preset_keep

from . import guided, provenance, scoring
from .checkpoint import Checkpoint
from .evaluate import (
    LOOKALIKE_OF,
    Bed,
    Groups,
    characters_and_lookalikes,
    edited_model,
    interval_over_models,
    phrasings_of,
    subspace_edit,
)
from .progress import Progress
from .protocol import NOISE_SEEDS, TRAIN_SEEDS
from .tables import table
from .train import contexts
from .worlds import HARD

ONE = ("mickey",)
EIGHT = ("mickey", "minnie", "mighty", "donald", "daffy", "bugs", "pikachu", "sonic")
PROMPTS = 12  # per character, look-alike or word-sense
CLEAN = 24
SITE = "text_kv"
PRESET = "copyrighted_character"
KEPT = "rank-1, look-alikes kept"
RANDOM = "random subspace (reference)"
# The look-alikes-kept edit at lower strengths (Apply's or Combine Refusal Vectors' strength): what a user who needs less
# drift trades for it in erasure
WEAKER = (0.9, 0.8)
# Other keep ranks than the default's (defaults.KEEP_RANK), measured on dev only: the data behind the default's rank
KEEP_RANKS = (3, 16)
# The look-alikes-kept edit without the ordinary text, at strength 1: the pack's default before the ordinary text
NO_ORDINARY = "rank-1, look-alikes kept, no ordinary text"


def weaker(strength: float) -> str:
    return f"{KEPT}, strength {strength:g}"


def keep_rank_label(rank: int) -> str:
    return f"{KEPT}, keep rank {rank}"


STRENGTH_OF = {weaker(s): s for s in WEAKER} | {NO_ORDINARY: 1.0}
KEEP_RANK_OF = {keep_rank_label(r): r for r in KEEP_RANKS}
# The look-alikes-kept edit on the value projection alone (a lead the nodes do not offer: no site edits v without k)
VALUES = "rank-1, look-alikes kept, values only"
TWIN = "rank-1, look-alike twin"
KEEP = tuple(preset_keep(PRESET))


def name_of(mark: str) -> str:
    """What a user types into the preset: the character's first phrasing ("Mickey Mouse")."""
    return HARD.marks[mark].phrasings[0]


def pairs_of(mark: str, twin: bool) -> tuple[list[PromptPair], list[str]]:
    """The preset's pairs and neutral prompts for the character; with twin, its look-alike as the safe side."""
    pairs, neutral = load_preset(PRESET, name_of(mark))
    if twin and mark in LOOKALIKE_OF:
        pairs = [PromptPair(p.unsafe, p.safe.replace("a cartoon character", LOOKALIKE_OF[mark])) for p in pairs]
    return pairs, neutral


def scored_marks() -> tuple[str, ...]:
    """The characters, their look-alikes and their word-senses (a computer mouse)."""
    chars = HARD.of_group("character")
    return characters_and_lookalikes(HARD) + tuple(m for m in HARD.of_group("wordsense") if HARD.marks[m].near in chars)


def held_out(split_name: str) -> dict[str, list[str]]:
    """Per scored mark, its phrasings in the split (none of them in any extraction text: evaluate.split_of)."""
    out = {mark: phrasings_of(HARD, mark, split_name) for mark in scored_marks()}
    empty = [m for m, ps in out.items() if not ps]
    if empty:
        raise ValueError(
            f"no held-out {split_name} phrasing left for {', '.join(empty)}: give them more phrasings in worlds.py"
        )
    return out


def eval_prompts(split_name: str) -> dict[str, list]:
    """PROMPTS prompts per scored mark in its held-out phrasings; and clean prompts."""
    out = {
        mark: [u for u, _ in HARD.mark_prompts(mark, phrasings, PROMPTS, split_name)]
        for mark, phrasings in held_out(split_name).items()
    }
    out["clean"] = HARD.clean_prompts(CLEAN, f"characters/{split_name}")
    return out


def values_only(edit: RefusalEdit) -> RefusalEdit:
    """The edit with each layer's edit keys cut to the cross-attention value projection: the keys, and so where
    attention goes, stay as they were; only what the text tokens write changes."""
    return replace(
        edit,
        layers=tuple(
            replace(layer, edit_keys=tuple(k for k in layer.edit_keys if k.endswith(".v"))) for layer in edit.layers
        ),
    )


def edit_of(method: str, stats: RefusalStats, m: int) -> RefusalEdit:
    """The method's edit of one character from its statistics (extracted with the KEEP prompts and the ordinary text,
    which only the "look-alikes kept" edits use: they add rows, they change nothing else of the statistics)."""
    if method == NO_ORDINARY:
        return factorize(stats, ordinary_rank=0)
    if method == KEPT or method in STRENGTH_OF:
        return factorize(stats)
    if method in KEEP_RANK_OF:
        return factorize(stats, keep_rank=KEEP_RANK_OF[method])
    if method == VALUES:
        return values_only(factorize(stats))
    if method in ("rank-1", TWIN):
        return factorize(stats, keep_rank=0, ordinary_rank=0)
    if method == "rank-m":
        return subspace_edit(stats, m)
    return factorize(stats, method="closed_form")


def random_like(edit: RefusalEdit, draw: int) -> RefusalEdit:
    """A random orthonormal subspace of the edit's rank at each of its layers (seeded by draw), at the edit's strength:
    the reference for what removing that many directions costs this model whatever they are."""
    g = torch.Generator().manual_seed(9_000 + draw)
    rank = max(layer.basis.shape[0] for layer in edit.layers)
    Q = (
        torch.linalg.qr(torch.randn(edit.layers[0].dim, rank, generator=g, dtype=torch.float64))[0]
        .T.float()
        .contiguous()
    )
    return RefusalEdit(
        tuple(LayerEdit(layer.point, layer.edit_keys, Q, (max(layer.strengths),) * rank) for layer in edit.layers),
        dict(edit.meta),
    )


METHODS = ("rank-1", "rank-m", "closed_form", TWIN, NO_ORDINARY, KEPT, *(weaker(s) for s in WEAKER), VALUES, RANDOM)
DEV_ONLY = tuple(KEEP_RANK_OF)


def methods(split_name: str) -> tuple[str, ...]:
    return METHODS + (DEV_ONLY if split_name == "dev" else ())


def worst(r: dict) -> dict[str, float]:
    """One run's summary: the worst erased, kept character, look-alike, word-sense and kept overall; drift, change."""
    kinds = {m: HARD.marks[m].group for m in r["kept_after"]}
    pick = lambda group: [v for k, v in r["kept_after"].items() if kinds[k] == group]  # noqa: E731
    lowest = lambda xs: min(xs) if xs else float("nan")  # noqa: E731
    return {
        "erased": max(r["erased_after"].values()),
        "characters": lowest(pick("character")),
        "lookalikes": lowest(pick("lookalike")),
        "wordsenses": lowest(pick("wordsense")),
        "kept": min(r["kept_after"].values()),
        "drift": r["drift"],
        "change": r["change"],
    }


SUMMARY = ("erased", "characters", "lookalikes", "wordsenses", "kept", "drift", "change")


def summary(runs: list[dict]) -> dict:
    """A row's runs (each a worst()) and, per key of worst(), the mean and 95 % interval over training seeds."""
    return {"runs": runs, "worst": {key: interval_over_models(runs, key) for key in SUMMARY}}


def run(
    split_name: str = "dev",
    seeds: tuple[int, ...] = (0,),
    noise_seeds: tuple[int, ...] = (0,),
    m: int = 4,
    shown: Progress | None = None,
    steps: int = guided.STEPS,
) -> dict:
    """Every method on every training seed x noise seed. A row holds the mean render rates, drift and change over
    those runs, and each run's summary (worst) in "runs"; the random reference draws a new subspace per run."""
    shown = shown or Progress(quiet=True)
    evaluated = Groups(HARD, split_name, eval_prompts(split_name))
    groups, spans, names = evaluated.prompts, evaluated.slices(), list(evaluated.prompts)
    ctx, empty = evaluated.ctx, contexts([""], HARD.text_pad)
    chosen = methods(split_name)
    per_seed = 2 * len(EIGHT) + len(noise_seeds) * (1 + 2 * len(chosen))
    advance = shown.bar(len(seeds) * per_seed, f"characters ({split_name})")
    checkpoint = Checkpoint(
        f"characters-{split_name}", {"seeds": seeds, "noise_seeds": noise_seeds, "m": m, "steps": steps}, shown.say
    )

    def rates(latents: torch.Tensor) -> dict[str, float]:
        return {n: scoring.render_rate(HARD, latents[spans[n]], groups[n], (n,)) for n in names if n != "clean"}

    def seed_runs(seed: int) -> list[tuple[str, int, dict]]:
        """(method, number of targets, run) for every noise seed on the model of this training seed."""
        runs = []
        bed = Bed(HARD, seed, log=shown.say, progress=shown.bar)
        stats = {}
        for twin in (False, True):
            for mark in EIGHT:  # the site reads text only: the probe latent (noise seed 0) does not enter
                stats[mark, twin] = bed.extract_pairs(
                    *pairs_of(mark, twin), SITE, defaults.SIGMAS, 0, KEEP, ordinary=tuple(ordinary_text())
                )
                advance()
        edits = {}  # (method, targets) -> (edit, strength), the same for every noise seed
        for method in (x for x in chosen if x != RANDOM):  # the reference is drawn per run, from KEPT's rank
            for targets in (ONE, EIGHT):
                parts = [edit_of(method, stats[t, method == TWIN], m) for t in targets]
                strength = STRENGTH_OF.get(method, defaults.STRENGTH)
                # eight: the strengths go into the joined edit, which then applies at 1
                edits[method, targets] = (
                    (parts[0], strength)
                    if len(parts) == 1
                    else (RefusalEdit.combine([(e, strength) for e in parts]), 1.0)
                )
        for ns in noise_seeds:
            noise = torch.randn(
                len(evaluated.flat), *HARD.latent_shape, generator=torch.Generator().manual_seed(3_000 + ns)
            )
            base = guided.generate(bed.model, ctx, empty, noise, steps)
            advance()
            before = rates(base)
            for method in chosen:
                for targets in (ONE, EIGHT):
                    edit, strength = (
                        (random_like(edits[KEPT, targets][0], 100 * seed + ns), 1.0)
                        if method == RANDOM
                        else edits[method, targets]
                    )
                    after_latents = guided.generate(edited_model(bed.model, edit, strength), ctx, empty, noise, steps)
                    after = rates(after_latents)
                    kept = [n for n in names if n != "clean" and n not in targets]
                    clean = spans["clean"]
                    runs.append(
                        (
                            method,
                            len(targets),
                            {
                                "train_seed": seed,
                                "noise_seed": ns,
                                "rank": max(layer.basis.shape[0] for layer in edit.layers),
                                "erased_before": {t: before[t] for t in targets},
                                "erased_after": {t: after[t] for t in targets},
                                "kept_after": {n: after[n] for n in kept},
                                "kept_before": {n: before[n] for n in kept},
                                "drift": scoring.drift(HARD, base[clean], after_latents[clean], groups["clean"]),
                                "change": scoring.output_change(base[clean], after_latents[clean]),
                            },
                        )
                    )
                    advance()
        return runs

    found: dict[tuple[str, int], list[dict]] = {}
    for seed in seeds:
        part = checkpoint.part(f"training seed {seed}", lambda seed=seed: seed_runs(seed), advance, per_seed)
        for method, n_targets, one in part:
            found.setdefault((method, n_targets), []).append(one)
    checkpoint.finished()
    rows = []
    for (method, targets), runs in found.items():

        def mean(key: str, runs: list[dict] = runs) -> dict:
            return {k: sum(r[key][k] for r in runs) / len(runs) for k in runs[0][key]}

        rows.append(
            {
                "method": method if method != "rank-m" else f"rank-{m}",
                "targets": targets,
                "rank": max(r["rank"] for r in runs),
                **{key: mean(key) for key in ("erased_before", "erased_after", "kept_after", "kept_before")},
                "drift": sum(r["drift"] for r in runs) / len(runs),
                "change": sum(r["change"] for r in runs) / len(runs),
                **summary([{"train_seed": r["train_seed"], "noise_seed": r["noise_seed"], **worst(r)} for r in runs]),
            }
        )
    return {
        "split": split_name,
        "train_seeds": list(seeds),
        "noise_seeds": list(noise_seeds),
        "site": SITE,
        "prompts_per_mark": PROMPTS,
        "clean_prompts": CLEAN,
        "phrasings": {mark: len(ps) for mark, ps in held_out(split_name).items()},
        "held_out": held_out(split_name),
        "one": list(ONE),
        "eight": list(EIGHT),
        "lookalikes": [m for m in scored_marks() if HARD.marks[m].group == "lookalike"],
        "wordsenses": [m for m in scored_marks() if HARD.marks[m].group == "wordsense"],
        "keep_prompts": list(KEEP),
        "keep_rank": defaults.KEEP_RANK,
        "ordinary_rank": defaults.ORDINARY_RANK,
        "ordinary_strength": defaults.ORDINARY_STRENGTH,
        "ordinary_phrases": len(ordinary_text()),
        "rows": rows,
        "seconds": round(checkpoint.seconds, 1),
    }


def text_table(result: dict) -> str:
    """Per row, over its runs: the mean of each run's worst erased and worst kept, mean drift with its 95 % interval."""
    rows = []
    for r in result["rows"]:
        er, kept, dr = (r["worst"][key] for key in ("erased", "kept", "drift"))
        rows.append(
            [
                r["method"],
                str(r["targets"]),
                str(r["rank"]),
                f"{er['mean']:.0%}",
                f"{kept['mean']:.0%}",
                f"{dr['mean']:.3f} [{dr['lo']:.3f}, {dr['hi']:.3f}]",
                f"{r['worst']['change']['mean']:.3f}",
            ]
        )
    return table(
        ["method", "erased", "rank", "erased after (worst)", "kept after (worst)", "drift [95 %]", "change"], rows
    )


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
    ap.add_argument(
        "--seeds",
        type=seeds_of,
        default=TRAIN_SEEDS,
        help="training seeds (0 ships with the pack; the others train on first use, about 10 min each, and are cached)",
    )
    ap.add_argument(
        "--noise-seeds",
        type=seeds_of,
        default=NOISE_SEEDS,
        help="sampling noise seeds, each run on every training seed",
    )
    ap.add_argument("--ranks", type=int, default=4, help="m of the rank-m subspace edit")
    ap.add_argument("--out", help="also write the results as JSON to this file ({split: result})")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    splits = ("dev", "test") if args.split == "both" else (args.split,)
    shown = Progress(args.quiet)
    results = {name: run(name, args.seeds, args.noise_seeds, m=args.ranks, shown=shown) for name in splits}
    for result in results.values():
        print(
            f"named characters, {result['split']} split, training seeds {result['train_seeds']} x noise seeds "
            f"{result['noise_seeds']}, {PROMPTS} prompts per mark"
        )
        print(text_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"made_by": provenance.made_by(), **results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
