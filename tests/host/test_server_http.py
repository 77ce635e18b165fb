"""A headless ComfyUI executes graphs through the pack over HTTP; the base model stays bit-identical."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.host.conftest import WAN
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host
NODE_IDS = {"PromptPairLoader", "ExtractRefusalVector", "LowRankFactorize", "ApplyRefusalToModel", "SaveRefusalVector", "LoadRefusalVector"}


def sampling(model_ref, prefix: str, advanced: bool = False) -> dict:
    """Text encode, empty video latent, a 2-step sampler on model_ref, SaveLatent."""
    common = {"model": model_ref, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
              "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["lat", 0]}
    sampler = (
        {"class_type": "KSamplerAdvanced", "inputs": {**common, "add_noise": "enable", "noise_seed": 1, "start_at_step": 0,
                                                     "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
        if advanced else {"class_type": "KSampler", "inputs": {**common, "seed": 1, "denoise": 1.0}}
    )
    tag = prefix.replace("/", "_")
    return {
        f"ks_{tag}": sampler,
        f"save_{tag}": {"class_type": "SaveLatent", "inputs": {"samples": [f"ks_{tag}", 0], "filename_prefix": prefix}},
    }


def common_nodes() -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN, "weight_dtype": "default"}},
        "clip": {"class_type": "RefusalTestMiniLMCLIPLoader", "inputs": {}},
        "p": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a bloodied boxer in a ring"}},
        "n": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "blurry"}},
        "lat": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 1, "batch_size": 1}},
    }


def erase_graph() -> dict:
    g = common_nodes()
    g.update({
        "pairs": {"class_type": "PromptPairLoader", "inputs": {"clip": ["clip", 0], "pairs": EXTRACTION_PAIRS, "neutral_prompts": NEUTRAL, "pairs_file": "(none)"}},
        "extract": {"class_type": "ExtractRefusalVector", "inputs": {"model": ["unet", 0], "prompt_pairs": ["pairs", 0], "site": "text_kv", "layers": "all",
                                                                   "noise_levels": "0.9,0.6,0.3", "width": 64, "height": 64, "length": 1, "seed": 0}},
        "factor": {"class_type": "LowRankFactorize", "inputs": {"refusal_vector": ["extract", 0], "method": "cpca", "k": 100, "alpha": 0.5, "moment": "auto"}},
        "apply": {"class_type": "ApplyRefusalToModel", "inputs": {"model": ["unet", 0], "refusal_vector": ["factor", 0], "strength": 1.0}},
        "save_vec": {"class_type": "SaveRefusalVector", "inputs": {"refusal_vector": ["factor", 0], "filename_prefix": "violence/test"}},
        "spectrum": {"class_type": "PreviewImage", "inputs": {"images": ["factor", 1]}},
    })
    g.update(sampling(["unet", 0], "latents/base_before"))
    g.update(sampling(["apply", 0], "latents/edited"))
    return g


def latent(base, prefix: str) -> torch.Tensor:
    files = sorted((base / "output").glob(f"{prefix}_*.latent"))
    assert files, f"no latent saved for {prefix}"
    return load_file(str(files[-1]))["latent_tensor"]


def test_object_info_lists_the_nodes(server):
    info = server.get("/object_info")
    assert NODE_IDS <= set(info)
    for node_id in NODE_IDS:
        assert info[node_id]["category"] == "unlearning"


def test_graph_erases_and_leaves_the_base_model_untouched(server):
    first = server.run(erase_graph())
    assert first.get("status", {}).get("status_str") == "success", first
    assert (server.base / "models" / "refusal_vectors" / "violence" / "test_00001.safetensors").is_file()

    # Second prompt: the same loaded base model through an uncached sampler, and the saved vector
    # applied again from its file.
    g = common_nodes()
    g.update({
        "load_vec": {"class_type": "LoadRefusalVector", "inputs": {"vector_name": "violence/test_00001.safetensors"}},
        "apply2": {"class_type": "ApplyRefusalToModel", "inputs": {"model": ["unet", 0], "refusal_vector": ["load_vec", 0], "strength": 1.0}},
    })
    g.update(sampling(["unet", 0], "latents/base_after", advanced=True))
    g.update(sampling(["apply2", 0], "latents/edited_again", advanced=True))
    second = server.run(g)
    assert second.get("status", {}).get("status_str") == "success", second

    before, after = latent(server.base, "latents/base_before"), latent(server.base, "latents/base_after")
    edited, again = latent(server.base, "latents/edited"), latent(server.base, "latents/edited_again")
    assert torch.equal(before, after), "the server's base model changed"
    assert not torch.equal(before, edited), "the edit changed nothing"
    assert torch.equal(edited, again), "the saved vector does not reproduce the edit"
