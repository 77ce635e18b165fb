"""ExtractRefusalVector: MODEL + PROMPT_PAIRS -> REFUSAL_VECTOR (per-layer differences and r)."""
from __future__ import annotations

import logging
import time

from comfy_api.latest import io

from ..refusal_core.extract import extract_refusal_vector
import torch

from ..refusal_core.plot import layer_scores_image
from ..refusal_core.sites import ALL_SITES, IMAGE, get_site, parse_auto, parse_layers
from ..refusal_core.types import RefusalError
from . import comfy_bridge as bridge
from .sockets import CATEGORY, PromptPairsSocket, RefusalVectorSocket

log = logging.getLogger(__name__)


def parse_sigmas(text: str) -> list[float]:
    try:
        sigmas = [float(s) for s in text.replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise RefusalError(f"noise levels '{text}' must be numbers separated by commas, e.g. '0.9,0.6,0.3'") from None
    if not sigmas or any(not (0.0 < s <= 1.0) for s in sigmas):
        raise RefusalError(f"noise levels '{text}' must be between 0 (exclusive) and 1, e.g. '0.9,0.6,0.3'")
    return sigmas


class ExtractRefusalVector(io.ComfyNode):
    """Runs every prompt through the model on one seeded noise latent and records the input of the edit-site
    layers; the per-layer differences unsafe - safe give the refusal vector. No weights are changed."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ExtractRefusalVector",
            display_name="Extract Refusal Vector",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Model.Input("model", tooltip="The video model to read (not modified)."),
                PromptPairsSocket.Input("prompt_pairs", tooltip="From Prompt Pairs (unsafe | safe)."),
                io.Combo.Input(
                    "site",
                    options=ALL_SITES,
                    default="auto",
                    tooltip="auto: the measured default of the model family (Wan: cross_out; LTX-Video, Mochi: text_kv; HunyuanVideo: joint_in). "
                    "text_kv: where text enters (cross-attention key/value). cross_out (Wan): the cross-attention output projection, "
                    "what the text wrote into the video tokens. ffn_in: first feed-forward linear on video tokens "
                    "(the paper's site; erases nothing on Wan). text_ffn_in / text_qkv / text_refiner / joint_in: HunyuanVideo and Mochi "
                    "text-stream sites. image_kv: Wan 2.1 image-to-video image cross-attention (needs image pairs).",
                ),
                io.String.Input(
                    "layers",
                    default="all",
                    tooltip="Blocks to edit: 'all', 'auto' (the 2 blocks that separate unsafe from safe best; 'auto4' for 4), "
                    "'last2', 'first3', a list '12,13' or a range '10-13' (0-based).",
                ),
                io.String.Input(
                    "noise_levels",
                    default="0.9,0.6,0.3",
                    tooltip="Sigmas (0-1] at which the model is read. Sites whose input does not depend on the latent "
                    "(Wan and LTX-Video text_kv, Wan image_kv) are read once, at the first.",
                ),
                io.Int.Input("width", default=256, min=16, max=2048, step=16, tooltip="Probe latent width in pixels (image pairs set their own size)."),
                io.Int.Input("height", default=256, min=16, max=2048, step=16, tooltip="Probe latent height in pixels (image pairs set their own size)."),
                io.Int.Input("length", default=1, min=1, max=129, step=4, tooltip="Probe video length in frames (1, 5, 9, ...; image pairs set their own)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Seed of the shared probe noise latent."),
            ],
            outputs=[
                RefusalVectorSocket.Output(display_name="refusal_vector", tooltip="Per-layer differences and the mean refusal vector r."),
                io.Image.Output(display_name="layer_scores", tooltip="Separation d' of unsafe from safe per candidate block; the kept blocks in red."),
            ],
        )

    @classmethod
    def execute(cls, model, prompt_pairs, site: str, layers: str, noise_levels: str, width: int, height: int, length: int, seed: int) -> io.NodeOutput:
        family = bridge.model_family(model)
        spec = get_site(family, site)
        root = bridge.diffusion_module(model)
        available = spec.blocks(name for name, _ in root.named_modules())
        if not available:
            raise RefusalError(f"this model has no '{spec.capture.format(i='N')}' layers: the site {spec.name} does not fit it")
        auto = parse_auto(layers)
        blocks = available if auto is not None else parse_layers(layers, available)
        sigmas = parse_sigmas(noise_levels)
        latent = bridge.probe_latent(model, width, height, length, seed)
        if spec.tokens == IMAGE:
            bridge.check_image_tokens(prompt_pairs)
        image_shape = bridge.image_latent_shape(prompt_pairs)
        if image_shape is not None:  # the probe takes the size of the pairs' image latents
            bridge.check_takes_images(model)
            latent = torch.randn((1, latent.shape[1], *image_shape), generator=torch.Generator().manual_seed(seed))
        forward = bridge.make_forward(model)
        batch = bridge.batch_size(model, latent)
        t0 = time.perf_counter()
        rv = extract_refusal_vector(
            root, forward, prompt_pairs, spec, blocks, latent, sigmas, family, auto_pick=auto, seed=seed, progress=bridge.progress_bar(),
            batch_size=batch, forward_batch=bridge.make_forward_batch(model),
        )
        log.info("refusal vector: %s %s, blocks %s, %d prompts per forward, in %.2f s", family, spec.name, rv.meta["blocks"], batch,
                 time.perf_counter() - t0)
        return io.NodeOutput(rv, torch.from_numpy(layer_scores_image(rv))[None])
