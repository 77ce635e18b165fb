"""Does an edit fit a model? Family, edited layers and widths, with a message naming what it was made for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from .families import display_name
from .types import RefusalError

if TYPE_CHECKING:  # the edit's check_fits calls this module
    from .edit import RefusalEdit


def made_for(edit: RefusalEdit) -> str:
    fam = edit.meta.get("family", "?")
    return f"a {display_name(fam)} model (blocks {edit.meta.get('blocks', '?')}, widths {edit.meta.get('dims', '?')})"


def orthonormal(Q: torch.Tensor, tol: float = 1e-3) -> bool:
    """Whether Q [m, d] holds finite orthonormal rows."""
    eye = torch.eye(Q.shape[0], dtype=torch.float64)
    return bool(torch.isfinite(Q).all()) and float((Q.double() @ Q.double().T - eye).abs().max()) <= tol


def check_edit_fits(edit: RefusalEdit, family: str, weight_shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise a RefusalError unless every edited layer exists in the model with the right input width.

    weight_shapes: {linear layer name (no ".weight"): the weight's logical shape [d_out, d_in]} of the
    model (for a quantized weight, the shape it dequantizes to).
    """
    if edit.meta.get("family") != family:
        raise RefusalError(
            f"this refusal vector was made for {made_for(edit)}, not for this {display_name(family)} model: "
            "extract one from this model"
        )
    for name, (P, s, Q) in edit.maps().items():
        if not torch.isfinite(s).all() or not (orthonormal(Q) and orthonormal(P)):
            raise RefusalError(
                f"the directions for '{name}' are not finite orthonormal vectors: extract and factorize again"
            )
        shape = weight_shapes.get(name)
        if shape is None:
            raise RefusalError(
                f"this refusal vector edits '{name}', which this model lacks; it was made for {made_for(edit)}"
            )
        if shape[-1] != Q.shape[1]:
            raise RefusalError(
                f"this refusal vector was made for a model {Q.shape[1]} wide at '{name}', this one is {shape[-1]} wide "
                f"(made for {made_for(edit)})"
            )
