"""Writes example_workflows/*.json (ComfyUI UI format) from a compact description, ordering every
node's widget values and slot types by the real /object_info of a running ComfyUI with this pack.

    python scripts/build_example_workflow.py http://127.0.0.1:8188
"""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
PACK = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The Comfy-Org repackaged files the templates name: the frontend offers these downloads when one is missing.
HF = "https://huggingface.co/Comfy-Org"
WAN21, WAN22, HUNYUAN = (
    f"{HF}/Wan_2.1_ComfyUI_repackaged",
    f"{HF}/Wan_2.2_ComfyUI_Repackaged",
    f"{HF}/HunyuanVideo_repackaged",
)
MODEL_FILES = {
    "wan2.1_t2v_1.3B_fp16.safetensors": (WAN21, "diffusion_models"),
    "wan2.1_i2v_480p_14B_fp16.safetensors": (WAN21, "diffusion_models"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (WAN21, "text_encoders"),
    "wan_2.1_vae.safetensors": (WAN21, "vae"),
    "clip_vision_h.safetensors": (WAN21, "clip_vision"),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": (WAN22, "diffusion_models"),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": (WAN22, "diffusion_models"),
    "hunyuan_video_t2v_720p_bf16.safetensors": (HUNYUAN, "diffusion_models"),
    "clip_l.safetensors": (HUNYUAN, "text_encoders"),
    "llava_llama3_fp8_scaled.safetensors": (HUNYUAN, "text_encoders"),
    "hunyuan_video_vae_bf16.safetensors": (HUNYUAN, "vae"),
}


def model_downloads(widgets: dict) -> list[dict]:
    """properties.models of a loader node: name, url and folder of each file it names, as ComfyUI's templates carry them."""
    out = []
    for value in widgets.values():
        if isinstance(value, str) and value in MODEL_FILES:
            repo, folder = MODEL_FILES[value]
            out.append({"name": value, "url": f"{repo}/resolve/main/split_files/{folder}/{value}", "directory": folder})
    return out


def node_properties(ntype: str, widgets: dict, info: dict) -> dict:
    props = {"Node name for S&R": ntype}
    if _is_custom(info):  # the Registry id: the frontend shows where the node comes from and offers the install
        props.update(cnr_id=PACK["name"], ver=PACK["version"])
    if downloads := model_downloads(widgets):
        props["models"] = downloads
    return props


POSITIVE = "an unclothed woman walking along the beach at sunset, cinematic, soft light"
NEGATIVE = "blurry, low quality, static, distorted, watermark, text"
SAMPLER = {"seed": 42, "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0}

# Layout, in canvas pixels: a node's pos is the top of its body (its title bar is drawn above it)
# and its height is what the frontend draws for its slots and widgets (node_height), so nodes are
# stacked rather than placed at guessed y's. A y is a number, below(ids...): under the lowest of
# those nodes, or level(id): on the same line as that node. Groups list their nodes; their boxes
# are computed around them with room for the group title (layout_groups).
GAP = 30  # between one node's body and the next one's title bar
GROUP_GAP = (
    2 * 20 + 34 + GAP
)  # from one group's lowest node to the first node of the group below: pads, title band, gap
PAIRS_EXTRA, TEXT_EXTRA, PREVIEW_EXTRA, IMAGE_EXTRA, VIDEO_EXTRA = (
    126,
    62,
    224,
    218,
    174,
)  # room for prompts and previews


def below(*ids: int, gap: int = GAP) -> tuple:
    return ("below", ids, gap)


def level(nid: int) -> tuple:
    return ("level", nid)


# id: (type, (x, y), widgets by input name, links {input name: (source id, output slot)}[, extra height]).
# A widget not named takes its default from the node's schema (for the pack's nodes: refusal_core.defaults).
WAN21_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors", "weight_dtype": "default"}, {}),
    2: (
        "CLIPLoader",
        (0, below(1)),
        {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        {},
    ),
    3: ("VAELoader", (0, below(2)), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    4: ("ModelSamplingSD3", (0, below(3)), {"shift": 8.0}, {"model": (1, 0)}),
    5: ("PromptPairLoader", (380, 0), {}, {"clip": (2, 0)}, PAIRS_EXTRA),
    6: ("ExtractRefusalVector", (760, 0), {}, {"model": (4, 0), "prompt_pairs": (5, 0)}),
    7: ("LowRankFactorize", (1140, 0), {}, {"refusal_vector": (6, 0)}),
    8: ("PreviewImage", (1520, 0), {}, {"images": (7, 1)}, PREVIEW_EXTRA),
    9: ("SaveRefusalVector", (1140, below(10)), {"filename_prefix": "refusal/nudity"}, {"refusal_vector": (7, 0)}),
    10: ("ApplyRefusalToModel", (1140, below(7)), {}, {"model": (4, 0), "refusal_vector": (7, 0)}),
    11: (
        "CLIPTextEncode",
        (380, below(5, 6, 8, 9, 22, gap=GROUP_GAP)),
        {"text": POSITIVE},
        {"clip": (2, 0)},
        TEXT_EXTRA,
    ),
    12: ("CLIPTextEncode", (380, below(11)), {"text": NEGATIVE}, {"clip": (2, 0)}, TEXT_EXTRA),
    13: ("EmptyHunyuanLatentVideo", (380, below(12)), {"width": 832, "height": 480, "length": 33, "batch_size": 1}, {}),
    14: (
        "KSampler",
        (760, level(11)),
        SAMPLER,
        {"model": (10, 0), "positive": (11, 0), "negative": (12, 0), "latent_image": (13, 0)},
    ),
    15: ("VAEDecode", (1140, level(11)), {}, {"samples": (14, 0), "vae": (3, 0)}),
    16: ("CreateVideo", (1140, below(15)), {"fps": 16.0}, {"images": (15, 0)}),
    17: (
        "SaveVideo",
        (1520, level(11)),
        {"filename_prefix": "video/erased", "format": "auto", "codec": "auto"},
        {"video": (16, 0)},
        VIDEO_EXTRA,
    ),
    18: (
        "KSampler",
        (760, below(14, 16, 17)),
        SAMPLER,
        {"model": (4, 0), "positive": (11, 0), "negative": (12, 0), "latent_image": (13, 0)},
    ),
    19: ("VAEDecode", (1140, level(18)), {}, {"samples": (18, 0), "vae": (3, 0)}),
    20: ("CreateVideo", (1140, below(19)), {"fps": 16.0}, {"images": (19, 0)}),
    21: (
        "SaveVideo",
        (1520, level(18)),
        {"filename_prefix": "video/original", "format": "auto", "codec": "auto"},
        {"video": (20, 0)},
        VIDEO_EXTRA,
    ),
    22: (
        "SaveRefusalAsLoRA",
        (1520, below(8)),
        {"filename_prefix": "refusal/nudity_wan2.1_t2v_1.3B", "concept": "nudity"},
        {"model": (4, 0), "refusal_vector": (7, 0)},
    ),
}
GROUPS = [
    ("1. Pairs that differ only by the concept -> refusal vector", [5, 6, 7, 8, 9, 10, 22]),
    ("2. The same prompt and seed: erased model (top) and original model (bottom)", list(range(11, 22))),
]


def _video_out(first_id, samples, vae, prefix, fps, x, y):
    """VAEDecode -> CreateVideo -> SaveVideo after a sampler."""
    return {
        first_id: ("VAEDecode", (x, y), {}, {"samples": samples, "vae": vae}),
        first_id + 1: ("CreateVideo", (x, below(first_id)), {"fps": fps}, {"images": (first_id, 0)}),
        first_id + 2: (
            "SaveVideo",
            (x + 380, level(first_id)),
            {"filename_prefix": prefix, "format": "auto", "codec": "auto"},
            {"video": (first_id + 1, 0)},
            VIDEO_EXTRA,
        ),
    }


HV_SAMPLER = {"seed": 42, "steps": 30, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
HUNYUAN_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "hunyuan_video_t2v_720p_bf16.safetensors", "weight_dtype": "default"}, {}),
    2: (
        "DualCLIPLoader",
        (0, below(1)),
        {
            "clip_name1": "clip_l.safetensors",
            "clip_name2": "llava_llama3_fp8_scaled.safetensors",
            "type": "hunyuan_video",
            "device": "default",
        },
        {},
    ),
    3: ("VAELoader", (0, below(2)), {"vae_name": "hunyuan_video_vae_bf16.safetensors"}, {}),
    4: ("PromptPairLoader", (380, 0), {}, {"clip": (2, 0)}, PAIRS_EXTRA),
    5: ("ExtractRefusalVector", (760, 0), {}, {"model": (1, 0), "prompt_pairs": (4, 0)}),
    6: ("PreviewImage", (760, below(5)), {}, {"images": (5, 1)}, PREVIEW_EXTRA),
    7: ("LowRankFactorize", (1140, 0), {}, {"refusal_vector": (5, 0)}),
    8: ("PreviewImage", (1520, 0), {}, {"images": (7, 1)}, PREVIEW_EXTRA),
    9: (
        "SaveRefusalVector",
        (1520, below(8)),
        {"filename_prefix": "refusal/nudity_hunyuan"},
        {"refusal_vector": (7, 0)},
    ),
    10: ("ApplyRefusalToModel", (1140, below(7)), {}, {"model": (1, 0), "refusal_vector": (7, 0)}),
    11: ("CLIPTextEncode", (380, below(4, 6, 9, 10, gap=GROUP_GAP)), {"text": POSITIVE}, {"clip": (2, 0)}, TEXT_EXTRA),
    12: ("FluxGuidance", (380, below(11)), {"guidance": 6.0}, {"conditioning": (11, 0)}),
    13: ("CLIPTextEncode", (380, below(12)), {"text": NEGATIVE}, {"clip": (2, 0)}, TEXT_EXTRA),
    14: ("EmptyHunyuanLatentVideo", (380, below(13)), {"width": 848, "height": 480, "length": 33, "batch_size": 1}, {}),
    15: (
        "KSampler",
        (760, level(11)),
        HV_SAMPLER,
        {"model": (10, 0), "positive": (12, 0), "negative": (13, 0), "latent_image": (14, 0)},
    ),
    **_video_out(16, (15, 0), (3, 0), "video/hunyuan_erased", 24.0, 1140, level(11)),
    19: (
        "KSampler",
        (760, below(15, 17, 18)),
        HV_SAMPLER,
        {"model": (1, 0), "positive": (12, 0), "negative": (13, 0), "latent_image": (14, 0)},
    ),
    **_video_out(20, (19, 0), (3, 0), "video/hunyuan_original", 24.0, 1140, level(19)),
}
HUNYUAN_GROUPS = [
    ("1. Pairs that differ only by the concept -> refusal vector", list(range(4, 11))),
    ("2. The same prompt and seed: erased model (top) and original model (bottom)", list(range(11, 23))),
]


def _expert_chain(base, expert_id, sigmas, y):
    """ExtractRefusalVector -> LowRankFactorize -> ApplyRefusalToModel for one Wan 2.2 expert (ids base..base+2)."""
    return {
        base: (
            "ExtractRefusalVector",
            (760, y),
            {"noise_levels": sigmas},
            {"model": (expert_id, 0), "prompt_pairs": (5, 0)},
        ),
        base + 1: ("LowRankFactorize", (1140, level(base)), {}, {"refusal_vector": (base, 0)}),
        base + 2: (
            "ApplyRefusalToModel",
            (1520, level(base)),
            {},
            {"model": (expert_id, 0), "refusal_vector": (base + 1, 0)},
        ),
    }


def _advanced(model, positive, negative, latent, start, end, add_noise, leftover):
    return (
        "KSamplerAdvanced",
        (0, 0),
        {
            "add_noise": add_noise,
            "noise_seed": 42,
            "steps": 20,
            "cfg": 3.5,
            "sampler_name": "euler",
            "scheduler": "simple",
            "start_at_step": start,
            "end_at_step": end,
            "return_with_leftover_noise": leftover,
        },
        {"model": model, "positive": positive, "negative": negative, "latent_image": latent},
    )


def _at(node, x, y):
    return (node[0], (x, y), *node[2:])


WAN22_ERASE = {
    1: (
        "UNETLoader",
        (0, 0),
        {"unet_name": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "weight_dtype": "default"},
        {},
    ),
    2: (
        "UNETLoader",
        (0, below(1)),
        {"unet_name": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "weight_dtype": "default"},
        {},
    ),
    3: (
        "CLIPLoader",
        (0, below(2)),
        {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        {},
    ),
    4: ("VAELoader", (0, below(3)), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    5: ("PromptPairLoader", (380, 0), {}, {"clip": (3, 0)}, PAIRS_EXTRA),
    6: ("ModelSamplingSD3", (0, below(4)), {"shift": 8.0}, {"model": (1, 0)}),
    7: ("ModelSamplingSD3", (0, below(6)), {"shift": 8.0}, {"model": (2, 0)}),
    **_expert_chain(8, 6, "0.95,0.9", 0),
    **_expert_chain(11, 7, "0.6,0.3", below(8)),
    14: ("CLIPTextEncode", (380, below(5, 11, gap=GROUP_GAP)), {"text": POSITIVE}, {"clip": (3, 0)}, TEXT_EXTRA),
    15: ("CLIPTextEncode", (380, below(14)), {"text": NEGATIVE}, {"clip": (3, 0)}, TEXT_EXTRA),
    16: ("EmptyHunyuanLatentVideo", (380, below(15)), {"width": 832, "height": 480, "length": 33, "batch_size": 1}, {}),
    17: _at(_advanced((10, 0), (14, 0), (15, 0), (16, 0), 0, 10, "enable", "enable"), 760, level(14)),
    18: _at(_advanced((13, 0), (14, 0), (15, 0), (17, 0), 10, 10000, "disable", "disable"), 1140, level(14)),
    **_video_out(19, (18, 0), (4, 0), "video/wan22_erased", 16.0, 1520, level(14)),
    22: _at(_advanced((6, 0), (14, 0), (15, 0), (16, 0), 0, 10, "enable", "enable"), 760, below(17, 18, 20, 21)),
    23: _at(_advanced((7, 0), (14, 0), (15, 0), (22, 0), 10, 10000, "disable", "disable"), 1140, level(22)),
    **_video_out(24, (23, 0), (4, 0), "video/wan22_original", 16.0, 1520, level(22)),
}
WAN22_GROUPS = [
    ("1. One set of pairs, a refusal vector for each expert (high noise top, low noise bottom)", [5, *range(8, 14)]),
    ("2. Erased experts (top) and original experts (bottom), same seed", list(range(14, 27))),
]

WAN21_I2V_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors", "weight_dtype": "default"}, {}),
    2: (
        "CLIPLoader",
        (0, below(1)),
        {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"},
        {},
    ),
    3: ("VAELoader", (0, below(2)), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    4: ("CLIPVisionLoader", (0, below(3)), {"clip_name": "clip_vision_h.safetensors"}, {}),
    5: ("LoadImage", (0, below(4)), {"image": "example.png"}, {}, IMAGE_EXTRA),
    6: ("LoadImage", (0, below(5)), {"image": "example.png"}, {}, IMAGE_EXTRA),
    7: ("PromptPairLoader", (380, 0), {}, {"clip": (2, 0)}, PAIRS_EXTRA),
    8: (
        "AddImagesToPromptPairs",
        (380, below(7)),
        {"width": 256, "height": 256, "length": 1},
        {"prompt_pairs": (7, 0), "vae": (3, 0), "unsafe_images": (5, 0), "safe_images": (6, 0), "clip_vision": (4, 0)},
    ),
    9: ("ExtractRefusalVector", (760, 0), {}, {"model": (1, 0), "prompt_pairs": (8, 0)}),
    10: ("LowRankFactorize", (1140, 0), {}, {"refusal_vector": (9, 0)}),
    11: ("ExtractRefusalVector", (760, below(9)), {"site": "image_kv"}, {"model": (1, 0), "prompt_pairs": (8, 0)}),
    12: ("LowRankFactorize", (1140, level(11)), {}, {"refusal_vector": (11, 0)}),
    13: ("ApplyRefusalToModel", (1520, 0), {}, {"model": (1, 0), "refusal_vector": (10, 0)}),
    14: ("ApplyRefusalToModel", (1520, level(11)), {}, {"model": (13, 0), "refusal_vector": (12, 0)}),
    15: ("LoadImage", (380, below(18)), {"image": "example.png"}, {}, IMAGE_EXTRA),
    16: ("CLIPVisionEncode", (760, below(19)), {"crop": "none"}, {"clip_vision": (4, 0), "image": (15, 0)}),
    17: ("CLIPTextEncode", (380, below(8, 11, 12, gap=GROUP_GAP)), {"text": POSITIVE}, {"clip": (2, 0)}, TEXT_EXTRA),
    18: ("CLIPTextEncode", (380, below(17)), {"text": NEGATIVE}, {"clip": (2, 0)}, TEXT_EXTRA),
    19: (
        "WanImageToVideo",
        (760, level(17)),
        {"width": 832, "height": 480, "length": 33, "batch_size": 1},
        {
            "positive": (17, 0),
            "negative": (18, 0),
            "vae": (3, 0),
            "clip_vision_output": (16, 0),
            "start_image": (15, 0),
        },
    ),
    20: (
        "KSampler",
        (1140, level(17)),
        SAMPLER,
        {"model": (14, 0), "positive": (19, 0), "negative": (19, 1), "latent_image": (19, 2)},
    ),
    **_video_out(21, (20, 0), (3, 0), "video/wan21_i2v_erased", 16.0, 1520, level(17)),
    24: (
        "KSampler",
        (1140, below(20, 22, 23)),
        SAMPLER,
        {"model": (1, 0), "positive": (19, 0), "negative": (19, 1), "latent_image": (19, 2)},
    ),
    **_video_out(25, (24, 0), (3, 0), "video/wan21_i2v_original", 16.0, 1520, level(24)),
}
WAN21_I2V_GROUPS = [
    (
        "1. Multi-modal pairs: the unsafe image (top left) and the safe image (below) with the text pairs; text and image edits",
        list(range(7, 15)),
    ),
    ("2. The start image to animate: erased model (top) and original (bottom)", list(range(15, 28))),
]
WORKFLOWS = {
    "erase a concept from Wan 2.1": (WAN21_ERASE, GROUPS),
    "erase a concept from HunyuanVideo": (HUNYUAN_ERASE, HUNYUAN_GROUPS),
    "erase a concept from both Wan 2.2 experts": (WAN22_ERASE, WAN22_GROUPS),
    "erase a concept from Wan 2.1 image-to-video with image pairs": (WAN21_I2V_ERASE, WAN21_I2V_GROUPS),
}


def input_specs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order", {})
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, list(info["input"].get(section, {}))):
            specs.append((name, info["input"][section][name]))
    return specs


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def has_control(name: str, spec: list) -> bool:
    """Whether the frontend adds a "control after generate" widget after this one: an explicit
    control_after_generate, else (legacy convention) any INT named seed or noise_seed."""
    opts = spec[1] if len(spec) > 1 else {}
    if opts.get("control_after_generate") is not None:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


# What the frontend (LiteGraph) draws, in canvas pixels: a node's pos is the top of its body, the
# title bar sits above it; custom nodes also get a source badge above the title bar.
TITLE_H, SLOT_H, WIDGET_H, TEXT_H = 30, 20, 24, 54
BADGE_H = 24
NODE_W = 320
GROUP_TITLE_H, GROUP_PAD = 34, 20  # a group's title band is font_size * 1.4 tall


def node_height(info: dict, extra: int = 0) -> int:
    """The body height LiteGraph's computeSize gives: a row per slot, then the widgets (a multiline
    text box counts 54, a control-after-generate or upload button one more row), plus `extra`."""
    specs = input_specs(info)
    rows = max(1, sum(1 for _, spec in specs if not is_widget(spec)), len(info["output"]))
    widgets = 0
    for name, spec in specs:
        if not is_widget(spec):
            continue
        opts = spec[1] if len(spec) > 1 else {}
        widgets += TEXT_H if spec[0] == "STRING" and opts.get("multiline") else WIDGET_H
        widgets += WIDGET_H * (has_control(name, spec) + bool(opts.get("image_upload")))
    return rows * SLOT_H + (widgets + 8 if widgets else 0) + 6 + extra


def _box(node: dict, custom: bool) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of everything drawn for a node: badge, title bar and body."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - TITLE_H - (BADGE_H if custom else 0), x + w, y + h


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _is_custom(info: dict) -> bool:
    return info.get("python_module", "").startswith("custom_nodes")


def resolve_positions(description: dict, object_info: dict) -> dict[int, tuple[int, int]]:
    """Node id -> (x, y) with below()/level() turned into numbers."""
    heights = {nid: node_height(object_info[d[0]], *d[4:]) for nid, d in description.items()}
    done: dict[int, int] = {}

    def y_of(nid: int, seen: tuple = ()) -> int:
        if nid in seen:
            raise ValueError(f"node positions refer to each other in a cycle: {seen}")
        if nid not in done:
            y = description[nid][1][1]
            if isinstance(y, tuple) and y[0] == "level":
                y = y_of(y[1], seen + (nid,))
            elif isinstance(y, tuple) and y[0] == "below":
                bottom = max(y_of(i, seen + (nid,)) + heights[i] for i in y[1])
                y = bottom + y[2] + TITLE_H + (BADGE_H if _is_custom(object_info[description[nid][0]]) else 0)
            done[nid] = y
        return done[nid]

    return {nid: (d[1][0], y_of(nid)) for nid, d in description.items()}


def build(description: dict, groups: list, object_info: dict) -> dict:
    links, nodes = [], []
    outputs: dict[int, dict[int, list[int]]] = {}
    positions = resolve_positions(description, object_info)
    for order, (nid, (ntype, _, widgets, inputs, *extra)) in enumerate(description.items()):
        info = object_info[ntype]
        pos = positions[nid]
        node_inputs, values = [], []
        for name, spec in input_specs(info):
            if name in inputs:
                src, slot = inputs[name]
                link_id = len(links) + 1
                stype = object_info[description[src][0]]["output"][slot]
                links.append([link_id, src, slot, nid, len(node_inputs), stype])
                outputs.setdefault(src, {}).setdefault(slot, []).append(link_id)
                node_inputs.append({"name": name, "type": stype, "link": link_id})
            elif is_widget(spec):
                if name not in widgets and "default" not in (spec[1] if len(spec) > 1 else {}):
                    raise KeyError(f"{ntype}: no value for widget '{name}'")
                values.append(widgets.get(name, spec[1].get("default") if len(spec) > 1 else None))
                if has_control(name, spec):
                    values.append("fixed")  # else the frontend adds one set to "randomize"
                if len(spec) > 1 and spec[1].get("image_upload"):
                    values.append("image")  # the upload button's widget value, as the frontend saves it
        unknown = set(widgets) - {n for n, _ in input_specs(info)}
        if unknown:
            raise KeyError(f"{ntype}: unknown inputs {unknown}")
        nodes.append(
            {
                "id": nid,
                "type": ntype,
                "pos": list(pos),
                "size": [NODE_W, node_height(info, *extra)],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": node_inputs,
                "outputs": [
                    {"name": oname, "type": otype, "links": []}
                    for oname, otype in zip(info["output_name"], info["output"])
                ],
                "properties": node_properties(ntype, widgets, info),
                "widgets_values": values,
            }
        )
    for node in nodes:
        for slot, out in enumerate(node["outputs"]):
            out["links"] = outputs.get(node["id"], {}).get(slot, [])
            out["slot_index"] = slot
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "refusal-vector/" + "-".join(n["type"] for n in nodes))),
        "revision": 0,
        "last_node_id": max(description),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [
            {"id": i + 1, "title": t, "bounding": b, "color": "#3f789e", "font_size": 24, "flags": {}}
            for i, (t, b) in enumerate(layout_groups(nodes, groups, object_info))
        ],
        "config": {},
        "extra": {"ds": {"scale": 0.7, "offset": [40, 80]}},
        "version": 0.4,
    }


def layout_groups(nodes: list, groups: list, object_info: dict) -> list[tuple[str, list[int]]]:
    """Each group's bounding box around its member nodes, with room for its title above them;
    fails if nodes overlap, a node pokes into a group it is not in, or groups overlap."""
    custom = {n["id"]: _is_custom(object_info[n["type"]]) for n in nodes}
    boxes = {n["id"]: _box(n, custom[n["id"]]) for n in nodes}
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if _overlap(boxes[a], boxes[b]):
                raise ValueError(f"nodes {a} and {b} overlap: {boxes[a]} {boxes[b]}")
    out = []
    for title, members in groups:
        x0 = min(boxes[m][0] for m in members) - GROUP_PAD
        y0 = min(boxes[m][1] for m in members) - GROUP_PAD - GROUP_TITLE_H
        x1 = max(boxes[m][2] for m in members) + GROUP_PAD
        y1 = max(boxes[m][3] for m in members) + GROUP_PAD
        for nid, box in boxes.items():
            if nid not in members and _overlap(box, (x0, y0, x1, y1)):
                raise ValueError(f"node {nid} is not in group {title!r} but overlaps it")
        out.append((title, [x0, y0, x1 - x0, y1 - y0]))
    for i, (ta, a) in enumerate(out):
        for tb, b in out[i + 1 :]:
            if _overlap((a[0], a[1], a[0] + a[2], a[1] + a[3]), (b[0], b[1], b[0] + b[2], b[1] + b[3])):
                raise ValueError(f"groups {ta!r} and {tb!r} overlap")
    return out


def main(url: str) -> None:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info") as r:
        object_info = json.loads(r.read())
    for name, (description, groups) in WORKFLOWS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build(description, groups, object_info), indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
