"""Sampling as users sample Wan in ComfyUI: classifier-free guidance against a negative prompt (empty
by default) and a shifted flow schedule (ComfyUI's ModelSamplingSD3), Euler steps from sigma 1 to 0.
Guidance 1 and shift 1 (the first world) are the plain conditional flow on an even schedule."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .tiny_wan import TinyWan

GUIDANCE = 5.0  # the hard world's (worlds.py), the defaults here
SHIFT = 5.0
STEPS = 10


def shifted_sigmas(steps: int = STEPS, shift: float = SHIFT) -> torch.Tensor:
    """[steps + 1] from 1 to 0: sigma = shift t / (1 + (shift - 1) t) on an even t grid."""
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def _guided(model: TinyWan, x: torch.Tensor, sigma: float, both: torch.Tensor | None, guidance: float) -> torch.Tensor:
    t = torch.full((2 * x.shape[0],), sigma * 1000.0)
    v_pos, v_neg = model(torch.cat([x, x]), t, both).chunk(2)
    return v_neg + guidance * (v_pos - v_neg)


def guided_velocity(
    model: TinyWan, x: torch.Tensor, sigma: float, ctx: torch.Tensor, neg: torch.Tensor, guidance: float = GUIDANCE
) -> torch.Tensor:
    """v_neg + g (v_ctx - v_neg); x [B, C, T, H, W], ctx [B, L, 4096] and neg [B, L', 4096], one batched forward."""
    return _guided(model, x, sigma, _same_length(ctx, neg), guidance)


class _Fixed(nn.Module):
    """Returns the tensor it holds, whatever its input."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, _: object) -> torch.Tensor:
        return self.value


@contextmanager
def fixed_text(model: TinyWan, context: torch.Tensor) -> Iterator[None]:
    """Within it, model(x, t, None) reads the text path of context [B, L, 4096] computed once, here.

    The text embedding and every block's cross-attention keys and values do not change from step to step;
    on the testbed's small model they are half of each step's work. The same modules on the same tensor,
    so the samples are bit for bit those of recomputing them every step. The model is restored on exit."""
    emb = model.text_embedding(context)
    swaps = [(model, "text_embedding", _Fixed(emb))]
    swaps += [(b.cross_attn, n, _Fixed(getattr(b.cross_attn, n)(emb))) for b in model.blocks for n in ("k", "v")]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    try:
        for owner, name, fixed in swaps:
            setattr(owner, name, fixed)
        yield
    finally:
        for owner, name, module in saved:
            setattr(owner, name, module)


@torch.no_grad()
def generate(
    model: TinyWan,
    ctx: torch.Tensor,
    neg: torch.Tensor | None,
    noise: torch.Tensor,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    shift: float = SHIFT,
    batch: int = 128,
) -> torch.Tensor:
    """ctx [N, L, 4096], neg [1 or N, L', 4096] (unused at guidance 1), noise [N, C, T, H, W] -> latents [N, C, T, H, W]."""
    sigmas = shifted_sigmas(steps, shift)
    out = []
    for i in range(0, ctx.shape[0], batch):
        x, c = noise[i : i + batch], ctx[i : i + batch]
        if guidance == 1:
            with fixed_text(model, c):
                for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
                    x = x + (s_next - s) * model(x, torch.full((x.shape[0],), s * 1000.0), None)
            out.append(x)
            continue
        n = (neg if neg.shape[0] > 1 else neg.expand(ctx.shape[0], -1, -1))[i : i + batch]
        with fixed_text(model, _same_length(c, n)):
            for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
                x = x + (s_next - s) * _guided(model, x, s, None, guidance)
        out.append(x)
    return torch.cat(out)


def _same_length(ctx: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """[ctx; neg] in one batch, the shorter zero-padded to the longer (an attack may lengthen a prompt past the model's
    padding; zero rows are what the padding is)."""
    L = max(ctx.shape[1], neg.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, L - x.shape[1]))  # noqa: E731
    return torch.cat([pad(ctx), pad(neg)])
