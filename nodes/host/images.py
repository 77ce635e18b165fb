"""Image pairs: a side's image built into its conditioning exactly as ComfyUI's WanImageToVideo does,
and the checks that the model and the site take them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.model_base
import torch

from ...refusal_core.types import RefusalError
from .models import diffusion_module, model_family


def image_conditioning(
    conditioning: Any, vae: Any, image: torch.Tensor, width: int, height: int, length: int, clip_vision: Any = None
) -> Any:
    """The conditioning with an image, exactly as ComfyUI's WanImageToVideo node builds it (its own code
    runs): the VAE-encoded start frame as concat latent and mask, and, given a CLIP vision model, the
    image's CLIP-vision output encoded as CLIPVisionEncode does (center crop)."""
    from comfy_extras.nodes_wan import WanImageToVideo

    clip_vision_output = clip_vision.encode_image(image, crop=True) if clip_vision is not None else None
    out = WanImageToVideo.execute(
        conditioning,
        conditioning,
        vae,
        width,
        height,
        length,
        1,
        start_image=image,
        clip_vision_output=clip_vision_output,
    )
    return out.result[0]


IMAGE_KEYS = ("concat_latent_image", "concat_mask", "clip_vision_output")


def image_conditioner(
    vae: Any, width: int, height: int, length: int, clip_vision: Any = None
) -> Callable[[Any, torch.Tensor], Any]:
    """condition(conditioning, image): image_conditioning() for the first prompt of each image (one VAE and one
    CLIP-vision encode), then for the same image tensor the very entries WanImageToVideo put there, set on the next
    prompt's conditioning as it sets them (many prompts share the neutral image: the ordinary text's 64)."""
    import node_helpers

    made: dict[int, tuple[torch.Tensor, dict]] = {}  # id(image) -> (the image, kept alive; its entries)

    def condition(conditioning: Any, image: torch.Tensor) -> Any:
        if id(image) not in made:
            out = image_conditioning(conditioning, vae, image, width, height, length, clip_vision)
            made[id(image)] = (image, {k: out[0][1][k] for k in IMAGE_KEYS if k in out[0][1]})
            return out
        return node_helpers.conditioning_set_values(conditioning, made[id(image)][1])

    return condition


def _first_unsafe_extra(prompts: Any, key: str) -> Any:
    """An entry of the first unsafe prompt's conditioning options (image pairs put theirs there)."""
    cond = prompts.pairs[0][0].conditioning
    return cond[0][1].get(key) if cond and isinstance(cond[0][1], dict) else None


def image_latent_shape(prompts: Any) -> tuple[int, int, int] | None:
    """(T, h, w) of the image conditioning the pairs carry, or None for text-only pairs."""
    concat = _first_unsafe_extra(prompts, "concat_latent_image")
    return tuple(concat.shape[-3:]) if concat is not None else None


def check_image_tokens(prompts: Any) -> None:
    """The image_kv site reads CLIP-vision tokens: without them Wan's image attention reads the text."""
    if _first_unsafe_extra(prompts, "clip_vision_output") is None:
        raise RefusalError(
            "the image_kv site reads the images' CLIP-vision tokens, but these pairs have none: connect a CLIP vision "
            "model (clip_vision_h) to Add Images To Prompt Pairs, or use the text_kv site"
        )


def check_takes_images(model: Any) -> None:
    """Image pairs only mean something for a model that reads an image: say so instead of ignoring them."""
    dm = diffusion_module(model)
    extra = (
        dm.patch_embedding.weight.shape[1] - model.model.latent_format.latent_channels
        if hasattr(dm, "patch_embedding")
        else 0
    )
    if isinstance(model.model, comfy.model_base.WAN22):
        raise RefusalError(
            "Wan 2.2 5B takes its start image inside the latent (Wan22ImageToVideoLatent), which image pairs do not support yet: "
            "use text pairs with this model, or the Wan 2.2 A14B / Wan 2.1 image-to-video models for image pairs"
        )
    if model_family(model) != "wan" or extra <= 0:
        raise RefusalError(
            "these prompt pairs carry images, but this model does not take an image (it is not a Wan image-to-video model): "
            "remove the image-pairs node or load an image-to-video checkpoint"
        )
