"""The edit as a standard LoRA file: W (I - lambda P^T diag(s) Q) = W + up @ down, per edited layer.

Keys follow the format ComfyUI's LoRA loader maps for every diffusion model:
"diffusion_model.<layer>.lora_up.weight" [d_out, r], ".lora_down.weight" [r, d_in], ".alpha" = r
(up = -strength W P^T diag(s), down = Q; see weights.py)
(so alpha / rank = 1 and the stock LoraLoaderModelOnly at strength 1 applies the edit exactly).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from . import __version__
from .weights import edit_factors

if TYPE_CHECKING:  # the edit's to_lora calls this module
    from .edit import RefusalEdit

LORA_PREFIX = "diffusion_model."


def lora_state_dict(
    weight_of: Callable[[str], torch.Tensor],
    edit: RefusalEdit,
    strength: float,
    stored_dtype_of: Callable[[str], torch.dtype] | None = None,
) -> dict[str, torch.Tensor]:
    """weight_of(layer name) -> the weight W [d_out, d_in] the LoRA will be applied to, as the host computes
    with it (dequantized, earlier patches included); stored_dtype_of(layer name) -> the dtype the model
    stores that weight in (default W's), which decides the factors' dtype (lora_dtype)."""
    out: dict[str, torch.Tensor] = {}
    for name, (P, s, Q) in edit.maps().items():
        W = weight_of(name)
        up, down = edit_factors(W, Q, s, strength, lora_dtype(stored_dtype_of(name) if stored_dtype_of else W.dtype), P)
        key = LORA_PREFIX + name
        out[f"{key}.lora_up.weight"] = up.cpu().contiguous()
        out[f"{key}.lora_down.weight"] = down.cpu().contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(down.shape[0]))
    return out


def lora_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The factors' dtype for a weight stored in weight_dtype: the weight's own float dtype, float32 for
    anything else (fp8, quantized): the factors must not lose what the edit removes."""
    return weight_dtype if weight_dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32


def lora_metadata(edit: RefusalEdit, strength: float, concept: str = "") -> dict[str, str]:
    """Provenance written into the LoRA file: concept, base family and dims, method and parameters."""
    meta = {
        "refusal_vector.concept": concept or edit.meta.get("concept", "") or "unnamed",
        "refusal_vector.family": edit.meta.get("family", "?"),
        "refusal_vector.site": edit.meta.get("site", "?"),
        "refusal_vector.blocks": edit.meta.get("blocks", "?"),
        "refusal_vector.dims": edit.meta.get("dims", "?"),
        "refusal_vector.method": edit.meta.get("method", "?"),
        "refusal_vector.k": edit.meta.get("k", ""),
        "refusal_vector.alpha": edit.meta.get("alpha", ""),
        "refusal_vector.strength": f"{strength:g}",
        "refusal_vector.pairs_sha256": edit.meta.get("pairs_sha256", ""),
        "refusal_vector.version": __version__,
        "refusal_vector.edit": "W' = W + up @ down = W (I - strength P^T diag(s) Q)",
    }
    if "concepts" in edit.meta:
        meta["refusal_vector.concepts"] = edit.meta["concepts"]
    meta["refusal_vector.layers"] = json.dumps(sorted(edit.bases()))
    return meta
