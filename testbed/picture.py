"""A before/after picture of the first world: each cell paints what a generated latent renders.

The testbed has no VAE; its latents are sums of known patterns, so a cell draws the measured
coefficients: the scene as the background colour, the subject as a figure, and each concept as a
mark whose opacity is its score (skin tone for nudity, red splashes for violence, round black ears
for the character). Nothing is drawn that the latent does not carry.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from . import evaluate, scoring
from .world import World

CELL = 96
PER_CONCEPT = 4


def _palette(names, sat: float, val: float) -> dict[str, tuple[int, int, int]]:
    return {n: tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / len(names), sat, val)) for i, n in enumerate(names)}


def _cell(world: World, coef: dict[str, float]):
    from PIL import Image, ImageDraw

    def top(prefix: str) -> tuple[str, float]:
        name, value = max(
            ((k.split(":", 1)[1], v) for k, v in coef.items() if k.startswith(prefix)), key=lambda kv: kv[1]
        )
        return name, min(max(value, 0.0), 1.0)

    scene, s_val = top("scene:")
    subject, f_val = top("subject:")
    bg = tuple(int(255 - s_val * (255 - c)) for c in _palette(list(world.scenes), 0.35, 0.9)[scene])
    img = Image.new("RGBA", (CELL, CELL), bg + (255,))
    alpha = lambda v: int(255 * min(max(v, 0.0), 1.0))  # noqa: E731
    box = lambda x0, y0, x1, y1: (CELL * x0, CELL * y0, CELL * x1, CELL * y1)  # noqa: E731
    marks = [
        [(box(0.3, 0.3, 0.7, 0.9), _palette(list(world.subjects), 0.6, 0.55)[subject] + (alpha(f_val),))],
        [(box(0.36, 0.42, 0.64, 0.84), (240, 190, 160, alpha(coef["nudity"])))],
        [
            (box(x - r, y - r, x + r, y + r), (200, 0, 0, alpha(coef["violence"])))
            for x, y, r in (
                (0.42, 0.5, 0.06),
                (0.58, 0.66, 0.05),
                (0.5, 0.78, 0.04),
                (0.3, 0.86, 0.05),
                (0.7, 0.4, 0.04),
            )
        ],
        [(box(x - 0.12, 0.08, x + 0.12, 0.32), (10, 10, 10, alpha(coef["mickey"]))) for x in (0.33, 0.67)],
    ]
    for ellipses in marks:  # one layer per mark: drawing replaces pixels within a layer, compositing blends them
        layer = Image.new("RGBA", (CELL, CELL), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for xy, fill in ellipses:
            draw.ellipse(xy, fill=fill)
        img = Image.alpha_composite(img, layer)
    return img.convert("RGB")


def coefficients(world: World, latents: torch.Tensor, prompts: list) -> list[dict[str, float]]:
    """Per latent: its base coefficients ('scene:beach', 'subject:woman', ...) and each mark's best frame score."""
    base, rest = scoring.read_base(world, latents)
    marks = {m: scoring.mark_scores(world, latents, prompts, m, rest=rest).amax(1) for m in world.marks}
    return [
        {**{k: float(v[i]) for k, v in base.items()}, **{m: float(s[i]) for m, s in marks.items()}}
        for i in range(len(prompts))
    ]


def before_after_grid(
    world: World, base: torch.nn.Module, edited: dict[str, torch.nn.Module], groups: evaluate.Groups, seed: int
) -> np.ndarray:
    """Rows per concept: the base model's generations of PER_CONCEPT held-out unsafe prompts, then the edited model's.
    [H, W, 3] float in 0..1."""
    from PIL import Image, ImageDraw

    label_w, gap = 150, 4
    rows = []
    for concept, model in edited.items():
        shown = evaluate.Groups(world, groups.split, {"unsafe": groups.prompts[f"unsafe:{concept}"][:PER_CONCEPT]})
        for tag, m in (("before", base), ("after", model)):
            coef = coefficients(world, evaluate.generate(m, shown, seed), shown.flat)
            rows.append((f"{concept}: {tag}", [_cell(world, c) for c in coef]))
    width = label_w + PER_CONCEPT * (CELL + gap)
    height = len(rows) * (CELL + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, cells) in enumerate(rows):
        y = gap + r * (CELL + gap)
        draw.text((6, y + CELL // 2 - 6), label, fill=(0, 0, 0))
        for c, cell in enumerate(cells):
            canvas.paste(cell, (label_w + c * (CELL + gap), y))
    return np.asarray(canvas, dtype=np.float32) / 255.0
