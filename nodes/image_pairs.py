"""AddImagesToPromptPairs: an image per side of each pair, for image-to-video models (multi-modal pairs)."""

from __future__ import annotations

import dataclasses

import torch
from comfy_api.latest import io

from ..refusal_core import defaults
from ..refusal_core.types import PromptPairs, RefusalError
from .host import images
from .sockets import CATEGORY, PromptPairsSocket


def _pick(images: torch.Tensor, i: int, name: str, n_pairs: int) -> torch.Tensor:
    if images.shape[0] == 1:
        return images[:1]
    if images.shape[0] != n_pairs:
        raise RefusalError(
            f"{name} has {images.shape[0]} images for {n_pairs} pairs: give one image, or one per pair (batch them in order)"
        )
    return images[i : i + 1]


class AddImagesToPromptPairs(io.ComfyNode):
    """Makes the pairs multi-modal for image-to-video models: each side gets a start image (unsafe image / safe
    image), encoded exactly as WanImageToVideo does, so the refusal vector reflects text and image together."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AddImagesToPromptPairs",
            display_name="Add Images To Prompt Pairs (i2v)",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                PromptPairsSocket.Input("prompt_pairs", tooltip="From Prompt Pairs (unsafe | safe)."),
                io.Vae.Input(
                    "vae",
                    tooltip="The video model's VAE (Wan 2.1 VAE for Wan 2.1 i2v and the Wan 2.2 A14B i2v experts).",
                ),
                io.Image.Input(
                    "unsafe_images",
                    tooltip="Start image of each unsafe prompt: one image for all pairs, or a batch with one per pair.",
                ),
                io.Image.Input(
                    "safe_images",
                    tooltip="Start image of each safe prompt: one image for all pairs, or a batch with one per pair.",
                ),
                io.Int.Input(
                    "width",
                    default=defaults.WIDTH,
                    min=16,
                    max=2048,
                    step=16,
                    tooltip="Width of the probe video the images start (pixels).",
                ),
                io.Int.Input(
                    "height",
                    default=defaults.HEIGHT,
                    min=16,
                    max=2048,
                    step=16,
                    tooltip="Height of the probe video (pixels).",
                ),
                io.Int.Input(
                    "length",
                    default=defaults.LENGTH,
                    min=1,
                    max=129,
                    step=4,
                    tooltip="Frames of the probe video (1, 5, 9, ...).",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    optional=True,
                    tooltip="Wan 2.1 i2v: the CLIP vision model (clip_vision_h); each image is encoded as CLIPVisionEncode does. Needed for the image_kv site.",
                ),
                io.Image.Input(
                    "neutral_image",
                    optional=True,
                    tooltip="Start image for the neutral prompts (default: the first safe image).",
                ),
            ],
            outputs=[
                PromptPairsSocket.Output(display_name="prompt_pairs", tooltip="The pairs with an image on each side.")
            ],
        )

    @classmethod
    def execute(
        cls,
        prompt_pairs,
        vae,
        unsafe_images,
        safe_images,
        width: int,
        height: int,
        length: int,
        clip_vision=None,
        neutral_image=None,
    ) -> io.NodeOutput:
        n = len(prompt_pairs.pairs)
        neutral = neutral_image[:1] if neutral_image is not None else _pick(safe_images, 0, "safe_images", n)

        condition = images.image_conditioner(vae, width, height, length, clip_vision)

        def with_image(prompt, image):
            return dataclasses.replace(prompt, conditioning=condition(prompt.conditioning, image))

        pairs = tuple(
            (
                with_image(u, _pick(unsafe_images, i, "unsafe_images", n)),
                with_image(s, _pick(safe_images, i, "safe_images", n)),
            )
            for i, (u, s) in enumerate(prompt_pairs.pairs)
        )
        return io.NodeOutput(
            PromptPairs(
                pairs,
                tuple(with_image(p, neutral) for p in prompt_pairs.neutral),
                tuple(with_image(p, neutral) for p in prompt_pairs.keep),
                tuple(with_image(p, neutral) for p in prompt_pairs.ordinary),
            )
        )
