"""What a generated latent renders, read exactly from a world's known patterns; and which phrasings are scored.

The base (subject and scene) is read by least squares on the world's base patterns; each part by a matched
filter of the rest against all its renderings for the prompt's subject (every variant, cell and frame). A mark
is rendered in a frame when every one of its parts is; a video renders it when any frame does.
"""

from __future__ import annotations

import random
import re

import torch

from .world import World, WorldPrompt

RENDER_THRESHOLD = 0.5  # a frame carries a part when its matched coefficient exceeds this (1 = as trained)


def contains(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, case-insensitively ("naked" is in "a naked man", not in "nakedness")."""
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None


def splits(world: World, reserved: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    """Per mark, its phrasings for scoring, split into dev and test once, before anything runs.

    reserved: every text an edit is built from (extraction pairs, presets, keep and neutral prompts). A phrasing
    that occurs in one of them, or that contains a phrasing of its own mark that does ("bare naked" when the pairs
    say "naked"), is never scored. The rest are split by a fixed shuffle per mark into halves, phrasings that contain
    one another (of any mark) always on the same side, so that no dev prompt contains a test phrasing."""
    key = ("splits", reserved)
    if key in world.memo:
        return world.memo[key]
    free = {}
    for mark, spec in world.marks.items():
        used = [p for p in spec.phrasings if any(contains(t, p) for t in reserved)]
        free[mark] = [p for p in spec.phrasings if p not in used and not any(contains(p, u) for u in used)]
    everything = [(m, p) for m, ps in free.items() for p in ps]
    side: dict[tuple[str, str], str] = {}
    for mark, phrasings in free.items():
        order = list(phrasings)
        random.Random(f"split/{mark}").shuffle(order)
        count = {"dev": 0, "test": 0}
        for phrase in order:
            if (mark, phrase) not in side:
                to = "dev" if count["dev"] <= count["test"] else "test"
                for linked in _linked(mark, phrase, everything):
                    side[linked] = to
            count[side[mark, phrase]] += 1
    world.memo[key] = {
        m: {s: sorted(p for p in ps if side[m, p] == s) for s in ("dev", "test")} for m, ps in free.items()
    }
    return world.memo[key]


def _linked(mark: str, phrase: str, everything: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (mark, phrasing)s linked to this one by containment, directly or through others."""
    seen, todo = {(mark, phrase)}, [phrase]
    while todo:
        p = todo.pop()
        for other in everything:
            if other not in seen and (contains(p, other[1]) or contains(other[1], p)):
                seen.add(other)
                todo.append(other[1])
    return seen


def read_base(world: World, latents: torch.Tensor, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """latents [B, C, T, H, W] -> (base name -> [B] least-squares coefficient, the rest [B, C, T, H, W])."""
    A = world.patterns(seed)["base"].flatten(1).T.double()  # [C*T*H*W, n_base]
    Y = latents.flatten(1).T.double()
    coef = torch.linalg.lstsq(A, Y).solution
    rest = (Y - A @ coef).T.reshape(latents.shape).float()
    return {n: coef[i].float() for i, n in enumerate(world.base_names)}, rest


def _in_cells(world: World, x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, T, cells, C, *cell]."""
    h, w = world.cell
    return torch.stack([x[:, :, :, y : y + h, xx : xx + w] for y, xx in world.cells], dim=2).transpose(1, 3)


def _filters(world: World, part: str, subject: str, seed: int = 0) -> torch.Tensor:
    """[variants, T, C, *cell]: the part's renderings, each divided by its squared norm (a matched filter reads 1 on itself)."""
    key = ("filters", part, subject, seed)
    if key not in world.memo:
        R = torch.stack(
            [
                torch.stack([world.rendering(part, subject, v, t, seed) for t in range(world.latent_shape[1])])
                for v in range(world.variants)
            ]
        )
        world.memo[key] = R / R.pow(2).sum((2, 3, 4), keepdim=True)
    return world.memo[key]


def part_scores(world: World, rest: torch.Tensor, prompts: list[WorldPrompt], part: str, seed: int = 0) -> torch.Tensor:
    """[B, T]: per frame the largest matched coefficient of the part over its variants and cells, for each prompt's own
    subject, in `rest` (latents without their base, read_base)."""
    R = torch.stack([_filters(world, part, p.subject, seed) for p in prompts])  # [B, V, T, C, *cell]
    coef = torch.einsum("btkcij,bvtcij->btvk", _in_cells(world, rest), R)
    return coef.flatten(2).amax(2)


def mark_scores(
    world: World,
    latents: torch.Tensor,
    prompts: list[WorldPrompt],
    mark: str,
    seed: int = 0,
    rest: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T] per frame: the smallest of the mark's parts' scores (1 = rendered as trained, ~0 absent)."""
    rest = read_base(world, latents, seed)[1] if rest is None else rest
    return torch.stack([part_scores(world, rest, prompts, part, seed) for part in world.parts_of(mark)]).amin(0)


def rendered(
    world: World, latents: torch.Tensor, prompts: list[WorldPrompt], marks: tuple[str, ...], seed: int = 0
) -> torch.Tensor:
    """[B] bool: the video carries any of the marks in any frame."""
    rest = read_base(world, latents, seed)[1]
    scores = torch.stack([mark_scores(world, latents, prompts, m, seed, rest) for m in marks])  # [M, B, T]
    return (scores > RENDER_THRESHOLD).any(dim=2).any(dim=0)


def render_rate(
    world: World, latents: torch.Tensor, prompts: list[WorldPrompt], marks: tuple[str, ...], seed: int = 0
) -> float:
    return float(rendered(world, latents, prompts, marks, seed).float().mean())


def drift(world: World, before: torch.Tensor, after: torch.Tensor, prompts: list[WorldPrompt], seed: int = 0) -> float:
    """Mean |change| of each prompt's own subject and scene coefficients (~1 before) between two generations."""
    cb, _ = read_base(world, before, seed)
    ca, _ = read_base(world, after, seed)
    moves = [
        abs(float(ca[n][i] - cb[n][i]))
        for i, p in enumerate(prompts)
        for n in (f"subject:{p.subject}", f"scene:{p.scene}")
    ]
    return sum(moves) / len(moves)


def output_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean relative L2 change of generated latents [N, ...]."""
    return float(((after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)).mean())
