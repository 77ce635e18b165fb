"""The MODEL as the pack sees it: its family (from ComfyUI's model classes), its diffusion module, its
text width, a probe latent of its geometry, and loading model files as the core loader nodes do."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import comfy.model_base
import comfy.sd
import folder_paths
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

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def load_diffusion_model_file(path: str | os.PathLike, weight_dtype: str = "default") -> Any:
    """A diffusion model file loaded as UNETLoader loads it (the same weight_dtype options)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise RefusalError(f"weight dtype '{weight_dtype}' is not one of UNETLoader's: {', '.join(WEIGHT_DTYPES)}")
    options: dict[str, Any] = {}
    if weight_dtype.startswith("fp8_e4m3fn"):
        options["dtype"] = torch.float8_e4m3fn
        if weight_dtype.endswith("_fast"):
            options["fp8_optimizations"] = True
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    path = _existing_file(path, "diffusion model")
    try:
        model = comfy.sd.load_diffusion_model(path, model_options=options)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise RefusalError(
            f"ComfyUI could not load '{Path(path).name}' as a diffusion model (is it the video model's "
            f"diffusion_models file, not a checkpoint, LoRA or text encoder?): {str(e).splitlines()[0]}"
        ) from None
    model_family(model)  # a clear error for a family the pack does not edit
    return model


def clip_types() -> list[str]:
    return [t.name.lower() for t in comfy.sd.CLIPType]


def load_text_encoder_files(paths: list[str | os.PathLike], clip_type: str) -> Any:
    """Text encoder file(s) loaded as CLIPLoader (one file) or DualCLIPLoader (two) loads them."""
    if clip_type not in clip_types():
        raise RefusalError(f"text encoder type '{clip_type}' is not one of ComfyUI's: {', '.join(clip_types())}")
    files = [_existing_file(p, "text encoder") for p in paths]
    try:
        return comfy.sd.load_clip(
            ckpt_paths=files,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            clip_type=comfy.sd.CLIPType[clip_type.upper()],
        )
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        names = ", ".join(Path(f).name for f in files)
        raise RefusalError(
            f"ComfyUI could not load {names} as a '{clip_type}' text encoder (for Wan: umt5_xxl with type wan; "
            f"for HunyuanVideo: clip_l and llava_llama3 with type hunyuan_video): {str(e).splitlines()[0]}"
        ) from None


def _existing_file(path: str | os.PathLike, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise RefusalError(f"{what} file '{path}' does not exist")
    return str(p)
