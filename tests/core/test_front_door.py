"""The library's front door: what refusal_core names is the whole method, and the edit carries its operations."""

from __future__ import annotations

import torch

import refusal_core
from refusal_core import ExtractSettings, RefusalEdit, extract_refusal_stats, factorize, load_refusal_file
from refusal_core.families import FAMILIES
from tests.core.toy_wan import NEUTRAL, Counter, prompts, random_wan


def test_the_front_door_names_only_what_it_holds():
    assert sorted(refusal_core.__all__) == sorted(set(refusal_core.__all__))
    assert all(hasattr(refusal_core, name) for name in refusal_core.__all__)


def test_the_method_end_to_end_through_the_front_door(tmp_path):
    """Extract, factorize, apply, save, load, combine and export as a LoRA, each in one call."""
    model = random_wan(0)
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = ExtractSettings(FAMILIES["wan"].sites["text_kv"], [0, 2], [0.6], "wan")
    stats = extract_refusal_stats(model, Counter(model), prompts(), latent, settings)
    edit = factorize(stats)
    state = model.state_dict()
    edited = edit.edited_state_dict(state)
    for name, d in edit.directions().items():
        assert float((edited[f"{name}.weight"] @ d).norm()) < 1e-4 * float(state[f"{name}.weight"].norm())
    path = edit.save(tmp_path / "nudity.safetensors", include_statistics=True)
    loaded = RefusalEdit.load(path)
    assert loaded.meta == edit.meta
    assert all(torch.equal(loaded.directions()[k], d) for k, d in edit.directions().items())
    again, loaded_stats = load_refusal_file(path)
    assert again.meta == edit.meta and len(loaded_stats.layers) == len(stats.layers)
    other = factorize(extract_refusal_stats(model, Counter(model), prompts(neutral=NEUTRAL[:2]), latent, settings))
    both = RefusalEdit.combine([(edit, 1.0), (other, 0.5)])
    assert both.meta["edit"] == "combined"
    lora = edit.to_lora(lambda name: state[f"{name}.weight"], 1.0)
    up, down = (
        lora["diffusion_model.blocks.0.cross_attn.k.lora_up.weight"],
        lora["diffusion_model.blocks.0.cross_attn.k.lora_down.weight"],
    )
    W = state["blocks.0.cross_attn.k.weight"]
    assert torch.allclose(W + up @ down, edited["blocks.0.cross_attn.k.weight"], atol=1e-5)
    assert edit.lora_metadata(1.0, "nudity")["refusal_vector.concept"] == "nudity"
