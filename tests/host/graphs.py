"""API-format graph pieces for the HTTP host tests."""

from __future__ import annotations

from tests.host.conftest import WAN
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL


def common_nodes(unet: str = WAN) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "RefusalTestMiniLMCLIPLoader", "inputs": {}},
        "p": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a bloodied boxer in a ring"}},
        "n": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry"}},
        "lat": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": 64, "height": 64, "length": 1, "batch_size": 1},
        },
    }


def erase_nodes(
    pairs: str = EXTRACTION_PAIRS,
    neutral: str = NEUTRAL,
    pairs_file: str = "(none)",
    site: str = "text_kv",
    layers: str = "all",
    k: int = 100,
    alpha: float = 0.5,
    strength: float = 1.0,
) -> dict:
    """PromptPairLoader -> ExtractRefusalVector -> LowRankFactorize -> ApplyRefusalToModel on 'unet'."""
    return {
        "pairs": {
            "class_type": "PromptPairLoader",
            "inputs": {"clip": ["clip", 0], "pairs": pairs, "neutral_prompts": neutral, "pairs_file": pairs_file},
        },
        "extract": {
            "class_type": "ExtractRefusalVector",
            "inputs": {
                "model": ["unet", 0],
                "prompt_pairs": ["pairs", 0],
                "site": site,
                "layers": layers,
                "noise_levels": "0.9,0.6,0.3",
                "width": 64,
                "height": 64,
                "length": 1,
                "seed": 0,
            },
        },
        "factor": {
            "class_type": "LowRankFactorize",
            "inputs": {"refusal_vector": ["extract", 0], "method": "cpca", "k": k, "alpha": alpha, "moment": "auto"},
        },
        "apply": {
            "class_type": "ApplyRefusalToModel",
            "inputs": {"model": ["unet", 0], "refusal_vector": ["factor", 0], "strength": strength},
        },
    }


def sampling(model_ref, prefix: str, advanced: bool = False) -> dict:
    """A 2-step sampler on model_ref (KSampler, or the equivalent uncached KSamplerAdvanced) and SaveLatent."""
    common = {
        "model": model_ref,
        "steps": 2,
        "cfg": 1.0,
        "sampler_name": "euler",
        "scheduler": "simple",
        "positive": ["p", 0],
        "negative": ["n", 0],
        "latent_image": ["lat", 0],
    }
    sampler = (
        {
            "class_type": "KSamplerAdvanced",
            "inputs": {
                **common,
                "add_noise": "enable",
                "noise_seed": 1,
                "start_at_step": 0,
                "end_at_step": 10000,
                "return_with_leftover_noise": "disable",
            },
        }
        if advanced
        else {"class_type": "KSampler", "inputs": {**common, "seed": 1, "denoise": 1.0}}
    )
    tag = prefix.replace("/", "_")
    return {
        f"ks_{tag}": sampler,
        f"save_{tag}": {"class_type": "SaveLatent", "inputs": {"samples": [f"ks_{tag}", 0], "filename_prefix": prefix}},
    }
