"""The edit: what is applied to a model, exported as a LoRA, combined and saved, and the operations it owns.

Each operation lives in its own module (weights, lora, combine, compatibility, file_format), which works
on the edit's layers; RefusalEdit is the one place a user reaches them from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .combine import combine_layers
from .compatibility import check_edit_fits
from .file_format import read_refusal_file, save_refusal_edit
from .lora import lora_metadata, lora_state_dict
from .types import LayerEdit, RefusalError, RefusalStats
from .weights import edited_state_dict


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

    def save(self, path: str | os.PathLike, include_statistics: bool = False) -> Path:
        """Write the edit as a .safetensors file (file_format.py), atomically; with include_statistics also the
        statistics it was solved from, so that it can be factorized again later."""
        return save_refusal_edit(self, path, include_statistics)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RefusalEdit:
        """The edit of a file of either format; a file with statistics only gets an error that says what to do."""
        edit, _ = load_refusal_file(path)
        if edit is None:
            raise RefusalError(
                f"'{Path(path).name}' holds statistics only (an unfactorized vector): "
                "connect Load Refusal Vector's statistics output to Low-Rank Factorize first"
            )
        return edit

    @classmethod
    def combine(cls, edits: Sequence[tuple[RefusalEdit, float]]) -> RefusalEdit:
        """One edit from (edit, strength) pairs: several concepts at once (combine.py)."""
        return cls(*combine_layers(edits))

    def edited_state_dict(self, state: dict[str, torch.Tensor], lam: float = 1.0) -> dict[str, torch.Tensor]:
        """A new state dict with every weight this edit touches edited at strength lam (weights.py)."""
        return edited_state_dict(state, self, lam)

    def to_lora(
        self,
        weight_of: Callable[[str], torch.Tensor],
        strength: float,
        stored_dtype_of: Callable[[str], torch.dtype] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The edit as a standard LoRA state dict for the weights weight_of(name) gives (lora.py)."""
        return lora_state_dict(weight_of, self, strength, stored_dtype_of)

    def lora_metadata(self, strength: float, concept: str = "") -> dict[str, str]:
        """The provenance a LoRA file of this edit carries (lora.py)."""
        return lora_metadata(self, strength, concept)

    def check_fits(self, family: str, weight_shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise a RefusalError unless the model (its family, {layer: weight shape}) takes this edit."""
        check_edit_fits(self, family, weight_shapes)


def load_refusal_file(path: str | os.PathLike) -> tuple[RefusalEdit | None, RefusalStats | None]:
    """(edit, statistics) from a file of either format; either may be None when the file holds none
    (an unfactorized first-release vector has statistics only; an edit saved without them, none)."""
    parts, stats = read_refusal_file(path)
    return (RefusalEdit(*parts) if parts is not None else None), stats
