"""ExtractRefusalVector: MODEL + PROMPT_PAIRS -> REFUSAL_STATS (per-layer differences D, neutral rows E, r)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch
from comfy_api.latest import io, ui

from ..refusal_core import defaults
from ..refusal_core.extract import ExtractSettings, extract_refusal_stats
from ..refusal_core.families import ALL_SITES, get_site
from ..refusal_core.prompts import parse_sigmas
from ..refusal_core.report.plot import layer_scores_image
from ..refusal_core.sites import IMAGE, check_layer_spec, parse_auto, parse_layers
from ..refusal_core.types import RefusalError
from . import widgets
from .host import forward, images, models
from .sockets import CATEGORY, PromptPairsSocket, RefusalStatsSocket

log = logging.getLogger(__name__)


def settings_for(model, prompt_pairs, site: str, layers: str, noise_levels: str, seed: int) -> ExtractSettings:
    """The extraction settings the node's inputs mean for this model."""
    family = models.model_family(model)
    spec = get_site(family, site)
    available = spec.blocks(name for name, _ in models.diffusion_module(model).named_modules())
    if not available:
        raise RefusalError(
            f"this model has no '{spec.capture.format(i='N')}' layers: the site {spec.name} does not fit it"
        )
    auto = parse_auto(layers)
    blocks = available if auto is not None else parse_layers(layers, available)
    if spec.tokens == IMAGE:
        images.check_image_tokens(prompt_pairs)
    return ExtractSettings(spec, blocks, parse_sigmas(noise_levels), family, auto_pick=auto, seed=seed)


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
                    default=defaults.SITE,
                    tooltip="auto: the measured default of the model family (Wan, LTX-Video, Mochi: text_kv; HunyuanVideo: joint_in). "
                    "text_kv: where text enters (cross-attention key/value). cross_out (Wan): the cross-attention output projection, "
                    "what the text wrote into the video tokens. ffn_in: first feed-forward linear on video tokens "
                    "(the paper's site; erases nothing on Wan). text_ffn_in / text_qkv / text_refiner / joint_in: HunyuanVideo and Mochi "
                    "text-stream sites. image_kv: Wan 2.1 image-to-video image cross-attention (needs image pairs).",
                ),
                io.String.Input(
                    "layers",
                    default=defaults.LAYERS,
                    tooltip="Blocks to edit: 'all', 'auto' (the 2 blocks that separate unsafe from safe best; 'auto4' for 4), "
                    "'last2', 'first3', a list '12,13' or a range '10-13' (0-based).",
                ),
                widgets.noise_levels(
                    "Sigmas (0-1] at which the model is read. Sites whose input does not depend on the latent "
                    "(Wan and LTX-Video text_kv, Wan image_kv) are read once, at the first."
                ),
                *widgets.probe_size("Probe latent (image pairs set their own size):"),
                widgets.seed(
                    defaults.SEED, "Seed of the shared probe noise latent (fixed: the same seed gives the same vector)."
                ),
            ],
            outputs=[
                RefusalStatsSocket.Output(
                    display_name="statistics",
                    tooltip="Per-layer differences and the mean refusal vector r: connect to Low-Rank Factorize.",
                ),
                io.Image.Output(
                    display_name="layer_scores",
                    tooltip="Separation d' of unsafe from safe per candidate block; the kept blocks in red.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, layers: str | None = None, noise_levels: str | None = None) -> bool | str:
        """A typo in a string setting is reported before anything runs."""
        return widgets.first_problem((check_layer_spec, layers), (parse_sigmas, noise_levels))

    @classmethod
    def execute(
        cls,
        model,
        prompt_pairs,
        site: str,
        layers: str,
        noise_levels: str,
        width: int,
        height: int,
        length: int,
        seed: int,
    ) -> io.NodeOutput:
        settings = settings_for(model, prompt_pairs, site, layers, noise_levels, seed)
        latent = models.probe_latent(model, width, height, length, seed)
        image_shape = images.image_latent_shape(prompt_pairs)
        if image_shape is not None:  # the probe takes the size of the pairs' image latents
            images.check_takes_images(model)
            latent = torch.randn((1, latent.shape[1], *image_shape), generator=torch.Generator().manual_seed(seed))
        batch = forward.batch_size(model, latent)
        t0 = time.perf_counter()
        stats = extract_refusal_stats(
            models.diffusion_module(model),
            forward.make_forward(model),
            prompt_pairs,
            latent,
            replace(settings, batch_size=batch),
            forward_batch=forward.make_forward_batch(model),
            progress=forward.progress_bar(),
        )
        report = (
            f"{settings.family} {settings.site.name}: blocks {stats.meta['blocks']}, {batch} prompt(s) per forward, "
            f"{time.perf_counter() - t0:.1f} s"
        )
        if stats.meta.get("fallbacks"):  # already logged as a warning by the extraction
            report = f"WARNING: {stats.meta['fallbacks']}\n{report}"
        log.info("refusal statistics: %s", report)
        return io.NodeOutput(stats, torch.from_numpy(layer_scores_image(stats))[None], ui=ui.PreviewText(report))
