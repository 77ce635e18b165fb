"""Immutable payloads that travel between the nodes: prompts, statistics and the edit's layers (the edit itself, RefusalEdit, lives in edit.py with its operations)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .stats import Rows

# What an edit keeps of its statistics' metadata: which model, site, layers and prompts it was made from.
PROVENANCE = (
    "family",
    "site",
    "blocks",
    "dims",
    "layer_choice",
    "layer_scores",
    "sigmas",
    "latent_shape",
    "seed",
    "n_pairs",
    "n_neutral",
    "n_keep",
    "n_ordinary",
    "pairs_sha256",
)


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
    """The extraction prompts, encoded: N (unsafe, safe) pairs plus the neutral set E, the keep
    prompts (look-alikes the edit must leave alone, solvers/keep.py; often none) and the ordinary text
    (phrases that name no concept, ordinary.py; none unless asked for).

    Each side is encoded on its own, so two sides may share a text and differ by an image.
    """

    pairs: tuple[tuple[EncodedPrompt, EncodedPrompt], ...]
    neutral: tuple[EncodedPrompt, ...]
    keep: tuple[EncodedPrompt, ...] = ()
    ordinary: tuple[EncodedPrompt, ...] = ()

    @classmethod
    def from_texts(
        cls,
        pairs: Sequence[PromptPair],
        neutral: Sequence[str],
        encode: Callable[[str], EncodedPrompt],
        keep: Sequence[str] = (),
        ordinary: Sequence[str] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> PromptPairs:
        """Encode every distinct text once; progress(done, total) after each encoding."""
        cache: dict[str, EncodedPrompt] = {}
        total = len({t for p in pairs for t in (p.unsafe, p.safe)} | {*neutral, *keep, *ordinary})

        def enc(text: str) -> EncodedPrompt:
            if text not in cache:
                cache[text] = encode(text)
                if progress is not None:
                    progress(len(cache), total)
            return cache[text]

        return cls(
            tuple((enc(p.unsafe), enc(p.safe)) for p in pairs),
            tuple(enc(t) for t in neutral),
            tuple(enc(t) for t in keep),
            tuple(enc(t) for t in ordinary),
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
               closed-form map (solvers/closed_form.py) is solved from them.
    keep:      [k, d_in] rows of the keep prompts' activations (or their Moments), None without keep prompts:
               the factorization takes d orthogonal to their top directions (solvers/keep.py).
    ordinary:  [o, d_in] rows of the ordinary text's activations (or their Moments), None without it: d is
               also taken orthogonal to their top directions, each set with its own rank.
    """

    point: str
    edit_keys: tuple[str, ...]
    diffs: Rows
    neutral: Rows
    r: torch.Tensor
    unsafe: torch.Tensor | None = None
    safe: torch.Tensor | None = None
    keep: Rows | None = None
    ordinary: Rows | None = None

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

    def provenance(self) -> dict[str, str]:
        """What an edit keeps of this metadata: which model, site, layers and prompts it was made from."""
        return {key: self.meta[key] for key in PROVENANCE if key in self.meta}


@dataclass(frozen=True)
class LayerEdit:
    """The edit of one layer's input: W' = W (I - lambda P^T diag(s) Q) for each linear in edit_keys.

    point:     module whose input the edit changes (as LayerStats.point).
    edit_keys: linear layers (module names) that read this input.
    basis:     Q [m, d_in], orthonormal rows: one per concept (m = 1 for a single concept).
    strengths: s, one per row of Q (a concept at strength 0 is never stored).
    spectrum:  [q] eigenvalues of the solver's C in descending order (None for mean_diff / combined).
    k_used, retained: the rank of U_k and the fraction of |r| it kept (solvers/rank_one.py).
    left:      P [m, d_in] orthonormal rows, or None for P = Q (a projection, the paper's edit). A map
               (solvers/closed_form.py) is its SVD P^T diag(s) Q: it sends each row of Q to s times a row of P.
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
