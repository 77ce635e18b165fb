"""The edit on a MODEL: LoRA patches on a clone (the input model is never modified), computed against
the weight exactly as this ModelPatcher would compute with it."""
from __future__ import annotations

from typing import Any

import torch

import comfy.lora
from comfy.weight_adapter import LoRAAdapter

from ...refusal_core.fit import check_edit_fits
from ...refusal_core.lora import LORA_PREFIX, lora_state_dict
from ...refusal_core.types import RefusalEdit, RefusalError
from .models import PREFIX, model_family


def weight_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """{linear layer name: weight shape} of the diffusion model."""
    return {k[len(PREFIX):-len(".weight")]: tuple(v.shape) for k, v in model.model.state_dict().items()
            if k.startswith(PREFIX) and k.endswith(".weight")}


def check_fits(model: Any, edit: RefusalEdit) -> None:
    """The edit was made for this model family and these layer widths, else a clear error."""
    check_edit_fits(edit, model_family(model), weight_shapes(model))


def effective_weight(key_patches: dict, name: str) -> torch.Tensor:
    """A weight as this ModelPatcher computes with it, float32: the stored weight converted as its layer
    converts it (an fp8-scaled layer multiplies by its scale), plus the patches applied before ours."""
    key = f"{PREFIX}{name}.weight"
    (weight, convert), *earlier = key_patches[key]
    W = convert(weight.to(torch.float32, copy=True), inplace=True)
    return comfy.lora.calculate_weight(earlier, W, key) if earlier else W


def refusal_lora(model: Any, edit: RefusalEdit, strength: float) -> dict[str, torch.Tensor]:
    """The edit of `model` as LoRA tensors ("diffusion_model.<layer>.lora_up.weight", ...), computed in
    float32 against the weights this model computes with (LoRAs applied before are included), stored in
    the weight's float dtype (float32 for fp8 and quantized weights: the factors must not be rounded)."""
    check_fits(model, edit)
    key_patches = model.get_key_patches(PREFIX)
    dtypes = {k: v.dtype for k, v in model.model.state_dict().items()}
    return lora_state_dict(lambda name: effective_weight(key_patches, name), edit, strength,
                           lambda name: dtypes[f"{PREFIX}{name}.weight"])


def apply_refusal(model: Any, edit: RefusalEdit, strength: float) -> Any:
    """A clone of `model` whose edit-site weights become W (I - strength Q^T diag(s) Q).

    The edit goes in as ComfyUI LoRA adapters (rank = number of concepts per layer), never as a
    dense copy, and the input model is never modified.
    """
    tensors = refusal_lora(model, edit, strength)
    m = model.clone()
    patches = {}
    for name in edit.bases():
        up, down = tensors[f"{LORA_PREFIX}{name}.lora_up.weight"], tensors[f"{LORA_PREFIX}{name}.lora_down.weight"]
        patches[f"{PREFIX}{name}.weight"] = LoRAAdapter(set(), (up, down, float(down.shape[0]), None, None, None))
    taken = set(m.add_patches(patches, 1.0))
    missing = sorted(set(patches) - taken)
    if missing:
        raise RefusalError(f"ComfyUI did not accept the edit for {missing[:3]}: the model does not have these weights")
    return m
