"""Does a refusal vector fit a model? Family, edited layers and widths, with a message naming what it was made for."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .sites import FAMILY_NAMES, supported
from .types import RefusalError, RefusalVector

# Key names that only one family's diffusion model has (state-dict names without a prefix).
_FAMILY_MARKERS = (
    ("txt_in.individual_token_refiner.blocks.0.norm1.weight", "hunyuan_video"),
    ("t5_yproj.weight", "mochi"),
    ("caption_projection.linear_1.weight", "ltxv"),
    ("head.modulation", "wan"),
)


def model_prefix(keys: Sequence[str], prefixes: Sequence[str]) -> str:
    """Which of `prefixes` ("model.diffusion_model.", ...) a checkpoint puts before its diffusion-model
    keys: the one in front of a family marker key ("" when none is)."""
    key_set = set(keys)
    return next((p for p in prefixes if any(p + marker in key_set for marker, _ in _FAMILY_MARKERS)), "")


def detect_family(keys: Sequence[str]) -> str:
    """The family of a diffusion-model state dict from its key names (prefix already removed)."""
    key_set = set(keys)
    for marker, family in _FAMILY_MARKERS:
        if marker in key_set:
            return family
    raise RefusalError(f"this checkpoint is not a video model the pack edits; supported: {supported()}")


def made_for(rv: RefusalVector) -> str:
    fam = rv.meta.get("family", "?")
    return f"a {FAMILY_NAMES.get(fam, fam)} model (blocks {rv.meta.get('blocks', '?')}, widths {rv.meta.get('dims', '?')})"


def check_vector_fits(rv: RefusalVector, family: str, weight_shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise a RefusalError unless every edited layer of rv exists in the model with the right input width.

    weight_shapes: {linear layer name (no ".weight"): weight shape} of the model.
    """
    if rv.meta.get("family") != family:
        raise RefusalError(
            f"this refusal vector was made for {made_for(rv)}, not for this {FAMILY_NAMES.get(family, family)} model: "
            "extract one from this model"
        )
    for name, (D, s) in rv.bases().items():
        if not torch.isfinite(D).all() or not torch.isfinite(s).all() or (D.norm(dim=1) - 1).abs().max() > 1e-3:
            raise RefusalError(f"the direction for '{name}' is not a finite unit vector: extract and factorize again")
        shape = weight_shapes.get(name)
        if shape is None:
            raise RefusalError(f"this refusal vector edits '{name}', which this model lacks; it was made for {made_for(rv)}")
        if shape[-1] != D.shape[1]:
            raise RefusalError(
                f"this refusal vector was made for a model {D.shape[1]} wide at '{name}', this one is {shape[-1]} wide "
                f"(made for {made_for(rv)})"
            )
