"""Sampling as users sample Wan in ComfyUI: classifier-free guidance against a negative prompt (empty
by default) and a shifted flow schedule (ComfyUI's ModelSamplingSD3), Euler steps from sigma 1 to 0."""
from __future__ import annotations

import torch

from .tiny_wan import TinyWan

GUIDANCE = 5.0
SHIFT = 5.0
STEPS = 10


def shifted_sigmas(steps: int = STEPS, shift: float = SHIFT) -> torch.Tensor:
    """[steps + 1] from 1 to 0: sigma = shift t / (1 + (shift - 1) t) on an even t grid."""
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def guided_velocity(model: TinyWan, x: torch.Tensor, sigma: float, ctx: torch.Tensor, neg: torch.Tensor,
                    guidance: float = GUIDANCE) -> torch.Tensor:
    """v_neg + g (v_ctx - v_neg); x [B, C, T, H, W], ctx and neg [B, L, 4096], one batched forward."""
    t = torch.full((2 * x.shape[0],), sigma * 1000.0)
    v = model(torch.cat([x, x]), t, torch.cat([ctx, neg]))
    v_pos, v_neg = v.chunk(2)
    return v_neg + guidance * (v_pos - v_neg)


@torch.no_grad()
def generate(model: TinyWan, ctx: torch.Tensor, neg: torch.Tensor, noise: torch.Tensor, steps: int = STEPS,
             guidance: float = GUIDANCE, shift: float = SHIFT, batch: int = 128) -> torch.Tensor:
    """ctx [N, L, 4096], neg [1 or N, L, 4096], noise [N, C, T, H, W] -> generated latents [N, C, T, H, W]."""
    sigmas = shifted_sigmas(steps, shift)
    out = []
    for i in range(0, ctx.shape[0], batch):
        x, c = noise[i : i + batch], ctx[i : i + batch]
        n = (neg if neg.shape[0] > 1 else neg.expand(ctx.shape[0], -1, -1))[i : i + batch]
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x = x + (s_next - s) * guided_velocity(model, x, s, c, n, guidance)
        out.append(x)
    return torch.cat(out)
