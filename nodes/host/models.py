"""The MODEL as the pack sees it: its family (from ComfyUI's model classes), its diffusion module, its
text width and a probe latent of its geometry."""

from __future__ import annotations

from typing import Any

import comfy.model_base
import comfy.sd
import torch

from ...refusal_core.families import DEFAULT_LATENT, FAMILIES, supported
from ...refusal_core.types import RefusalError

PREFIX = "diffusion_model."


def model_family(model: Any) -> str:
    """The family name of a MODEL (ComfyUI's model class or a subclass: Wan 2.2, i2v variants)."""
    base = getattr(model, "model", None)
    for fam in FAMILIES.values():
        for class_name in fam.comfy_classes:
            cls = getattr(comfy.model_base, class_name, None)
            if cls is not None and isinstance(base, cls):
                return fam.name
    raise RefusalError(f"this model ({type(base).__name__}) is not supported yet; supported: {supported()}")


def diffusion_module(model: Any) -> torch.nn.Module:
    return model.model.diffusion_model


def text_width(model: Any) -> int | None:
    """The width of text the model reads: the input width of its family's first text linear."""
    try:
        layer = diffusion_module(model).get_submodule(FAMILIES[model_family(model)].text_input)
        return int(layer.weight.shape[1])
    except (KeyError, AttributeError):
        return None


def probe_latent(model: Any, width: int, height: int, length: int, seed: int) -> torch.Tensor:
    """Seeded noise [1, C, T, H, W] in the model's latent space, sized as the family's empty-latent node does."""
    fmt = model.model.latent_format
    geometry = {k: v for fam in FAMILIES.values() for k, v in fam.latents.items()}
    t_down, s_down = geometry.get(type(fmt).__name__, DEFAULT_LATENT)
    shape = [1, fmt.latent_channels, (length - 1) // t_down + 1, max(2, height // s_down), max(2, width // s_down)]
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


# --- loading model files (the evaluation command; in a graph the core loader nodes do this) ---
