"""Immutable payloads that travel between the nodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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
    """The extraction prompts, encoded: N (unsafe, safe) pairs plus the neutral set E, and the keep
    prompts (look-alikes the edit must leave alone, keep.py; often none).

    Each side is encoded on its own, so two sides may share a text and differ by an image.
    """

    pairs: tuple[tuple[EncodedPrompt, EncodedPrompt], ...]
    neutral: tuple[EncodedPrompt, ...]
    keep: tuple[EncodedPrompt, ...] = ()

    @classmethod
    def from_texts(
        cls,
        pairs: Sequence[PromptPair],
        neutral: Sequence[str],
        encode: Callable[[str], EncodedPrompt],
        keep: Sequence[str] = (),
    ) -> PromptPairs:
        """Encode every distinct text once."""
        cache: dict[str, EncodedPrompt] = {}

        def enc(text: str) -> EncodedPrompt:
            if text not in cache:
                cache[text] = encode(text)
            return cache[text]

        return cls(
            tuple((enc(p.unsafe), enc(p.safe)) for p in pairs),
            tuple(enc(t) for t in neutral),
            tuple(enc(t) for t in keep),
        )


@dataclass(frozen=True)
class LayerStats:
    """What extraction measured at one layer.

    point:     module whose INPUT was captured, e.g. "blocks.3.cross_attn.k".
    edit_keys: linear layers (module names) that read this input and get the edit.
    diffs:     [n, d_in] rows of D = a(u) - a(s) (aligned tokens, sigmas, pairs), or, for a layer
               with more rows than d_in, their stats.Moments (count, sum, D^T D): an exact input
               to the factorization in d_in x d_in memory. Both have .shape == (n, d_in).
    neutral:   [m, d_in] rows of neutral-prompt activations a(E), or their Moments.
    r:         [d_in] mean of D, the refusal vector.
    unsafe, safe: at text sites, [n', d_in] rows a(u)_i and a(s)_j of the aligned tokens (the rows of D
               before the row budget turns them into moments, at most max_rows); None elsewhere. The
               closed-form map (closed_form.py) is solved from them.
    keep:      [k, d_in] rows of the keep prompts' activations (or their Moments), None without keep prompts:
               the factorization takes d orthogonal to their top directions (keep.py).
    """

    point: str
    edit_keys: tuple[str, ...]
    diffs: Rows
    neutral: Rows
    r: torch.Tensor
    unsafe: torch.Tensor | None = None
    safe: torch.Tensor | None = None
    keep: Rows | None = None

    @property
    def dim(self) -> int:
        return int(self.r.shape[0])


@dataclass(frozen=True)
class RefusalStats:
    """Extraction's output for one model: one LayerStats per edit-site layer, the input of a solver
    (factorize.py) that turns it into a RefusalEdit.

    meta holds strings only (written verbatim into .safetensors metadata): family, site, blocks,
    dims, sigmas, seed, layer_scores (JSON: d' per candidate layer), pairs_sha256, version, ...
    """

    layers: tuple[LayerStats, ...]
    meta: Mapping[str, str]

    def with_layers(self, layers: tuple[LayerStats, ...], **meta: str) -> RefusalStats:
        return replace(self, layers=layers, meta={**self.meta, **meta})


@dataclass(frozen=True)
class LayerEdit:
    """The edit of one layer's input: W' = W (I - lambda P^T diag(s) Q) for each linear in edit_keys.

    point:     module whose input the edit changes (as LayerStats.point).
    edit_keys: linear layers (module names) that read this input.
    basis:     Q [m, d_in], orthonormal rows: one per concept (m = 1 for a single concept).
    strengths: s, one per row of Q (a concept at strength 0 is never stored).
    spectrum:  [q] eigenvalues of the solver's C in descending order (None for mean_diff / combined).
    k_used, retained: the rank of U_k and the fraction of |r| it kept (factorize.py).
    left:      P [m, d_in] orthonormal rows, or None for P = Q (a projection, the paper's edit). A map
               (closed_form.py) is its SVD P^T diag(s) Q: it sends each row of Q to s times a row of P.
    """

    point: str
    edit_keys: tuple[str, ...]
    basis: torch.Tensor
    strengths: tuple[float, ...]
    spectrum: torch.Tensor | None = None
    k_used: int = 0
    retained: float = 1.0
    left: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    @property
    def projection(self) -> bool:
        return self.left is None

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])


@dataclass(frozen=True)
class RefusalEdit:
    """What is applied to a model, exported as a LoRA, combined and saved: one LayerEdit per layer.

    meta holds strings only: family, site, blocks, dims, method, k, alpha, moment, concept(s),
    pairs_sha256, version, ... source: the RefusalStats it was solved from, kept in memory so that
    Save Refusal Vector can write them on request (never compared, never saved by default).
    """

    layers: tuple[LayerEdit, ...]
    meta: Mapping[str, str]
    source: RefusalStats | None = field(default=None, compare=False, repr=False)

    def bases(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{edited linear layer name: (Q [m, d_in], strengths [m] float32)}."""
        return {
            key: (layer.basis, torch.tensor(layer.strengths, dtype=torch.float32))
            for layer in self.layers
            for key in layer.edit_keys
        }

    def maps(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """{edited linear layer name: (P [m, d_in], strengths [m] float32, Q [m, d_in])}: W' = W (I - P^T diag(s) Q)."""
        return {
            key: (
                layer.basis if layer.left is None else layer.left,
                torch.tensor(layer.strengths, dtype=torch.float32),
                layer.basis,
            )
            for layer in self.layers
            for key in layer.edit_keys
        }

    def directions(self) -> dict[str, torch.Tensor]:
        """{edited linear layer name: d [d_in]} for a single concept ([m, d_in] rows for m concepts)."""
        return {key: Q[0] if Q.shape[0] == 1 else Q for key, (Q, _) in self.bases().items()}
