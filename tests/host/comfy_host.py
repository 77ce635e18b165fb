"""Finding and importing a real ComfyUI checkout for the host tests (never a fake one)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PACK = "refusal_pack"  # import name of this repository as a ComfyUI custom node package


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
    path = str(comfy_path())
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)

    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def pack_module(name: str):
    return importlib.import_module(f"{PACK}.{name}")


def tiny_wan_file(path: Path, dim: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """A random Wan 2.1 T2V checkpoint with the real key names (fp32), for UNETLoader."""
    from safetensors.torch import save_file

    from refusal_core.testbed.tiny_wan import TinyWan, init_random

    model = init_random(TinyWan(dim=dim, ffn_dim=2 * dim, heads=max(1, dim // 128), layers=layers), seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def state_dict_of(model_patcher) -> dict[str, torch.Tensor]:
    """The weights as they sit in the module now (cloned)."""
    return {k: v.detach().clone() for k, v in model_patcher.model.diffusion_model.state_dict().items()}


def tiny_hunyuan_video_file(path: Path, seed: int = 0) -> Path:
    """A random HunyuanVideo checkpoint (hidden 128, one block of each kind) built from ComfyUI's own class."""
    import_host()
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    from safetensors.torch import save_file

    model = HunyuanVideo(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768, hidden_size=128, mlp_ratio=4.0,
                         num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2],
                         qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    save_file({k: torch.randn(v.shape, generator=g) * 0.02 for k, v in model.state_dict().items()}, str(path))
    return path


def tiny_sd3_file(path: Path, seed: int = 0) -> Path:
    """A random SD3-architecture image model (hidden 128, 2 blocks): a family the pack does not edit."""
    import_host()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    from safetensors.torch import save_file

    model = MMDiT(input_size=None, patch_size=2, in_channels=16, depth=2, out_channels=16, adm_in_channels=2048,
                  num_patches=64 * 64, pos_embed_max_size=64, qk_norm="rms", x_block_self_attn_layers=[],
                  context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
                  operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    save_file({k: torch.randn(v.shape, generator=g) * 0.02 for k, v in model.state_dict().items()}, str(path))
    return path
