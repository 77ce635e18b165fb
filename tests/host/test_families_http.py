"""Graphs over HTTP for the other families: HunyuanVideo behind ComfyUI's CLIPLoader with a random
CLIP-L (its text width is read from the weights), and Wan 2.2 A14B with both experts erased in one graph."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.host import tiny_models
from tests.host.graphs import erase_nodes
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def files(server):
    models = server.base / "models"
    (models / "text_encoders").mkdir(parents=True, exist_ok=True)
    tiny_models.hunyuan_video(models / "diffusion_models" / "tiny_hunyuan_video_t2v.safetensors")
    tiny_models.clip_l(models / "text_encoders" / "clip_l_random.safetensors")
    tiny_models.wan(models / "diffusion_models" / "tiny_wan22_high_noise.safetensors", seed=3)
    tiny_models.wan(models / "diffusion_models" / "tiny_wan22_low_noise.safetensors", seed=4)
    return server


def latent(server, prefix):
    return load_file(str(next((server.base / "output").glob(f"{prefix}_*.latent"))))["latent_tensor"]


def text_and_latent(clip_ref) -> dict:
    return {
        "p": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip_ref, "text": "a bloodied boxer in a ring"}},
        "n": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip_ref, "text": "blurry"}},
        "lat": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1},
        },
    }


def sampler(model_ref, seed=1, steps=2, start=0, end=10000, noise="enable", leftover="disable", latent_ref=("lat", 0)):
    return {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": model_ref,
            "add_noise": noise,
            "noise_seed": seed,
            "steps": steps,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "positive": ["p", 0],
            "negative": ["n", 0],
            "latent_image": list(latent_ref),
            "start_at_step": start,
            "end_at_step": end,
            "return_with_leftover_noise": leftover,
        },
    }


def save(samples_ref, prefix):
    return {"class_type": "SaveLatent", "inputs": {"samples": samples_ref, "filename_prefix": prefix}}


def test_hunyuan_video_graph_with_clip_loader(files):
    server = files
    g = {
        "unet": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny_hunyuan_video_t2v.safetensors", "weight_dtype": "default"},
        },
        "clip": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion", "device": "default"},
        },
        **text_and_latent(["clip", 0]),
        **erase_nodes(site="auto", layers="auto"),
        "scores": {"class_type": "PreviewImage", "inputs": {"images": ["extract", 1]}},
        "ks_base": sampler(["unet", 0]),
        "save_base": save(["ks_base", 0], "hv/base_before"),
        "ks_edit": sampler(["apply", 0]),
        "save_edit": save(["ks_edit", 0], "hv/edited"),
    }
    first = server.run(g)
    assert first.get("status", {}).get("status_str") == "success", first
    again = {k: v for k, v in g.items() if k in ("unet", "clip", "p", "n", "lat")}
    again |= {"ks_base2": sampler(["unet", 0], steps=2, end=2), "save_base2": save(["ks_base2", 0], "hv/base_after")}
    assert server.run(again)["status"]["status_str"] == "success"
    before, after, edited = (
        latent(server, "hv/base_before"),
        latent(server, "hv/base_after"),
        latent(server, "hv/edited"),
    )
    assert torch.equal(before, after) and not torch.equal(before, edited)
    assert "joint_in" in server.log.read_text()  # the family's default site was used


def test_wan22_both_experts_erased_in_one_graph(files):
    """As ComfyUI's Wan 2.2 template: the high-noise expert takes the first steps, the low-noise one the rest;
    one PromptPairLoader feeds an extraction and an edit for each expert."""
    server = files
    g = {
        "high": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny_wan22_high_noise.safetensors", "weight_dtype": "default"},
        },
        "low": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "tiny_wan22_low_noise.safetensors", "weight_dtype": "default"},
        },
        "clip": {"class_type": "RefusalTestMiniLMCLIPLoader", "inputs": {}},
        **text_and_latent(["clip", 0]),
        "pairs": {
            "class_type": "PromptPairLoader",
            "inputs": {
                "clip": ["clip", 0],
                "pairs": EXTRACTION_PAIRS,
                "neutral_prompts": NEUTRAL,
                "pairs_file": "(none)",
            },
        },
    }
    for expert, sigmas in (("high", "0.95,0.9"), ("low", "0.6,0.3")):
        g[f"extract_{expert}"] = {
            "class_type": "ExtractRefusalVector",
            "inputs": {
                "model": [expert, 0],
                "prompt_pairs": ["pairs", 0],
                "site": "text_kv",
                "layers": "all",
                "noise_levels": sigmas,
                "width": 64,
                "height": 64,
                "length": 1,
                "seed": 0,
            },
        }
        g[f"factor_{expert}"] = {
            "class_type": "LowRankFactorize",
            "inputs": {"refusal_vector": [f"extract_{expert}", 0], "method": "cpca", "k": 100, "alpha": 0.5},
        }
        g[f"apply_{expert}"] = {
            "class_type": "ApplyRefusalToModel",
            "inputs": {"model": [expert, 0], "refusal_vector": [f"factor_{expert}", 0], "strength": 1.0},
        }
    g |= {
        "ks_high": sampler(["apply_high", 0], steps=4, start=0, end=2, leftover="enable"),
        "ks_low": sampler(["apply_low", 0], steps=4, start=2, noise="disable", latent_ref=("ks_high", 0)),
        "save": save(["ks_low", 0], "wan22/erased"),
        "ks_high_base": sampler(["high", 0], steps=4, start=0, end=2, leftover="enable"),
        "ks_low_base": sampler(["low", 0], steps=4, start=2, noise="disable", latent_ref=("ks_high_base", 0)),
        "save_base": save(["ks_low_base", 0], "wan22/original"),
    }
    result = server.run(g)
    assert result.get("status", {}).get("status_str") == "success", result
    assert not torch.equal(latent(server, "wan22/erased"), latent(server, "wan22/original"))
    log = server.log.read_text()
    assert log.count("refusal edit: 6 layers patched") >= 2  # both experts: 3 blocks x (k, v)
