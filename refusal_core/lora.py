"""The edit as a standard LoRA file: W (I - lambda Q diag(s) Q^T) = W + up @ down, per edited layer.

Keys follow the format ComfyUI's LoRA loader maps for every diffusion model:
"diffusion_model.<layer>.lora_up.weight" [d_out, r], ".lora_down.weight" [r, d_in], ".alpha" = r
(so alpha / rank = 1 and the stock LoraLoaderModelOnly at strength 1 applies the edit exactly).
"""
from __future__ import annotations

import json
from typing import Callable

import torch

from . import __version__
from .edit import subspace_factors
from .types import RefusalVector

LORA_PREFIX = "diffusion_model."


def lora_state_dict(
    weight_of: Callable[[str], torch.Tensor], rv: RefusalVector, strength: float, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """weight_of(layer name) -> the weight W [d_out, d_in] the LoRA will be applied to."""
    out: dict[str, torch.Tensor] = {}
    for name, (D, s) in rv.bases().items():
        W = weight_of(name)
        up, down = subspace_factors(W, D, s, strength, dtype or _lora_dtype(W.dtype))
        key = LORA_PREFIX + name
        out[f"{key}.lora_up.weight"] = up.cpu().contiguous()
        out[f"{key}.lora_down.weight"] = down.cpu().contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(down.shape[0]))
    return out


def _lora_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    return weight_dtype if weight_dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.bfloat16


def lora_metadata(rv: RefusalVector, strength: float, concept: str = "") -> dict[str, str]:
    """Provenance written into the LoRA file: concept, base family and dims, method and parameters."""
    meta = {
        "refusal_vector.concept": concept or rv.meta.get("concept", "") or "unnamed",
        "refusal_vector.family": rv.meta.get("family", "?"),
        "refusal_vector.site": rv.meta.get("site", "?"),
        "refusal_vector.blocks": rv.meta.get("blocks", "?"),
        "refusal_vector.dims": rv.meta.get("dims", "?"),
        "refusal_vector.method": rv.meta.get("method", "?"),
        "refusal_vector.k": rv.meta.get("k", ""),
        "refusal_vector.alpha": rv.meta.get("alpha", ""),
        "refusal_vector.strength": f"{strength:g}",
        "refusal_vector.pairs_sha256": rv.meta.get("pairs_sha256", ""),
        "refusal_vector.version": __version__,
        "refusal_vector.edit": "W' = W + up @ down = W (I - strength Q diag(s) Q^T)",
    }
    if "concepts" in rv.meta:
        meta["refusal_vector.concepts"] = rv.meta["concepts"]
    meta["refusal_vector.layers"] = json.dumps(sorted(rv.bases()))
    return meta
