"""The edit on a MODEL: LoRA patches on a clone (the input model is never modified), computed against
the weight exactly as this ModelPatcher would compute with it."""

from __future__ import annotations

import sys
from typing import Any

import comfy.lora
import torch
from comfy.weight_adapter import LoRAAdapter

from ...refusal_core.edit import RefusalEdit
from ...refusal_core.lora import LORA_PREFIX
from ...refusal_core.types import RefusalError
from .models import PREFIX, diffusion_module, model_family


def weight_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """{linear layer name: the shape its weight computes with}, read from the modules: a GGUF weight's
    storage is its quantized blocks (what the state dict shows), its .shape the logical one."""
    return {
        name: tuple(m.weight.shape)
        for name, m in diffusion_module(model).named_modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and len(m.weight.shape) == 2
    }


def check_fits(model: Any, edit: RefusalEdit) -> None:
    """The edit was made for this model family and these layer widths, else a clear error."""
    edit.check_fits(model_family(model), weight_shapes(model))


def is_gguf(weight: torch.Tensor) -> bool:
    """A weight loaded by ComfyUI-GGUF (GGMLTensor): quantized blocks with their type and logical shape."""
    return getattr(weight, "tensor_type", None) is not None and hasattr(weight, "tensor_shape")


def dequantized_gguf(layer: torch.nn.Module, name: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A GGUF weight (default: the layer's) as ComfyUI-GGUF dequantizes it before a forward, float32, without patches."""
    weight = layer.weight if weight is None else weight
    dequantize = getattr(sys.modules.get(type(layer).__module__), "dequantize_tensor", None)
    qtype = getattr(weight.tensor_type, "name", str(weight.tensor_type))
    if dequantize is None:
        raise RefusalError(
            f"'{name}' holds GGUF weights ({qtype}) but ComfyUI-GGUF's dequantizer is not loaded: update ComfyUI-GGUF"
        )
    try:
        W = dequantize(weight, torch.float32)
    except Exception as e:  # the quant formats' own errors vary (NotImplementedError, KeyError, numpy errors)
        raise RefusalError(
            f"the GGUF quantization {qtype} of '{name}' cannot be dequantized here ({e}): "
            "use an F16, Q8_0, Q5 / Q4 or K-quant file"
        ) from None
    return W.as_subclass(torch.Tensor).reshape(weight.shape).float().clone()


def effective_weight(model: Any, key_patches: dict | None, name: str) -> torch.Tensor:
    """A weight as this ModelPatcher computes with it, float32: the stored weight converted as its layer
    converts it (an fp8-scaled layer multiplies by its scale; a GGUF layer dequantizes its blocks), plus
    the patches applied before ours (LoRAs loaded earlier in the graph)."""
    key = f"{PREFIX}{name}.weight"
    layer = diffusion_module(model).get_submodule(name)
    with torch.no_grad():  # an fp8 layer's scale_weight may be a Parameter that asks for gradients
        return _effective_weight(model, key_patches, layer, name, key).detach()


def _effective_weight(
    model: Any, key_patches: dict | None, layer: torch.nn.Module, name: str, key: str
) -> torch.Tensor:
    if is_gguf(layer.weight):
        # an F16 GGUF weight is patched in place while loaded: the unpatched one is in the backup, as ComfyUI's own
        # get_key_patches reads it (quantized ones carry their patches beside the data and stay as stored)
        stored = model.backup[key].weight if key in model.backup else layer.weight
        W, earlier = dequantized_gguf(layer, name, stored), model.patches.get(key, [])
    else:
        (weight, convert), *earlier = key_patches[key]
        W = convert(weight.to(torch.float32, copy=True), inplace=True)
    return comfy.lora.calculate_weight(earlier, W, key) if earlier else W


def refusal_lora(model: Any, edit: RefusalEdit, strength: float) -> dict[str, torch.Tensor]:
    """The edit of `model` as LoRA tensors ("diffusion_model.<layer>.lora_up.weight", ...), computed in
    float32 against the weights this model computes with (LoRAs applied before are included), stored in
    the weight's float dtype (float32 for fp8 and GGUF weights: the factors must not be rounded)."""
    check_fits(model, edit)
    root = diffusion_module(model)
    gguf = any(is_gguf(root.get_submodule(name).weight) for name in edit.bases())
    key_patches = None if gguf else model.get_key_patches(PREFIX)  # GGUF's state dict holds no weights to read

    def stored_dtype(name: str) -> torch.dtype:
        weight = root.get_submodule(name).weight
        return torch.float32 if is_gguf(weight) else weight.dtype

    return edit.to_lora(lambda name: effective_weight(model, key_patches, name), strength, stored_dtype)


def apply_refusal(model: Any, edit: RefusalEdit, strength: float) -> Any:
    """A clone of `model` whose edit-site weights become W (I - strength P^T diag(s) Q) (P = Q for a projection).

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
