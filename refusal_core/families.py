"""The one registry of the model families the pack edits: adding a family touches only this file.

Per family: how to recognise it (ComfyUI's model classes, and key names of its state dict that no
other family has), where text enters (the first linear that reads the conditioning: its input width
is the text width), its latent geometry per latent format, its edit sites and the measured default.
Module names are those of ComfyUI's state dicts without the "diffusion_model." prefix; "{i}" is a
block index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .sites import IMAGE, JOINT, TEXT, VIDEO, Site
from .types import RefusalError


@dataclass(frozen=True)
class Family:
    """name: the id in vector files; display: what users read; comfy_classes: ComfyUI model_base class
    names (subclasses match too: Wan 2.2, i2v variants); markers: state-dict keys unique to the family;
    text_input: module whose input is the text conditioning; latents: {ComfyUI latent format class name:
    (temporal, spatial) compression, as the family's empty-latent node uses}; sites by name; default_site:
    the site "auto" picks, chosen by measurement (docs/method.md)."""

    name: str
    display: str
    comfy_classes: tuple[str, ...]
    markers: tuple[str, ...]
    text_input: str
    latents: Mapping[str, tuple[int, int]]
    sites: Mapping[str, Site]
    default_site: str


def _sites(*sites: Site) -> dict[str, Site]:
    return {s.name: s for s in sites}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "wan",
            "Wan 2.1 / 2.2",
            ("WAN21",),
            ("head.modulation",),
            "text_embedding.0",
            {"Wan21": (4, 8), "Wan22": (4, 16)},
            _sites(
                Site(
                    "text_kv",
                    "blocks.{i}.cross_attn.k",
                    ("blocks.{i}.cross_attn.k", "blocks.{i}.cross_attn.v"),
                    TEXT,
                    False,
                    "cross-attention key and value: the only path by which text reaches Wan's video tokens",
                    "text_embedding",
                ),
                Site(
                    "ffn_in",
                    "blocks.{i}.ffn.0",
                    ("blocks.{i}.ffn.0",),
                    VIDEO,
                    True,
                    "first feed-forward linear on video tokens (the paper's Open-Sora site)",
                ),
                Site(
                    "cross_out",
                    "blocks.{i}.cross_attn.o",
                    ("blocks.{i}.cross_attn.o",),
                    VIDEO,
                    True,
                    "cross-attention output projection: what the text wrote into each video token, before it joins the residual stream",
                ),
                Site(
                    "image_kv",
                    "blocks.{i}.cross_attn.k_img",
                    ("blocks.{i}.cross_attn.k_img", "blocks.{i}.cross_attn.v_img"),
                    IMAGE,
                    False,
                    "image cross-attention key and value (Wan 2.1 image-to-video: CLIP-vision tokens)",
                    "img_emb",
                ),
            ),
            # the harder testbed's dev split (docs/results.md): text_kv erased most at the least drift; the FFN input erases nothing
            "text_kv",
        ),
        Family(
            "hunyuan_video",
            "HunyuanVideo",
            ("HunyuanVideo",),
            ("txt_in.individual_token_refiner.blocks.0.norm1.weight",),
            "txt_in.input_embedder",
            {"HunyuanVideo": (4, 8)},
            _sites(
                Site(
                    "text_ffn_in",
                    "double_blocks.{i}.txt_mlp.0",
                    ("double_blocks.{i}.txt_mlp.0",),
                    TEXT,
                    True,
                    "first feed-forward linear of the text stream in the double-stream blocks (the paper's MMDiT site)",
                ),
                Site(
                    "ffn_in",
                    "double_blocks.{i}.img_mlp.0",
                    ("double_blocks.{i}.img_mlp.0",),
                    VIDEO,
                    True,
                    "first feed-forward linear of the video stream in the double-stream blocks",
                ),
                Site(
                    "text_qkv",
                    "double_blocks.{i}.txt_attn.qkv",
                    ("double_blocks.{i}.txt_attn.qkv",),
                    TEXT,
                    True,
                    "text-stream attention projection in the double-stream blocks",
                ),
                Site(
                    "joint_in",
                    "single_blocks.{i}.linear1",
                    ("single_blocks.{i}.linear1",),
                    JOINT,
                    True,
                    "input linear of the single-stream blocks (video and text tokens together)",
                ),
                Site(
                    "text_refiner",
                    "txt_in.individual_token_refiner.blocks.{i}.mlp.0",
                    ("txt_in.individual_token_refiner.blocks.{i}.mlp.0",),
                    TEXT,
                    True,
                    "feed-forward input of the text token refiner, before text meets video",
                ),
            ),
            "joint_in",  # random weights only: the site that separated best; needs real-weight measurement
        ),
        Family(
            "ltxv",
            "LTX-Video",
            ("LTXV",),
            ("caption_projection.linear_1.weight",),
            "caption_projection.linear_1",
            {"LTXV": (8, 32)},
            _sites(
                Site(
                    "text_kv",
                    "transformer_blocks.{i}.attn2.to_k",
                    ("transformer_blocks.{i}.attn2.to_k", "transformer_blocks.{i}.attn2.to_v"),
                    TEXT,
                    False,
                    "cross-attention key and value, where text enters LTX-Video",
                    "caption_projection",
                ),
                Site(
                    "ffn_in",
                    "transformer_blocks.{i}.ff.net.0.proj",
                    ("transformer_blocks.{i}.ff.net.0.proj",),
                    VIDEO,
                    True,
                    "first feed-forward linear on video tokens",
                ),
            ),
            "text_kv",
        ),
        Family(
            "mochi",
            "Mochi",
            ("GenmoMochi",),
            ("t5_yproj.weight",),
            "t5_yproj",
            {"Mochi": (6, 8)},
            _sites(
                Site(
                    "text_kv",
                    "blocks.{i}.attn.qkv_y",
                    ("blocks.{i}.attn.qkv_y",),
                    TEXT,
                    True,
                    "text-side attention projection of the asymmetric joint attention, where text enters Mochi",
                ),
                Site(
                    "ffn_in",
                    "blocks.{i}.mlp_x.w1",
                    ("blocks.{i}.mlp_x.w1",),
                    VIDEO,
                    True,
                    "first feed-forward linear on video tokens",
                ),
                Site(
                    "text_ffn_in",
                    "blocks.{i}.mlp_y.w1",
                    ("blocks.{i}.mlp_y.w1",),
                    TEXT,
                    True,
                    "first feed-forward linear of the text stream",
                ),
            ),
            "text_kv",
        ),
    )
}
# Every site name any family has, "auto" first: the options of the site input.
ALL_SITES = list(dict.fromkeys(["auto"] + [s for f in FAMILIES.values() for s in f.sites]))
# A latent format no family names: the geometry most video VAEs use.
DEFAULT_LATENT = (4, 8)


def supported() -> str:
    return ", ".join(f.display for f in FAMILIES.values())


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise RefusalError(f"model family '{name}' is not supported; supported: {supported()}")
    return FAMILIES[name]


def display_name(name: str) -> str:
    return FAMILIES[name].display if name in FAMILIES else name


def get_site(family_name: str, site: str) -> Site:
    """The site `site` of a family ("auto": its default)."""
    fam = family(family_name)
    name = fam.default_site if site == "auto" else site
    if name not in fam.sites:
        raise RefusalError(
            f"edit site '{site}' does not exist for {fam.display}; choose one of: auto, {', '.join(fam.sites)}"
        )
    return fam.sites[name]


def site_of_point(family_name: str, point: str) -> Site:
    """The site whose capture module is `point` (e.g. "blocks.3.cross_attn.k" -> text_kv)."""
    fam = FAMILIES.get(family_name)
    for site in fam.sites.values() if fam else ():
        if site.blocks([point]):
            return site
    raise RefusalError(f"no {display_name(family_name)} edit site reads '{point}'")


def detect_family(keys) -> str:
    """The family of a diffusion-model state dict from its key names (prefix already removed)."""
    key_set = set(keys)
    for fam in FAMILIES.values():
        if any(marker in key_set for marker in fam.markers):
            return fam.name
    raise RefusalError(f"this checkpoint is not a video model the pack edits; supported: {supported()}")


def model_prefix(keys, prefixes) -> str:
    """Which of `prefixes` ("model.diffusion_model.", ...) a checkpoint puts before its diffusion-model
    keys: the one in front of a family marker key ("" when none is)."""
    key_set = set(keys)
    markers = [m for fam in FAMILIES.values() for m in fam.markers]
    return next((p for p in prefixes if any(p + m in key_set for m in markers)), "")
