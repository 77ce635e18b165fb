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

from refusal_core.prompts import DEFAULT_NEUTRAL, DEFAULT_PAIRS

OUT = Path(__file__).resolve().parents[1] / "example_workflows"
POSITIVE = "an unclothed woman walking along the beach at sunset, cinematic, soft light"
NEGATIVE = "blurry, low quality, static, distorted, watermark, text"
SAMPLER = {"seed": 42, "steps": 30, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0}

# id: (type, (x, y), widgets by input name, links {input name: (source id, output slot)})
WAN21_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "wan2.1_t2v_1.3B_fp16.safetensors", "weight_dtype": "default"}, {}),
    2: ("CLIPLoader", (0, 140), {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}, {}),
    3: ("VAELoader", (0, 300), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    4: ("ModelSamplingSD3", (0, 420), {"shift": 8.0}, {"model": (1, 0)}),
    5: ("PromptPairLoader", (360, 0), {"pairs": DEFAULT_PAIRS, "neutral_prompts": DEFAULT_NEUTRAL, "pairs_file": "(none)"}, {"clip": (2, 0)}),
    6: ("ExtractRefusalVector", (820, 0), {"site": "text_kv", "layers": "all", "noise_levels": "0.9,0.6,0.3", "width": 256, "height": 256, "length": 1, "seed": 0},
        {"model": (4, 0), "prompt_pairs": (5, 0)}),
    7: ("LowRankFactorize", (1160, 0), {"method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}, {"refusal_vector": (6, 0)}),
    8: ("PreviewImage", (1500, 0), {}, {"images": (7, 1)}),
    9: ("SaveRefusalVector", (1500, 300), {"filename_prefix": "refusal/nudity"}, {"refusal_vector": (7, 0)}),
    10: ("ApplyRefusalToModel", (1160, 300), {"strength": 1.0}, {"model": (4, 0), "refusal_vector": (7, 0)}),
    11: ("CLIPTextEncode", (360, 520), {"text": POSITIVE}, {"clip": (2, 0)}),
    12: ("CLIPTextEncode", (360, 760), {"text": NEGATIVE}, {"clip": (2, 0)}),
    13: ("EmptyHunyuanLatentVideo", (360, 1000), {"width": 832, "height": 480, "length": 33, "batch_size": 1}, {}),
    14: ("KSampler", (820, 520), SAMPLER, {"model": (10, 0), "positive": (11, 0), "negative": (12, 0), "latent_image": (13, 0)}),
    15: ("VAEDecode", (1160, 520), {}, {"samples": (14, 0), "vae": (3, 0)}),
    16: ("CreateVideo", (1160, 640), {"fps": 16.0}, {"images": (15, 0)}),
    17: ("SaveVideo", (1500, 520), {"filename_prefix": "video/erased", "format": "auto", "codec": "auto"}, {"video": (16, 0)}),
    18: ("KSampler", (820, 900), SAMPLER, {"model": (4, 0), "positive": (11, 0), "negative": (12, 0), "latent_image": (13, 0)}),
    19: ("VAEDecode", (1160, 900), {}, {"samples": (18, 0), "vae": (3, 0)}),
    20: ("CreateVideo", (1160, 1020), {"fps": 16.0}, {"images": (19, 0)}),
    21: ("SaveVideo", (1500, 900), {"filename_prefix": "video/original", "format": "auto", "codec": "auto"}, {"video": (20, 0)}),
    22: ("SaveRefusalAsLoRA", (1500, 140), {"strength": 1.0, "filename_prefix": "refusal/nudity_wan2.1_t2v_1.3B", "concept": "nudity"},
         {"model": (4, 0), "refusal_vector": (7, 0)}),
}
GROUPS = [
    ("1. Pairs that differ only by the concept -> refusal vector", (340, -40, 1500, 470)),
    ("2. The same prompt and seed: erased model (top) and original model (bottom)", (340, 480, 1500, 780)),
]


def _video_out(first_id, samples, vae, prefix, fps, x, y):
    """VAEDecode -> CreateVideo -> SaveVideo after a sampler."""
    return {
        first_id: ("VAEDecode", (x, y), {}, {"samples": samples, "vae": vae}),
        first_id + 1: ("CreateVideo", (x, y + 120), {"fps": fps}, {"images": (first_id, 0)}),
        first_id + 2: ("SaveVideo", (x + 340, y), {"filename_prefix": prefix, "format": "auto", "codec": "auto"}, {"video": (first_id + 1, 0)}),
    }


HV_SAMPLER = {"seed": 42, "steps": 30, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
HUNYUAN_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "hunyuan_video_t2v_720p_bf16.safetensors", "weight_dtype": "default"}, {}),
    2: ("DualCLIPLoader", (0, 140), {"clip_name1": "clip_l.safetensors", "clip_name2": "llava_llama3_fp8_scaled.safetensors",
                                     "type": "hunyuan_video", "device": "default"}, {}),
    3: ("VAELoader", (0, 320), {"vae_name": "hunyuan_video_vae_bf16.safetensors"}, {}),
    4: ("PromptPairLoader", (360, 0), {"pairs": DEFAULT_PAIRS, "neutral_prompts": DEFAULT_NEUTRAL, "pairs_file": "(none)"}, {"clip": (2, 0)}),
    5: ("ExtractRefusalVector", (820, 0), {"site": "auto", "layers": "all", "noise_levels": "0.9,0.6,0.3", "width": 256, "height": 256,
                                           "length": 1, "seed": 0}, {"model": (1, 0), "prompt_pairs": (4, 0)}),
    6: ("PreviewImage", (820, 330), {}, {"images": (5, 1)}),
    7: ("LowRankFactorize", (1160, 0), {"method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}, {"refusal_vector": (5, 0)}),
    8: ("PreviewImage", (1500, 0), {}, {"images": (7, 1)}),
    9: ("SaveRefusalVector", (1500, 300), {"filename_prefix": "refusal/nudity_hunyuan"}, {"refusal_vector": (7, 0)}),
    10: ("ApplyRefusalToModel", (1160, 300), {"strength": 1.0}, {"model": (1, 0), "refusal_vector": (7, 0)}),
    11: ("CLIPTextEncode", (360, 520), {"text": POSITIVE}, {"clip": (2, 0)}),
    12: ("FluxGuidance", (360, 760), {"guidance": 6.0}, {"conditioning": (11, 0)}),
    13: ("CLIPTextEncode", (360, 860), {"text": NEGATIVE}, {"clip": (2, 0)}),
    14: ("EmptyHunyuanLatentVideo", (360, 1080), {"width": 848, "height": 480, "length": 33, "batch_size": 1}, {}),
    15: ("KSampler", (820, 520), HV_SAMPLER, {"model": (10, 0), "positive": (12, 0), "negative": (13, 0), "latent_image": (14, 0)}),
    **_video_out(16, (15, 0), (3, 0), "video/hunyuan_erased", 24.0, 1160, 520),
    19: ("KSampler", (820, 900), HV_SAMPLER, {"model": (1, 0), "positive": (12, 0), "negative": (13, 0), "latent_image": (14, 0)}),
    **_video_out(20, (19, 0), (3, 0), "video/hunyuan_original", 24.0, 1160, 900),
}


def _expert_chain(base, expert_id, sigmas, y):
    """ExtractRefusalVector -> LowRankFactorize -> ApplyRefusalToModel for one Wan 2.2 expert (ids base..base+2)."""
    return {
        base: ("ExtractRefusalVector", (820, y), {"site": "text_kv", "layers": "all", "noise_levels": sigmas, "width": 256, "height": 256,
                                                  "length": 1, "seed": 0}, {"model": (expert_id, 0), "prompt_pairs": (5, 0)}),
        base + 1: ("LowRankFactorize", (1160, y), {"method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}, {"refusal_vector": (base, 0)}),
        base + 2: ("ApplyRefusalToModel", (1500, y), {"strength": 1.0}, {"model": (expert_id, 0), "refusal_vector": (base + 1, 0)}),
    }


def _advanced(model, positive, negative, latent, start, end, add_noise, leftover):
    return ("KSamplerAdvanced", (0, 0), {"add_noise": add_noise, "noise_seed": 42, "steps": 20, "cfg": 3.5, "sampler_name": "euler",
                                         "scheduler": "simple", "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover},
            {"model": model, "positive": positive, "negative": negative, "latent_image": latent})


def _at(node, x, y):
    return (node[0], (x, y), node[2], node[3])


WAN22_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "weight_dtype": "default"}, {}),
    2: ("UNETLoader", (0, 140), {"unet_name": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "weight_dtype": "default"}, {}),
    3: ("CLIPLoader", (0, 280), {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}, {}),
    4: ("VAELoader", (0, 440), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    5: ("PromptPairLoader", (360, 0), {"pairs": DEFAULT_PAIRS, "neutral_prompts": DEFAULT_NEUTRAL, "pairs_file": "(none)"}, {"clip": (3, 0)}),
    6: ("ModelSamplingSD3", (360, 420), {"shift": 8.0}, {"model": (1, 0)}),
    7: ("ModelSamplingSD3", (360, 520), {"shift": 8.0}, {"model": (2, 0)}),
    **_expert_chain(8, 6, "0.95,0.9", 0),
    **_expert_chain(11, 7, "0.6,0.3", 330),
    14: ("CLIPTextEncode", (360, 640), {"text": POSITIVE}, {"clip": (3, 0)}),
    15: ("CLIPTextEncode", (360, 880), {"text": NEGATIVE}, {"clip": (3, 0)}),
    16: ("EmptyHunyuanLatentVideo", (360, 1120), {"width": 832, "height": 480, "length": 33, "batch_size": 1}, {}),
    17: _at(_advanced((10, 0), (14, 0), (15, 0), (16, 0), 0, 10, "enable", "enable"), 820, 660),
    18: _at(_advanced((13, 0), (14, 0), (15, 0), (17, 0), 10, 10000, "disable", "disable"), 1160, 660),
    **_video_out(19, (18, 0), (4, 0), "video/wan22_erased", 16.0, 1500, 660),
    22: _at(_advanced((6, 0), (14, 0), (15, 0), (16, 0), 0, 10, "enable", "enable"), 820, 1040),
    23: _at(_advanced((7, 0), (14, 0), (15, 0), (22, 0), 10, 10000, "disable", "disable"), 1160, 1040),
    **_video_out(24, (23, 0), (4, 0), "video/wan22_original", 16.0, 1500, 1040),
}
WAN22_GROUPS = [
    ("1. One set of pairs, a refusal vector for each expert (high noise top, low noise bottom)", (340, -40, 1500, 650)),
    ("2. Erased experts (top) and original experts (bottom), same seed", (340, 620, 1500, 780)),
]

WAN21_I2V_ERASE = {
    1: ("UNETLoader", (0, 0), {"unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors", "weight_dtype": "default"}, {}),
    2: ("CLIPLoader", (0, 140), {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}, {}),
    3: ("VAELoader", (0, 300), {"vae_name": "wan_2.1_vae.safetensors"}, {}),
    4: ("CLIPVisionLoader", (0, 420), {"clip_name": "clip_vision_h.safetensors"}, {}),
    5: ("LoadImage", (0, 540), {"image": "example.png"}, {}),
    6: ("LoadImage", (0, 900), {"image": "example.png"}, {}),
    7: ("PromptPairLoader", (360, 0), {"pairs": DEFAULT_PAIRS, "neutral_prompts": DEFAULT_NEUTRAL, "pairs_file": "(none)"}, {"clip": (2, 0)}),
    8: ("AddImagesToPromptPairs", (360, 330), {"width": 256, "height": 256, "length": 1},
        {"prompt_pairs": (7, 0), "vae": (3, 0), "unsafe_images": (5, 0), "safe_images": (6, 0), "clip_vision": (4, 0)}),
    9: ("ExtractRefusalVector", (820, 0), {"site": "text_kv", "layers": "all", "noise_levels": "0.9,0.6,0.3", "width": 256, "height": 256,
                                           "length": 1, "seed": 0}, {"model": (1, 0), "prompt_pairs": (8, 0)}),
    10: ("LowRankFactorize", (1160, 0), {"method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}, {"refusal_vector": (9, 0)}),
    11: ("ExtractRefusalVector", (820, 330), {"site": "image_kv", "layers": "all", "noise_levels": "0.9,0.6,0.3", "width": 256, "height": 256,
                                              "length": 1, "seed": 0}, {"model": (1, 0), "prompt_pairs": (8, 0)}),
    12: ("LowRankFactorize", (1160, 330), {"method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}, {"refusal_vector": (11, 0)}),
    13: ("ApplyRefusalToModel", (1500, 0), {"strength": 1.0}, {"model": (1, 0), "refusal_vector": (10, 0)}),
    14: ("ApplyRefusalToModel", (1500, 330), {"strength": 1.0}, {"model": (13, 0), "refusal_vector": (12, 0)}),
    15: ("LoadImage", (0, 1260), {"image": "example.png"}, {}),
    16: ("CLIPVisionEncode", (360, 1260), {"crop": "none"}, {"clip_vision": (4, 0), "image": (15, 0)}),
    17: ("CLIPTextEncode", (360, 660), {"text": POSITIVE}, {"clip": (2, 0)}),
    18: ("CLIPTextEncode", (360, 900), {"text": NEGATIVE}, {"clip": (2, 0)}),
    19: ("WanImageToVideo", (820, 660), {"width": 832, "height": 480, "length": 33, "batch_size": 1},
         {"positive": (17, 0), "negative": (18, 0), "vae": (3, 0), "clip_vision_output": (16, 0), "start_image": (15, 0)}),
    20: ("KSampler", (1160, 660), SAMPLER, {"model": (14, 0), "positive": (19, 0), "negative": (19, 1), "latent_image": (19, 2)}),
    **_video_out(21, (20, 0), (3, 0), "video/wan21_i2v_erased", 16.0, 1500, 660),
    24: ("KSampler", (1160, 1040), SAMPLER, {"model": (1, 0), "positive": (19, 0), "negative": (19, 1), "latent_image": (19, 2)}),
    **_video_out(25, (24, 0), (3, 0), "video/wan21_i2v_original", 16.0, 1500, 1040),
}
WAN21_I2V_GROUPS = [
    ("1. Multi-modal pairs: the unsafe image (top left) and the safe image (below) with the text pairs; text and image edits", (340, -40, 1500, 650)),
    ("2. The start image to animate: erased model (top) and original (bottom)", (340, 620, 1500, 780)),
]
WORKFLOWS = {
    "erase a concept from Wan 2.1": (WAN21_ERASE, GROUPS),
    "erase a concept from HunyuanVideo": (HUNYUAN_ERASE, GROUPS),
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


def build(description: dict, groups: list, object_info: dict) -> dict:
    links, nodes = [], []
    outputs: dict[int, dict[int, list[int]]] = {}
    for order, (nid, (ntype, pos, widgets, inputs)) in enumerate(description.items()):
        info = object_info[ntype]
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
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    values.append("fixed")
                if len(spec) > 1 and spec[1].get("image_upload"):
                    values.append("image")  # the upload button's widget value, as the frontend saves it
        unknown = set(widgets) - {n for n, _ in input_specs(info)}
        if unknown:
            raise KeyError(f"{ntype}: unknown inputs {unknown}")
        nodes.append({
            "id": nid, "type": ntype, "pos": list(pos), "size": [320, 100 + 26 * len(values)], "flags": {}, "order": order, "mode": 0,
            "inputs": node_inputs,
            "outputs": [{"name": oname, "type": otype, "links": []} for oname, otype in zip(info["output_name"], info["output"])],
            "properties": {"Node name for S&R": ntype},
            "widgets_values": values,
        })
    for node in nodes:
        for slot, out in enumerate(node["outputs"]):
            out["links"] = outputs.get(node["id"], {}).get(slot, [])
            out["slot_index"] = slot
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "refusal-vector/" + "-".join(n["type"] for n in nodes))),
        "revision": 0, "last_node_id": max(description), "last_link_id": len(links),
        "nodes": nodes, "links": links,
        "groups": [{"id": i + 1, "title": t, "bounding": list(b), "color": "#3f789e", "font_size": 24, "flags": {}} for i, (t, b) in enumerate(groups)],
        "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [40, 80]}}, "version": 0.4,
    }


def main(url: str) -> None:
    with urllib.request.urlopen(url.rstrip("/") + "/object_info") as r:
        object_info = json.loads(r.read())
    for name, (description, groups) in WORKFLOWS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(build(description, groups, object_info), indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
