"""Finding and importing a real ComfyUI checkout for the host tests (never a fake one)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from scripts import pack
from tests.host.prompts_unseen import HELD_OUT_NEUTRAL, HELD_OUT_PAIRS

REPO, PACK = pack.REPO, pack.PACK
# Every node the pack registers (in process and over the server's /object_info)
NODE_IDS = (
    "PromptPairLoader",
    "ExtractRefusalVector",
    "LowRankFactorize",
    "ApplyRefusalToModel",
    "SaveRefusalVector",
    "LoadRefusalVector",
    "AddImagesToPromptPairs",
    "SaveRefusalAsLoRA",
    "CombineRefusalVectors",
    "RefusalProbe",
    "RefusalFrameCompare",
)


def comfy_path() -> Path:
    return Path(os.environ.get("COMFYUI_PATH", Path.home() / "ComfyUI")).expanduser()


def missing_reason() -> str | None:
    path = comfy_path()
    if not (path / "main.py").is_file():
        return f"no ComfyUI checkout at {path} (set COMFYUI_PATH or run scripts/provision_comfyui.sh)"
    for mod in ("torchvision", "aiohttp", "safetensors", "transformers"):
        if importlib.util.find_spec(mod) is None:
            return f"ComfyUI's requirement '{mod}' is not installed (run scripts/provision_comfyui.sh)"
    return None


def import_host():
    """Put the checkout on sys.path in CPU mode, import the pack as ComfyUI would, return the pack."""
    pack.import_host(comfy_path(), cpu=True)
    return pack.import_pack()


pack_module = pack.import_pack_module


def host():
    """The pack's host package (nodes/host: paths, models, encode, forward, patch, images), as ComfyUI imports it."""
    import_host()
    for job in ("paths", "models", "encode", "forward", "patch", "images"):
        importlib.import_module(f"{PACK}.nodes.host.{job}")
    return sys.modules[f"{PACK}.nodes.host"]


def pack_nodes() -> dict:
    """{node id: node class} of the pack, as ComfyUI gets them from comfy_entrypoint."""
    import asyncio

    pack = import_host()
    return {c.GET_SCHEMA().node_id: c for c in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}


def random_like(edit, seed: int):
    """The edit with every layer's basis replaced by a random unit direction at the layer's strength: the control a
    real edit must beat."""
    import dataclasses

    g = torch.Generator().manual_seed(seed)
    layers = tuple(
        dataclasses.replace(
            layer,
            basis=torch.nn.functional.normalize(torch.randn(1, layer.dim, generator=g)),
            strengths=layer.strengths[:1],
        )
        for layer in edit.layers
    )
    return dataclasses.replace(edit, layers=layers)


def loaded_weights(model) -> dict[str, torch.Tensor]:
    """The diffusion model's weights as ComfyUI loads them for `model` (patches applied), cloned."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model], force_full_load=True)
    return {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def computed_weights(model, names: list[str]) -> dict[str, torch.Tensor]:
    """{layer name: its weight as the forward computes with it, float32} after a full load of `model`: an
    fp8-scaled weight times its scale, a GGUF weight dequantized by ComfyUI-GGUF with its patches applied."""
    import comfy.model_management

    with torch.inference_mode():  # as ComfyUI runs a prompt (an fp8 patch is rounded without gradients)
        comfy.model_management.load_models_gpu([model], force_full_load=True)
        return _computed(model, names)


def _computed(model, names: list[str]) -> dict[str, torch.Tensor]:
    root = model.model.diffusion_model
    out = {}
    for name in names:
        layer = root.get_submodule(name)
        if getattr(layer.weight, "tensor_type", None) is not None and hasattr(layer, "get_weight"):
            out[name] = layer.get_weight(layer.weight, torch.float32).as_subclass(torch.Tensor).float().clone()
        else:
            scale = getattr(layer, "scale_weight", None)
            W = layer.weight.detach().float()
            out[name] = (W * scale.detach().float() if scale is not None else W).clone()
    return out


def check_applied_and_exported(
    nodes: dict, model, weights: dict[str, torch.Tensor], edit, loras: Path, caplog, prefix: str, concept: str
) -> None:
    """ApplyRefusalToModel gives W (I - P^T diag(s) Q) on every edited weight (a projection has P = Q), the LoRA that
    SaveRefusalAsLoRA writes into `loras` gives the same through the stock LoraLoaderModelOnly with every key
    mapped, both to 1e-3 of max|W|, and the base model ends as loaded."""
    import logging

    import nodes as comfy_nodes

    edited = loaded_weights(nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0])
    nodes["SaveRefusalAsLoRA"].execute(model, edit, 1.0, prefix, concept)
    files = sorted(p.relative_to(loras).as_posix() for p in loras.rglob("*.safetensors"))
    with caplog.at_level(logging.WARNING):
        got = loaded_weights(comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, files[0], 1.0)[0])
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()], "ComfyUI left LoRA keys unmapped"
    for name, (P, s, Q) in edit.maps().items():
        key = f"{name}.weight"
        W = weights[key].float().double()
        delta = P.double().T @ torch.diag(s.double()) @ Q.double()
        want = (W @ (torch.eye(W.shape[1], dtype=torch.float64) - delta)).float()
        scale = float(W.abs().max())
        assert float((edited[key] - want).abs().max()) <= 1e-3 * scale, name
        assert float((got[key] - edited[key]).abs().max()) <= 1e-3 * scale, name
    assert base_untouched(model, weights)


def edit_residual(W_edited: torch.Tensor, W: torch.Tensor, d: torch.Tensor, s: float) -> float:
    """||W' d - (1 - s) W d|| / ||W d||: how far the edited weight is from W (I - s d d^T) along its direction d
    [d_in] (s the edit's strength), relative to what W reads of d."""
    W, W_edited, d = W.double(), W_edited.double(), d.double()
    return float((W_edited @ d - (1.0 - s) * (W @ d)).norm() / (W @ d).norm())


def reads_as_edited(W_edited: torch.Tensor, W: torch.Tensor, d: torch.Tensor, s: float, tol: float = 1e-4) -> bool:
    """W' d = (1 - s) W d, to tol of |W|: the edited weight reads its direction d [d_in] as the edit W (I - s d d^T)
    at strength s (the edit's own, times Apply's) leaves it (nothing of it at s = 1, the paper's)."""
    W, W_edited, d = W.float(), W_edited.float(), d.float()
    return float((W_edited @ d - (1.0 - s) * (W @ d)).norm()) <= tol * float(W.norm())


def base_untouched(model, weights: dict[str, torch.Tensor]) -> bool:
    """After unloading, the shared module holds exactly `weights` and `model` carries no patch."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    now = model.model.diffusion_model.state_dict()
    return all(torch.equal(now[k], v.to(now[k].dtype)) for k, v in weights.items()) and not model.patches


def outputs(model, conditionings: dict, latent: torch.Tensor, sigmas=(0.9, 0.6, 0.3)) -> dict[str, torch.Tensor]:
    """{text: the model's predictions at each sigma, flattened and concatenated} (loads `model` once)."""
    fwd = pack_module("nodes.host.forward").make_forward(model)
    return {t: torch.cat([fwd(c, latent, s).flatten() for s in sigmas]) for t, c in conditionings.items()}


def held_out_scorer(nodes, model, clip, latent: torch.Tensor) -> Callable[[object], tuple[float, float]]:
    """score(edit) -> (leakage, collateral) of `edit` applied to `model` by Apply Refusal To Model at strength 1, on
    the held-out prompts of prompts_unseen.py encoded by `clip`; the unedited model's outputs are computed once."""
    from refusal_pack.refusal_core.metrics import collateral, leakage

    texts = [t for p in HELD_OUT_PAIRS for t in p] + HELD_OUT_NEUTRAL
    enc = {t: host().encode.encode_prompt(clip, t).conditioning for t in texts}
    before = outputs(model, enc, latent)

    def score(edit) -> tuple[float, float]:
        after = outputs(nodes["ApplyRefusalToModel"].execute(model, edit, 1.0).result[0], enc, latent)
        return (
            leakage(
                [(before[u], before[s]) for u, s in HELD_OUT_PAIRS], [(after[u], after[s]) for u, s in HELD_OUT_PAIRS]
            ),
            collateral([before[n] for n in HELD_OUT_NEUTRAL], [after[n] for n in HELD_OUT_NEUTRAL]),
        )

    return score
