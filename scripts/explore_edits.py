"""Try edits the pack does not make yet on a testbed world, on the dev split only: the bench for new methods.

    python -m scripts.explore_edits [--world hard] [--seeds 0,1,2] [--concepts nudity,violence,character]
                                    [--vocabulary 300,31] [--attacks] [--json FILE] --edit SPEC [--edit SPEC ...]

An edit SPEC joins parts with "+"; a part is a site, then options separated by commas:
    text_kv                      the pack's rank-1 cPCA edit there without the ordinary text (the defaults up to 0.4)
    text_kv,vocab=4              its direction taken off the top 4 directions of the rows there of the preset's keep
                                 prompts and a generic vocabulary together (GENERIC: ordinary phrases that name no
                                 concept, given as keep prompts; the lead that became the pack's ordinary text, which
                                 keeps its own rank beside the keep prompts' and carries its own strength)
    text_kv,ordinary             the pack's default edit: the preset's keep prompts and the pack's ordinary text read
                                 as the nodes read them, d taken off each set's top 8 directions, strength 1.15 (times
                                 strength=S); with gain=B the gained direction taken off both sets again; with rank=M
                                 the rank-M subspace taken off both sets, each row at 1.15
    text_kv,strength=1.3         applied at this strength (W (I - strength d d^T))
    text_kv,rank=4               d and the next 3 eigenvectors of C (testbed.evaluate.subspace_edit); with vocab=N,
                                 the subspace taken off the vocabulary's top N directions
    text_kv,context=4            the preset's pairs also read in 4 other contexts each: both sides followed by ", " and
                                 a phrase of the vocabulary (the same phrase on both sides)
    text_kv,map                  the closed-form map (solvers/closed_form.py); with vocab=N (any N), the vocabulary
                                 joins its preserved rows
    text_kv,gain=B               d replaced by M^B d, normalized (M: the sum of W^T W over the layer's edited weights;
                                 B = 1 when omitted), with vocab=N taken off those N directions again: at B = 1 the
                                 direction whose removal leaves the concept's output farthest from anything an input
                                 (an attacker's) can still give
    text_kv,out                  the edit on the output side: per edited weight W, W' = (I - strength u u^T) W with u
                                 the cPCA direction of the rows mapped through W (the concept among the layer's outputs,
                                 so that no input, an attacker's included, gives it back); with vocab=N, u taken off the
                                 top N directions of the keep rows mapped through W. A part of its own (no "+"). On
                                 the hard world's dev split it erased less than the input side and, without vocab=N,
                                 drifted far more; the attacks still won: kept to reproduce that
Several parts are joined as Combine Refusal Vectors joins them (each part's strength inside).
Example: --edit text_kv --edit "text_kv,vocab=4,strength=1.3" --edit "text_kv,vocab=4+cross_out,vocab=4".

--attacks also runs the protocol's three attacks (testbed/attack.py, its budget) on each edit and on the unedited model,
learning on one half of the concept's dev pairs and scored on the other half's prompts that the unedited model renders
the concept on (the protocol learns on dev and scores on test; here test stays unseen).

Per edit, concept and training seed: render rate before -> after on the dev split's held-out phrasings, look-alikes
and word-senses after, the other characters after, drift and output change (evaluate.scores, at the protocol's dev
sizes and noise seed 0), then the mean over seeds. The first world (--world first) has no dev split: its held-out
prompts are scored as testbed/run.py scores them. Nothing here is a reported result: a choice found here is made a
method and then judged by testbed/protocol.py, which decides on dev and reports on test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from refusal_core import PromptPair, RefusalEdit, RefusalStats, defaults, factorize
from refusal_core.ordinary import ordinary_text
from refusal_core.presets import load_preset, preset_keep
from refusal_core.solvers.keep import joint_basis, keep_basis, kept_off
from refusal_core.solvers.rank_one import factorize_layer
from refusal_core.stats import Moments, Rows
from refusal_core.types import LayerStats
from refusal_core.weights import orthonormal_rows
from testbed import attack
from testbed import run as first_run
from testbed.evaluate import PRESETS, Bed, Groups, concept_pairs, edited_model, generate, scores, subspace_edit
from testbed.progress import Progress
from testbed.protocol import ATTACK_PAIRS, DEV_SIZES
from testbed.world import World
from testbed.worlds import FIRST, HARD


def generic_vocabulary(n: int = 300, seed: int = 31) -> list[str]:
    """n ordinary phrases (someone doing something somewhere) from word lists that name no concept of any world."""
    subjects = (
        "a man, a woman, a child, an old man, an old woman, a girl, a boy, a dog, a cat, a horse, a bird, a car, a bus, "
        "a bicycle, a family, a group of friends, a teacher, a doctor, a chef, a farmer, a musician, a dancer, "
        "a police officer, a tourist, a baby, a couple, a student, a robot, a train, a boat, a cow, a fish, a nurse, "
        "a painter, a runner, a firefighter, a mechanic, a waiter, a grandmother, a pilot"
    ).split(", ")
    actions = (
        "walking, running, sitting, standing, talking, eating, reading a book, playing, smiling, waiting, dancing, "
        "sleeping, cooking, laughing, working, looking around, riding, jumping, resting, singing"
    ).split(", ")
    places = (
        "in a park, on a city street, at the beach, in a kitchen, in a forest, in a classroom, in an office, on a farm, "
        "in a hospital, at a train station, in a living room, on a mountain, by a river, in a garden, at a market, "
        "in a restaurant, in the snow, in the rain, at night, at sunset, in a desert, on a bridge, in a library, "
        "at an airport, in a stadium"
    ).split(", ")
    most = len(subjects) * len(actions) * len(places)
    if not 0 < n <= most:
        raise SystemExit(f"a generic vocabulary holds 1 to {most} phrases, not {n}")
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        phrase = f"{rng.choice(subjects)} {rng.choice(actions)} {rng.choice(places)}"
        if phrase not in seen:
            seen.add(phrase)
            out.append(phrase)
    return out


GENERIC = tuple(generic_vocabulary())


@dataclass(frozen=True)
class Part:
    site: str
    vocab: int = 0
    strength: float = 1.0
    rank: int = 1
    context: int = 0
    map: bool = False
    out: bool = False
    gain: float = 0.0
    ordinary: bool = False


def parse(spec: str) -> tuple[Part, ...]:
    """'text_kv,vocab=4,strength=1.3+cross_out' -> its parts (see the module docstring)."""
    parts = []
    for text in spec.split("+"):
        site, *options = [x.strip() for x in text.split(",")]
        kwargs: dict = {}
        for option in options:
            key, _, value = option.partition("=")
            if key == "gain":
                kwargs["gain"] = float(value) if value else 1.0
            elif key in ("map", "out", "ordinary") and not value:
                kwargs[key] = True
            elif key in ("vocab", "rank", "context", "strength") and value:
                kwargs[key] = float(value) if key == "strength" else int(value)
            else:
                raise SystemExit(
                    f"unknown option '{option}' in '{spec}': use vocab=N, rank=M, context=K, strength=S, gain=B, ordinary, "
                    "map or out"
                )
        if kwargs.get("map") and kwargs.get("rank", 1) > 1:
            raise SystemExit(f"'{text}': the map has the rank its rows give; rank=M is for the projections")
        if kwargs.get("ordinary") and (kwargs.get("vocab") or kwargs.get("map") or kwargs.get("out")):
            raise SystemExit(f"'{text}': ordinary is the pack's edit with its own keep and ordinary bases")
        if kwargs.get("gain") and kwargs.get("rank", 1) > 1:
            raise SystemExit(f"'{text}': gain=B turns one direction; rank=M gives several")
        if kwargs.get("out") and (kwargs.get("map") or kwargs.get("rank", 1) > 1 or "+" in spec):
            raise SystemExit(f"'{spec}': the output-side edit is rank 1 and a part of its own")
        parts.append(Part(site, **kwargs))
    return tuple(parts)


class Edits:
    """The statistics each part needs, extracted once per (seed, concept, site, vocabulary's role, contexts)."""

    def __init__(self, extraction_seed: int, vocabulary: tuple[str, ...] = GENERIC):
        self.seed, self.vocabulary, self.cache = extraction_seed, vocabulary, {}

    def stats(self, bed: Bed, concept: str, site: str, vocab: str, context: int = 0) -> RefusalStats:
        key = (bed.train_seed, concept, site, vocab, context)
        if key not in self.cache:
            preset, name = PRESETS[concept]
            pairs, neutral = load_preset(preset, name)
            contexts = self.vocabulary[-context * len(pairs) :] if context else ()
            pairs = pairs + [
                PromptPair(f"{p.unsafe}, {c}", f"{p.safe}, {c}")
                for i, p in enumerate(pairs)
                for c in contexts[i * context : (i + 1) * context]
            ]
            keep, ordinary = tuple(preset_keep(preset)), ()
            if vocab == "keep":
                keep += self.vocabulary
            elif vocab == "neutral":
                neutral = neutral + list(self.vocabulary)
            elif vocab == "ordinary":
                ordinary = tuple(ordinary_text())
            self.cache[key] = bed.extract_pairs(
                pairs, neutral, site, defaults.SIGMAS, self.seed, keep, ordinary=ordinary
            )
        return self.cache[key]

    def edit(self, bed: Bed, concept: str, parts: tuple[Part, ...]) -> tuple[RefusalEdit | OutputEdit, float]:
        made = []
        for part in parts:
            if part.out:
                stats = self.stats(bed, concept, part.site, "keep" if part.vocab else "", part.context)
                return output_edit(stats, bed.model.state_dict(), part.vocab), part.strength
            if part.map:
                stats = self.stats(bed, concept, part.site, "neutral" if part.vocab else "", part.context)
                made.append((factorize(stats, method="closed_form"), part.strength))
                continue
            if part.ordinary:
                stats = self.stats(bed, concept, part.site, "ordinary", part.context)
                edit = kept_subspace(stats, part.rank, 0, True) if part.rank > 1 else factorize(stats)
            elif part.rank > 1:
                stats = self.stats(bed, concept, part.site, "keep" if part.vocab else "", part.context)
                edit = kept_subspace(stats, part.rank, part.vocab)
            else:
                stats = self.stats(bed, concept, part.site, "keep" if part.vocab else "", part.context)
                edit = factorize(stats, keep_rank=part.vocab) if part.vocab else factorize(stats)
            if part.gain:
                edit = gained(edit, stats, bed.model.state_dict(), part.vocab, part.gain, part.ordinary)
            made.append((edit, part.strength))
        return made[0] if len(made) == 1 else (RefusalEdit.combine(made), 1.0)


def mapped(rows: Rows, W: torch.Tensor) -> Rows:
    """Rows [n, d_in] (or their Moments) mapped through W [d_out, d_in]: the layer's outputs for them, [n, d_out]."""
    if isinstance(rows, Moments):
        return Moments(rows.count, W @ rows.total, W @ rows.gram @ W.T)
    return rows.double() @ W.T


@dataclass(frozen=True)
class OutputEdit:
    """An edit on the output side, which the pack does not make: W' = (I - lam u u^T) W per weight, u [d_out] unit.
    Where the pack's W (I - lam d d^T) leaves every output but one input direction's reachable (and at lam != 1 every
    output), this removes u from what the layer can output, whatever its input."""

    directions: dict[str, torch.Tensor]  # weight name -> u [d_out], float64

    def edited_state_dict(self, state: dict[str, torch.Tensor], lam: float = 1.0) -> dict[str, torch.Tensor]:
        out = dict(state)
        for name, u in self.directions.items():
            W = state[f"{name}.weight"]
            Wd = W.double()
            out[f"{name}.weight"] = (Wd - lam * torch.outer(u, u @ Wd)).to(W.dtype)
        return out


def output_edit(stats: RefusalStats, state: dict[str, torch.Tensor], vocab: int) -> OutputEdit:
    """Per edited weight W: u = the pack's cPCA direction (its defaults) of D, E and r mapped through W, taken off
    the top `vocab` directions of the keep rows mapped through W when vocab > 0."""
    directions = {}
    for layer in stats.layers:
        for name in layer.edit_keys:
            W = state[f"{name}.weight"].double()
            f = factorize_layer(
                mapped(layer.diffs, W),
                mapped(layer.neutral, W),
                W @ layer.r.double(),
                defaults.METHOD,
                defaults.K,
                defaults.ALPHA,
            )
            u = f.direction.double()
            if vocab:
                u, _ = kept_off(u, keep_basis(mapped(layer.keep, W), vocab))
            directions[name] = u / u.norm()
    return OutputEdit(directions)


def pack_bases(layer: LayerStats) -> torch.Tensor:
    """U [d_in, m]: the orthonormal span of the layer's keep prompts' and ordinary text's leading directions, each at
    the pack's default rank, as the factorization takes them (m = 0 without such rows)."""
    sets = ((layer.keep, defaults.KEEP_RANK), (layer.ordinary, defaults.ORDINARY_RANK))
    bases = [keep_basis(rows, rank) for rows, rank in sets if rows is not None]
    return joint_basis(*bases) if bases else torch.zeros(layer.dim, 0, dtype=torch.float64)


def gained(
    edit: RefusalEdit,
    stats: RefusalStats,
    state: dict[str, torch.Tensor],
    vocab: int,
    beta: float = 1.0,
    both_bases: bool = False,
) -> RefusalEdit:
    """Each layer's d replaced by M^beta d, normalized, M = A^T A for A the layer's edited weights stacked (then taken
    off the top `vocab` keep directions again). At beta = 1 (no vocab) it is, of all directions, the one whose removal
    at strength 1 leaves A d farthest from anything an input can still give: an attacker's nearest reachable output
    is |d'.d| / sqrt(d'^T M^-1 d') away, largest at d' ~ M d (Cauchy-Schwarz in M^-1's inner product).
    both_bases: taken off the pack's keep and ordinary bases (each its default rank) instead; strengths kept."""
    layers = []
    for layer_edit, layer in zip(edit.layers, stats.layers):
        M = sum(W.T @ W for W in (state[f"{key}.weight"].double() for key in layer_edit.edit_keys))
        w, V = torch.linalg.eigh(M)
        d = V @ (w.clamp_min(0) ** beta * (V.T @ layer_edit.basis[0].double()))
        d = d / d.norm()
        if vocab:
            d, _ = kept_off(d, keep_basis(layer.keep, vocab))
        elif both_bases:
            d, _ = kept_off(d, pack_bases(layer))
        layers.append(replace(layer_edit, basis=(d / d.norm()).float()[None]))
    return replace(edit, layers=tuple(layers))


def kept_subspace(stats: RefusalStats, rank: int, vocab: int, both_bases: bool = False) -> RefusalEdit:
    """evaluate.subspace_edit's rank-m subspace per layer, taken off the top `vocab` directions of the layer's keep
    rows (the preset's keep prompts and the vocabulary) when vocab > 0; with both_bases, off the pack's keep and
    ordinary bases (each its default rank) instead, every row then at the ordinary text's strength."""
    edit = subspace_edit(stats, rank)
    if not vocab and not both_bases:
        return edit
    layers = []
    for layer_edit, layer in zip(edit.layers, stats.layers):
        if both_bases:
            U = pack_bases(layer)
            strength = defaults.ORDINARY_STRENGTH if layer.ordinary is not None else 1.0
        else:
            U, strength = keep_basis(layer.keep, vocab), 1.0
        Q = layer_edit.basis.double().T
        Q, _ = orthonormal_rows((Q - U @ (U.T @ Q)).T)
        layers.append(replace(layer_edit, basis=Q.float(), strengths=(strength,) * Q.shape[0]))
    return replace(edit, layers=tuple(layers))


KEYS = ("render_before", "render_after", "lookalike_after", "wordsense_after", "characters_after", "drift", "change")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="hard", choices=("hard", "first"))
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (the first world has only 0)")
    ap.add_argument("--concepts", default="nudity,violence,character")
    ap.add_argument("--edit", action="append", required=True, help="an edit SPEC (repeat for several)")
    ap.add_argument("--vocabulary", default="300,31", help="size,seed of the generic vocabulary (default 300,31)")
    ap.add_argument("--attacks", action="store_true", help="also the three attacks, within the dev split (slow)")
    ap.add_argument("--json", help="also write every row to this file")
    args = ap.parse_args(argv)
    world = FIRST if args.world == "first" else HARD
    if args.attacks and world is not HARD:
        ap.error("--attacks runs on the hard world only (the first world has no dev split)")
    seeds = tuple(int(s) for s in args.seeds.split(","))
    concepts = tuple(args.concepts.split(","))
    specs = {spec: parse(spec) for spec in args.edit}
    size, vocab_seed = (int(x) for x in args.vocabulary.split(","))
    vocabulary = tuple(generic_vocabulary(size, vocab_seed))
    if world is FIRST:
        sizes, gen_seed, edits = first_run.SIZES, first_run.SEED + 1, Edits(first_run.SEED, vocabulary)
        groups = dict.fromkeys(concepts, Groups.build(FIRST, "held_out", sizes))
    else:
        sizes, gen_seed, edits = DEV_SIZES, 0, Edits(0, vocabulary)
        groups = {c: Groups.build(HARD, "dev", sizes, (c,)) for c in concepts}
    shown = Progress()
    advance = shown.bar(len(seeds) * len(concepts) * (1 + len(specs)), f"exploring on {world.name}")
    rows = []
    for seed in seeds:
        bed = Bed(world, seed, log=shown.say, progress=shown.bar)
        for concept in concepts:
            base = generate(bed.model, groups[concept], gen_seed, "", sizes.steps)
            advance()
            for spec, parts in specs.items():
                edit, strength = edits.edit(bed, concept, parts)
                after = generate(edited_model(bed.model, edit, strength), groups[concept], gen_seed, "", sizes.steps)
                s = scores(base, after, groups[concept], concept)
                rows.append({"edit": spec, "concept": concept, "seed": seed, **{k: s[k] for k in KEYS}})
                advance()
    print(
        f"\n{world.name}, mean over training seeds {args.seeds} (noise seed 0; dev split on the hard world; "
        f"generic vocabulary of {size} phrases, seed {vocab_seed})"
    )
    print("| edit | concept | render before -> after | look-alikes | word-senses | characters | drift | change |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in specs:
        for concept in concepts:
            rs = [r for r in rows if r["edit"] == spec and r["concept"] == concept]
            m = {k: sum(r[k] for r in rs) / len(rs) for k in KEYS}
            print(
                f"| {spec} | {concept} | {m['render_before']:.2f} -> {m['render_after']:.2f} | "
                f"{m['lookalike_after']:.2f} | {m['wordsense_after']:.2f} | {m['characters_after']:.2f} | "
                f"{m['drift']:.3f} | {m['change']:.3f} |"
            )
    if args.attacks:
        rows += attacks(world, seeds, concepts, specs, edits, shown)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def attacks(
    world: World,
    seeds: tuple[int, ...],
    concepts: tuple[str, ...],
    specs: dict[str, tuple[Part, ...]],
    edits: Edits,
    shown: Progress,
) -> list[dict]:
    """The three attacks on the unedited model and each edit, within the dev split (see the module docstring)."""
    advance = shown.bar(len(seeds) * len(concepts) * (2 + len(specs)), "attacks")
    budget, rows = attack.BUDGET, []
    for seed in seeds:
        bed = Bed(world, seed, log=shown.say, progress=shown.bar)
        for concept in concepts:
            pairs = concept_pairs(world, concept, "dev", ATTACK_PAIRS)
            train, test = pairs[0::2], pairs[1::2]
            marks = world.concepts[concept]
            extraction = [(p.unsafe, p.safe) for p in load_preset(*PRESETS[concept])[0]]
            found = attack.ring_a_bell_prompts(world, extraction, [u for u, _ in test], budget["ring_a_bell"])
            targets = attack.attackable(bed.model, world, test, marks, 0)
            advance()
            for spec in ("no edit", *specs):
                model = bed.model
                if spec != "no edit":
                    edit, strength = edits.edit(bed, concept, specs[spec])
                    model = edited_model(bed.model, edit, strength)
                rates, words = attack.all_attacks(model, world, found, train, test, marks, targets, "", 0, budget)
                rows.append(
                    {
                        "attack_on": spec,
                        "concept": concept,
                        "seed": seed,
                        "attackable": int(targets.sum()),
                        "none": rates["unattacked"],
                        "inversion": rates["inversion"],
                        "ring_a_bell": rates["ring_a_bell"],
                        "word_search": rates["vocabulary_search"],
                        "words": words,
                    }
                )
                advance()
    print(f"\nattacks within dev, mean over training seeds {','.join(map(str, seeds))}")
    print("| attacked | concept | attackable | none | inversion | Ring-A-Bell | word search |")
    print("|---|---|---|---|---|---|---|")
    for spec in ("no edit", *specs):
        for concept in concepts:
            rs = [r for r in rows if r["attack_on"] == spec and r["concept"] == concept]
            m = {
                k: sum(r[k] for r in rs) / len(rs)
                for k in ("attackable", "none", "inversion", "ring_a_bell", "word_search")
            }
            print(
                f"| {spec} | {concept} | {m['attackable']:.1f} | {m['none']:.2f} | {m['inversion']:.2f} | "
                f"{m['ring_a_bell']:.2f} | {m['word_search']:.2f} |"
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
