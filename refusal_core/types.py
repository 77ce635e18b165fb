"""Immutable payloads that travel between the nodes."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from .stats import Rows


class RefusalError(ValueError):
    """A user-facing error: the message says what to change."""


@dataclass(frozen=True)
class PromptPair:
    """An unsafe prompt and its safe twin, differing only by the concept."""

    unsafe: str
    safe: str


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt as the text encoder saw it.

    token_ids: the encoder's token ids without padding (None when the encoder
    gives none); they align unsafe and safe prompts token by token.
    conditioning: the host's opaque conditioning object (ComfyUI CONDITIONING).
    text_len: rows of the text context (padding included), which locates the
    text part of a joint video + text sequence.
    """

    text: str
    token_ids: tuple[int, ...] | None
    conditioning: Any = field(compare=False, repr=False)
    text_len: int | None = None


@dataclass(frozen=True)
class PromptPairs:
    """The extraction prompts, encoded: N (unsafe, safe) pairs plus the neutral set E.

    Each side is encoded on its own, so two sides may share a text and differ by an image.
    """

    pairs: tuple[tuple[EncodedPrompt, EncodedPrompt], ...]
    neutral: tuple[EncodedPrompt, ...]

    @classmethod
    def from_texts(cls, pairs: Sequence[PromptPair], neutral: Sequence[str], encode: Callable[[str], EncodedPrompt]) -> "PromptPairs":
        """Encode every distinct text once."""
        cache: dict[str, EncodedPrompt] = {}

        def enc(text: str) -> EncodedPrompt:
            if text not in cache:
                cache[text] = encode(text)
            return cache[text]

        return cls(tuple((enc(p.unsafe), enc(p.safe)) for p in pairs), tuple(enc(t) for t in neutral))


@dataclass(frozen=True)
class LayerVector:
    """Per-layer data of a refusal vector.

    point:     module whose INPUT was captured, e.g. "blocks.3.cross_attn.k".
    edit_keys: linear layers (module names) that read this input and get the edit.
    diffs:     [n, d_in] rows of D = a(u) - a(s) (aligned tokens, sigmas, pairs), or, for a layer
               with more rows than d_in, their stats.Moments (count, sum, D^T D): an exact input
               to the factorization in d_in x d_in memory. Both have .shape == (n, d_in).
    neutral:   [m, d_in] rows of neutral-prompt activations a(E), or their Moments.
    r:         [d_in] mean of D, the refusal vector.
    direction: [d_in] unit direction d used by the edit (None before factorization), or
               [m, d_in] unit directions of m combined concepts.
    spectrum:  [q] eigenvalues of C in descending order (None for mean_diff).
    strengths: per combined concept, its strength (None: one concept at strength 1).
    """

    point: str
    edit_keys: tuple[str, ...]
    diffs: Rows
    neutral: Rows
    r: torch.Tensor
    direction: torch.Tensor | None = None
    spectrum: torch.Tensor | None = None
    k_used: int = 0
    retained: float = 1.0
    strengths: tuple[float, ...] | None = None

    @property
    def dim(self) -> int:
        return int(self.r.shape[0])

    def basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D [m, d_in] unit rows, s [m] strengths): what the edit removes, and how strongly."""
        d = self.direction if self.direction is not None else self.r / self.r.norm().clamp_min(1e-12)
        D = d if d.ndim == 2 else d[None]
        s = torch.tensor(self.strengths if self.strengths is not None else [1.0] * D.shape[0], dtype=torch.float32)
        return D, s


@dataclass(frozen=True)
class RefusalVector:
    """A refusal vector for one model: one LayerVector per edit site layer.

    meta holds strings only (it is written verbatim into .safetensors metadata):
    family, site, layers, method, k, alpha, moment, pairs_sha256, version, ...
    """

    layers: tuple[LayerVector, ...]
    meta: Mapping[str, str]

    def with_layers(self, layers: tuple[LayerVector, ...], **meta: str) -> "RefusalVector":
        return replace(self, layers=layers, meta={**self.meta, **meta})

    @property
    def is_factorized(self) -> bool:
        return all(layer.direction is not None for layer in self.layers)

    def directions(self) -> dict[str, torch.Tensor]:
        """Unit direction per edited linear layer name: {module name: [d_in]} ([m, d_in] when combined)."""
        return {key: basis[0] if basis[0].shape[0] > 1 else basis[0][0] for key, basis in self.bases().items()}

    def bases(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{edited linear layer name: (D [m, d_in], strengths [m])}."""
        return {key: layer.basis() for layer in self.layers for key in layer.edit_keys}
