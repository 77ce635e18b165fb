"""A headless ComfyUI executes graphs through the pack over HTTP; the base model stays bit-identical."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.host.comfy_host import NODE_IDS
from tests.host.graphs import common_nodes, erase_nodes, sampling

pytestmark = pytest.mark.host


def latent(base, prefix: str) -> torch.Tensor:
    files = sorted((base / "output").glob(f"{prefix}_*.latent"))
    assert files, f"no latent saved for {prefix}"
    return load_file(str(files[-1]))["latent_tensor"]


def test_object_info_lists_the_nodes(server):
    info = server.get("/object_info")
    assert set(NODE_IDS) <= set(info)
    for node_id in NODE_IDS:
        assert info[node_id]["category"] == "unlearning"


def erase_graph() -> dict:
    g = {**common_nodes(), **erase_nodes()}
    g.update(
        {
            "save_vec": {
                "class_type": "SaveRefusalVector",
                "inputs": {"refusal_vector": ["factor", 0], "filename_prefix": "violence/test"},
            },
            "spectrum": {"class_type": "PreviewImage", "inputs": {"images": ["factor", 1]}},
        }
    )
    g.update(sampling(["unet", 0], "latents/base_before"))
    g.update(sampling(["apply", 0], "latents/edited"))
    return g


def test_graph_erases_and_leaves_the_base_model_untouched(server):
    first = server.run(erase_graph())
    assert first.get("status", {}).get("status_str") == "success", first
    assert (server.base / "models" / "refusal_vectors" / "violence" / "test_00001.safetensors").is_file()

    # Second prompt: the same loaded base model through an uncached sampler, and the saved vector
    # applied again from its file.
    g = common_nodes()
    g.update(
        {
            "load_vec": {
                "class_type": "LoadRefusalVector",
                "inputs": {"vector_name": "violence/test_00001.safetensors"},
            },
            "apply2": {
                "class_type": "ApplyRefusalToModel",
                "inputs": {"model": ["unet", 0], "refusal_vector": ["load_vec", 0], "strength": 1.0},
            },
        }
    )
    g.update(sampling(["unet", 0], "latents/base_after", advanced=True))
    g.update(sampling(["apply2", 0], "latents/edited_again", advanced=True))
    second = server.run(g)
    assert second.get("status", {}).get("status_str") == "success", second

    before, after = latent(server.base, "latents/base_before"), latent(server.base, "latents/base_after")
    edited, again = latent(server.base, "latents/edited"), latent(server.base, "latents/edited_again")
    assert torch.equal(before, after), "the server's base model changed"
    assert not torch.equal(before, edited), "the edit changed nothing"
    assert torch.equal(edited, again), "the saved vector does not reproduce the edit"
