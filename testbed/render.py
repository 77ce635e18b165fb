"""Generate latents with the testbed model and score what they render, exactly.

render rate: the share of prompts whose generated latent carries the concept's pattern with a
coefficient above RENDER_THRESHOLD (the analogue of the paper's censorship rate).
drift: how far the subject and scene coefficients move on prompts without the concept.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .text import minilm_text
from .tiny_wan import TinyWan
from .train import encode_hidden
from .world import LATENT_SHAPE, WorldPrompt, read_coefficients

RENDER_THRESHOLD = 0.5
STEPS = 10


def contexts(texts: Sequence[str], text_seed: int = 0) -> torch.Tensor:
    """[N, TEXT_PAD, 4096] zero-padded conditioning, as the model was trained on."""
    return encode_hidden(list(texts), text_seed) @ minilm_text(text_seed).proj


@torch.no_grad()
def generate(model: TinyWan, ctx: torch.Tensor, seed: int, steps: int = STEPS, batch: int = 64) -> torch.Tensor:
    """Euler sampling of the flow from sigma 1 to 0, one seeded noise per prompt: [N, C, T, H, W]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(ctx.shape[0], *LATENT_SHAPE, generator=g)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    out = []
    for i in range(0, ctx.shape[0], batch):
        x, c = noise[i : i + batch], ctx[i : i + batch]
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = model(x, torch.full((x.shape[0],), float(s) * 1000.0), c)
            x = x + (s_next - s) * v
        out.append(x)
    return torch.cat(out)


def render_rate(coef: dict[str, torch.Tensor], concept: str) -> float:
    return float((coef[f"concept:{concept}"] > RENDER_THRESHOLD).float().mean())


def drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prompts: Sequence[WorldPrompt]) -> float:
    """Mean |change| of the coefficient of each prompt's own subject and scene (they are ~1 before)."""
    moves = []
    for i, p in enumerate(prompts):
        for name in (f"subject:{p.subject}", f"scene:{p.scene}"):
            moves.append(abs(float(after[name][i] - before[name][i])))
    return sum(moves) / len(moves)


def output_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean relative L2 change of the generated latents [N, ...]."""
    return float(((after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)).mean())


def score(model: TinyWan, ctx: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    latents = generate(model, ctx, seed)
    return latents, read_coefficients(latents)
