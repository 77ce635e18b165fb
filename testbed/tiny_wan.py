"""A Wan 2.1 text-to-video DiT in plain torch, with the module names of ComfyUI's WanModel.

Same blocks as comfy/ldm/wan/model.py (adaLN modulation, self-attention with RMS
q/k norms, text cross-attention, GELU feed-forward, modulated head), so the edit
sites "blocks.N.cross_attn.k/.v" and "blocks.N.ffn.0" are the real ones and its
state dict loads into ComfyUI's WanModel. Rotary position embedding is left out:
it does not touch the text path nor the edited layers' inputs' meaning.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding_1d(dim: int, position: torch.Tensor) -> torch.Tensor:
    half = dim // 2
    position = position.float()
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half).to(position).div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_freqs(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotary matrices per video token, [L, head_dim / 2, 2, 2], axes (t, h, w) as in Wan."""
    axes = [head_dim - 4 * (head_dim // 6), 2 * (head_dim // 6), 2 * (head_dim // 6)]
    pos = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij"), -1).reshape(-1, 3)
    blocks = []
    for i, dim in enumerate(axes):
        omega = 1.0 / theta ** torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64)
        ang = torch.outer(pos[:, i], omega.float())
        blocks.append(torch.stack([torch.cos(ang), -torch.sin(ang), torch.sin(ang), torch.cos(ang)], -1).view(-1, dim // 2, 2, 2))
    return torch.cat(blocks, dim=1)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [B, L, heads, head_dim] rotated pairwise by freqs [L, head_dim / 2, 2, 2]."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    f = freqs[None, :, None]
    return (f[..., 0] * pairs[..., 0] + f[..., 1] * pairs[..., 1]).reshape(x.shape).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, freqs: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L1, dim], context: [B, L2, dim] (None: self-attention with rotary freqs) -> [B, L1, dim]."""
        ctx = x if context is None else context
        q, k, v = self.norm_q(self.q(x)), self.norm_k(self.k(ctx)), self.v(ctx)
        b, h = x.shape[0], self.heads
        q, k, v = (t.view(b, t.shape[1], h, -1) for t in (q, k, v))
        if freqs is not None:
            q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class Block(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.self_attn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)  # Wan 2.1 has cross_attn_norm=True
        self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, context: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        e = (self.modulation + e).chunk(6, dim=1)
        x = x + self.self_attn(self.norm1(x) * (1 + e[1]) + e[0], freqs=freqs) * e[2]
        x = x + self.cross_attn(self.norm3(x), context)
        return x + self.ffn(self.norm2(x) * (1 + e[4]) + e[3]) * e[5]


class Head(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch: tuple[int, int, int]):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        e = (self.modulation + e[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + e[1]) + e[0])


class TinyWan(nn.Module):
    """forward(x [B, C, T, H, W], t [B] in 0..1000, context [B, L, text_dim]) -> [B, C, T, H, W]."""

    def __init__(self, dim: int = 256, ffn_dim: int = 1024, heads: int = 2, layers: int = 6,
                 in_dim: int = 16, text_dim: int = 4096, freq_dim: int = 256, patch: tuple[int, int, int] = (1, 2, 2)):
        super().__init__()
        self.dim, self.freq_dim, self.patch, self.out_dim, self.heads = dim, freq_dim, patch, in_dim, heads
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch, stride=patch)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(dim, ffn_dim, heads) for _ in range(layers))
        self.head = Head(dim, in_dim, patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, T, H, W = x.shape
        pt, ph, pw = self.patch
        h = self.patch_embedding(x)
        grid = h.shape[2:]
        h = h.flatten(2).transpose(1, 2)
        e = self.time_embedding(sinusoidal_embedding_1d(self.freq_dim, t))
        e0 = self.time_projection(e).unflatten(1, (6, self.dim))
        ctx = self.text_embedding(context)
        freqs = rope_freqs(tuple(grid), self.dim // self.heads).to(h.device)
        for block in self.blocks:
            h = block(h, e0, ctx, freqs)
        h = self.head(h, e)
        h = h.view(b, *grid, pt, ph, pw, self.out_dim)
        h = torch.einsum("bfhwpqrc->bcfphqwr", h)
        return h.reshape(b, self.out_dim, T, H, W)


def init_random(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights at a scale where every block contributes (no training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            elif p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                p.fill_(1.0)
    return model
