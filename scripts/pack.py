"""The pack and a ComfyUI checkout imported outside ComfyUI, the one way scripts and tests do it.

ComfyUI imports a custom node folder as one package whose modules import each other relatively;
import_pack() does the same under the name PACK (importing it does no work). import_host() puts a
checkout on sys.path with its default options. The model file loaders load files as the core loader
nodes do (UNETLoader, CLIPLoader / DualCLIPLoader), for commands that take files instead of a graph.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACK = "refusal_pack"  # import name of this repository as a ComfyUI custom node package
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def import_pack() -> ModuleType:
    """The pack as a package named PACK (its modules import each other relatively); importing it does no work."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def import_host(comfyui: Path, cpu: bool) -> str:
    """Put the ComfyUI checkout on sys.path with its default options (CPU if asked); returns its version."""
    error = _refusal_error()
    if not (comfyui / "main.py").is_file():
        raise error(f"no ComfyUI checkout at '{comfyui}': pass --comfyui or set COMFYUI_PATH")
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (after the device option)

    try:
        from comfyui_version import __version__
    except ImportError:
        __version__ = "unknown"
    return __version__


def import_pack_module(name: str) -> ModuleType:
    """A module of the pack by its dotted name inside it ("nodes.host.models")."""
    import_pack()
    return importlib.import_module(f"{PACK}.{name}")


def load_diffusion_model_file(path: str | os.PathLike, weight_dtype: str = "default") -> Any:
    """A diffusion model file loaded as UNETLoader loads it (the same weight_dtype options); after import_host."""
    import comfy.sd
    import torch

    error = _refusal_error()
    if weight_dtype not in WEIGHT_DTYPES:
        raise error(f"weight dtype '{weight_dtype}' is not one of UNETLoader's: {', '.join(WEIGHT_DTYPES)}")
    options: dict[str, Any] = {}
    if weight_dtype.startswith("fp8_e4m3fn"):
        options["dtype"] = torch.float8_e4m3fn
        if weight_dtype.endswith("_fast"):
            options["fp8_optimizations"] = True
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    path = _existing_file(path, "diffusion model")
    try:
        model = comfy.sd.load_diffusion_model(path, model_options=options)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise error(
            f"ComfyUI could not load '{Path(path).name}' as a diffusion model (is it the video model's "
            f"diffusion_models file, not a checkpoint, LoRA or text encoder?): {str(e).splitlines()[0]}"
        ) from None
    import_pack_module("nodes.host.models").model_family(model)  # a clear error for a family the pack does not edit
    return model


def clip_types() -> list[str]:
    """ComfyUI's text encoder types (CLIPLoader's "type"), lower case; after import_host."""
    import comfy.sd

    return [t.name.lower() for t in comfy.sd.CLIPType]


def load_text_encoder_files(paths: list[str | os.PathLike], clip_type: str) -> Any:
    """Text encoder file(s) loaded as CLIPLoader (one file) or DualCLIPLoader (two) loads them; after import_host."""
    import comfy.sd
    import folder_paths

    error = _refusal_error()
    if clip_type not in clip_types():
        raise error(f"text encoder type '{clip_type}' is not one of ComfyUI's: {', '.join(clip_types())}")
    files = [_existing_file(p, "text encoder") for p in paths]
    try:
        return comfy.sd.load_clip(
            ckpt_paths=files,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            clip_type=comfy.sd.CLIPType[clip_type.upper()],
        )
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        names = ", ".join(Path(f).name for f in files)
        raise error(
            f"ComfyUI could not load {names} as a '{clip_type}' text encoder (for Wan: umt5_xxl with type wan; "
            f"for HunyuanVideo: clip_l and llava_llama3 with type hunyuan_video): {str(e).splitlines()[0]}"
        ) from None


def _existing_file(path: str | os.PathLike, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise _refusal_error()(f"{what} file '{path}' does not exist")
    return str(p)


def _refusal_error() -> type[Exception]:
    """The pack's user-facing error class, as the pack imported under PACK defines it."""
    return import_pack_module("refusal_core.types").RefusalError
