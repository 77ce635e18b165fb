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
}
GROUPS = [
    ("1. Pairs that differ only by the concept -> refusal vector", (340, -40, 1500, 470)),
    ("2. The same prompt and seed: erased model (top) and original model (bottom)", (340, 480, 1500, 780)),
]


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
                if name not in widgets:
                    raise KeyError(f"{ntype}: no value for widget '{name}'")
                values.append(widgets[name])
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    values.append("fixed")
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
    wf = build(WAN21_ERASE, GROUPS, object_info)
    path = OUT / "erase a concept from Wan 2.1.json"
    path.write_text(json.dumps(wf, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
