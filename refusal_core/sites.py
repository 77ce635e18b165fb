"""Edit sites per architecture: which linear layers read the concept, by module name.

Names are those of ComfyUI's state dicts (without the "diffusion_model." prefix). "{i}" stands
for the block index; a site's blocks are the indices whose capture module exists in the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .types import RefusalError

# What the captured input rows are, which decides how unsafe and safe rows are paired:
TEXT = "text"    # text tokens: aligned by token ids
VIDEO = "video"  # video tokens: aligned by position (same seeded latent)
JOINT = "joint"  # video tokens then text tokens in one sequence (single-stream blocks)
IMAGE = "image"  # image-conditioning tokens (i2v CLIP-vision tokens): aligned by position


@dataclass(frozen=True)
class Site:
    """One edit site of a family.

    capture:   module whose input is recorded.
    edits:     linear layers that read that same input and receive the edit.
    tokens:    TEXT, VIDEO, JOINT or IMAGE (see above).
    per_sigma: whether the input changes with the latent / noise level; if not, it is read once.
    """

    name: str
    capture: str
    edits: tuple[str, ...]
    tokens: str
    per_sigma: bool
    description: str

    def point(self, block: int) -> str:
        return self.capture.format(i=block)

    def edit_keys(self, block: int) -> tuple[str, ...]:
        return tuple(e.format(i=block) for e in self.edits)

    def blocks(self, module_names: Iterable[str]) -> list[int]:
        """Indices of the blocks that have this site, from the model's module names."""
        pattern = re.compile("^" + re.escape(self.capture).replace(re.escape("{i}"), r"(\d+)") + "$")
        return sorted({int(m.group(1)) for n in module_names if (m := pattern.match(n))})


def _site(name, capture, edits, tokens, per_sigma, description) -> tuple[str, Site]:
    return name, Site(name, capture, tuple(edits), tokens, per_sigma, description)


FAMILIES: dict[str, dict[str, Site]] = {
    "wan": dict([
        _site("text_kv", "blocks.{i}.cross_attn.k", ["blocks.{i}.cross_attn.k", "blocks.{i}.cross_attn.v"], TEXT, False,
              "cross-attention key and value: the only path by which text reaches Wan's video tokens"),
        _site("ffn_in", "blocks.{i}.ffn.0", ["blocks.{i}.ffn.0"], VIDEO, True,
              "first feed-forward linear on video tokens (the paper's Open-Sora site)"),
        _site("cross_out", "blocks.{i}.cross_attn.o", ["blocks.{i}.cross_attn.o"], VIDEO, True,
              "cross-attention output projection: what the text wrote into each video token, before it joins the residual stream"),
        _site("image_kv", "blocks.{i}.cross_attn.k_img", ["blocks.{i}.cross_attn.k_img", "blocks.{i}.cross_attn.v_img"], IMAGE, False,
              "image cross-attention key and value (Wan 2.1 image-to-video: CLIP-vision tokens)"),
    ]),
    "hunyuan_video": dict([
        _site("text_ffn_in", "double_blocks.{i}.txt_mlp.0", ["double_blocks.{i}.txt_mlp.0"], TEXT, True,
              "first feed-forward linear of the text stream in the double-stream blocks (the paper's MMDiT site)"),
        _site("ffn_in", "double_blocks.{i}.img_mlp.0", ["double_blocks.{i}.img_mlp.0"], VIDEO, True,
              "first feed-forward linear of the video stream in the double-stream blocks"),
        _site("text_qkv", "double_blocks.{i}.txt_attn.qkv", ["double_blocks.{i}.txt_attn.qkv"], TEXT, True,
              "text-stream attention projection in the double-stream blocks"),
        _site("joint_in", "single_blocks.{i}.linear1", ["single_blocks.{i}.linear1"], JOINT, True,
              "input linear of the single-stream blocks (video and text tokens together)"),
        _site("text_refiner", "txt_in.individual_token_refiner.blocks.{i}.mlp.0", ["txt_in.individual_token_refiner.blocks.{i}.mlp.0"],
              TEXT, True, "feed-forward input of the text token refiner, before text meets video"),
    ]),
    "ltxv": dict([
        _site("text_kv", "transformer_blocks.{i}.attn2.to_k", ["transformer_blocks.{i}.attn2.to_k", "transformer_blocks.{i}.attn2.to_v"], TEXT, False,
              "cross-attention key and value, where text enters LTX-Video"),
        _site("ffn_in", "transformer_blocks.{i}.ff.net.0.proj", ["transformer_blocks.{i}.ff.net.0.proj"], VIDEO, True,
              "first feed-forward linear on video tokens"),
    ]),
    "mochi": dict([
        _site("text_kv", "blocks.{i}.attn.qkv_y", ["blocks.{i}.attn.qkv_y"], TEXT, True,
              "text-side attention projection of the asymmetric joint attention, where text enters Mochi"),
        _site("ffn_in", "blocks.{i}.mlp_x.w1", ["blocks.{i}.mlp_x.w1"], VIDEO, True, "first feed-forward linear on video tokens"),
        _site("text_ffn_in", "blocks.{i}.mlp_y.w1", ["blocks.{i}.mlp_y.w1"], TEXT, True, "first feed-forward linear of the text stream"),
    ]),
}
FAMILY_NAMES = {"wan": "Wan 2.1 / 2.2", "hunyuan_video": "HunyuanVideo", "ltxv": "LTX-Video", "mochi": "Mochi"}
# Chosen by measurement (README "Results"): on the trained Wan testbed cross_out erases as text_kv does
# at a fifth of its drift, and the FFN input erases nothing.
DEFAULT_SITE = {"wan": "cross_out", "hunyuan_video": "joint_in", "ltxv": "text_kv", "mochi": "text_kv"}
ALL_SITES = list(dict.fromkeys(["auto"] + [s for sites in FAMILIES.values() for s in sites]))


def supported() -> str:
    return ", ".join(FAMILY_NAMES.values())


def get_site(family: str, site: str) -> Site:
    if family not in FAMILIES:
        raise RefusalError(f"model family '{family}' is not supported; supported: {supported()}")
    sites = FAMILIES[family]
    if site == "auto":
        site = DEFAULT_SITE[family]
    if site not in sites:
        raise RefusalError(
            f"edit site '{site}' does not exist for {FAMILY_NAMES[family]}; choose one of: auto, {', '.join(sites)}"
        )
    return sites[site]


def site_of_point(family: str, point: str) -> Site:
    """The site whose capture module is `point` (e.g. "blocks.3.cross_attn.k" -> text_kv)."""
    for site in FAMILIES.get(family, {}).values():
        if site.blocks([point]):
            return site
    raise RefusalError(f"no {FAMILY_NAMES.get(family, family)} edit site reads '{point}'")


def parse_layers(spec: str, available: list[int]) -> list[int]:
    """Block indices from "last2", "all", "first3", "12,13" or "10-13" (0-based), among `available`."""
    s = spec.strip().lower().replace(" ", "")
    if not available:
        raise RefusalError("the model has no block with this edit site")
    if s == "all":
        return list(available)
    m = re.fullmatch(r"(last|first)(\d+)", s)
    if m:
        n = int(m.group(2))
        if n < 1:
            raise RefusalError(f"layers '{spec}': the count must be at least 1")
        return list(available[-n:]) if m.group(1) == "last" else list(available[:n])
    out: list[int] = []
    for part in filter(None, s.split(",")):
        r = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not r:
            raise RefusalError(
                f"layers '{spec}' is not understood: write 'auto', 'last2', 'all', 'first3', a list like '12,13' or a range like '10-13'"
            )
        lo, hi = int(r.group(1)), int(r.group(2) or r.group(1))
        if hi < lo:
            raise RefusalError(f"layers '{spec}': range {part} runs backwards")
        out.extend(range(lo, hi + 1))
    if not out:
        raise RefusalError("layers is empty: write 'auto', 'last2', 'all' or a list like '12,13'")
    bad = [i for i in out if i not in available]
    if bad:
        raise RefusalError(f"layers {bad} do not exist: this model has this site in blocks {_ranges(available)}")
    return sorted(set(out))


def parse_auto(spec: str) -> int | None:
    """'auto' -> 2 layers, 'auto4' -> 4; None when the spec is not automatic."""
    m = re.fullmatch(r"auto(\d*)", spec.strip().lower())
    if not m:
        return None
    n = int(m.group(1) or 2)
    if n < 1:
        raise RefusalError("layers 'auto0' picks nothing: write 'auto' or 'auto3'")
    return n


def _ranges(ix: list[int]) -> str:
    return f"{ix[0]}-{ix[-1]}" if ix == list(range(ix[0], ix[-1] + 1)) else ",".join(map(str, ix))
