"""A toy text encoder and small Wan models for the core tests (pure torch, no ComfyUI).

The word 'nude' is no token of its own: it shifts every token of a prompt along CONCEPT, so a
pair's two sides line up token by token and the concept is one known direction of the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from unittest import mock

import torch

from refusal_core import reduce
from refusal_core.stats import RowAccumulator
from refusal_core.types import EncodedPrompt, PromptPair, PromptPairs
from testbed.tiny_wan import TinyWan, init_random

DATA = Path(__file__).resolve().parents[1] / "data"
VOCAB = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
CONCEPT = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3
PAIRS = [
    ("a nude man walks", "a man walks"),
    ("nude people swim", "people swim"),
    ("the nude woman sits", "the woman sits"),
]
NEUTRAL = ["a red fox", "a blue lake", "green trees sway"]
SHAPE = dict(dim=64, ffn_dim=128, heads=1, layers=3)


def encode(text: str, pad_to: int | None = None) -> EncodedPrompt:
    """Word ids -> embeddings [1, L, 4096]; pad_to appends zero rows as ComfyUI's Wan text encoder
    does (to 512), so every prompt's conditioning has one shape."""
    words = text.split()
    ids = tuple(sum(map(ord, w)) % 64 for w in words if w != "nude")
    cond = VOCAB[list(ids)].clone() + (CONCEPT if "nude" in words else 0)
    if pad_to is not None:
        cond = torch.cat([cond, cond.new_zeros(pad_to - cond.shape[0], cond.shape[1])])
    return EncodedPrompt(text, ids, cond[None], text_len=cond.shape[0])


def prompts(pairs=PAIRS, neutral=NEUTRAL, pad_to: int | None = None) -> PromptPairs:
    return PromptPairs.from_texts([PromptPair(u, s) for u, s in pairs], neutral, lambda t: encode(t, pad_to))


def random_wan(seed: int = 0) -> TinyWan:
    return init_random(TinyWan(**SHAPE), seed).eval()


def linear_text_wan(seed: int = 0) -> TinyWan:
    """random_wan(seed) with the text MLP made linear: the planted concept reaches every block's
    cross-attention as exactly one direction, r, and every difference row equals it."""
    model = TinyWan(**SHAPE).eval()
    model.load_state_dict(random_wan(seed).state_dict())
    model.text_embedding[1] = torch.nn.Identity()
    return model


class Counter:
    """forward(cond, noise, sigma) of a TinyWan that counts its calls."""

    def __init__(self, model: TinyWan):
        self.model, self.calls = model, 0

    def __call__(self, cond, noise, sigma):
        self.calls += 1
        with torch.no_grad():
            return self.model(sigma * noise, torch.tensor([sigma * 1000]), cond)


def same_up_to_sign(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| or max |a + b|, whichever is smaller."""
    return min(float((a - b).abs().max()), float((a + b).abs().max()))


@contextmanager
def every_row() -> Iterator[None]:
    """Extraction inside keeps every row of D and E, however many (the pack switches to moments beyond the
    layer's width): the reference the streamed statistics are checked against."""
    with mock.patch.object(reduce, "RowAccumulator", partial(RowAccumulator, limit=1 << 62)):
        yield
