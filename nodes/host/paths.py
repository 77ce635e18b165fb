"""ComfyUI's folders: models/refusal_vectors, models/loras and the input folder; nothing outside them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import folder_paths

from ...refusal_core.types import RefusalError

VECTOR_FOLDER = "refusal_vectors"


def register_folders() -> None:
    """models/refusal_vectors, .safetensors only (idempotent)."""
    if VECTOR_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, VECTOR_FOLDER)
        folder_paths.folder_names_and_paths[VECTOR_FOLDER] = ([path], {".safetensors"})


def vector_files() -> list[str]:
    register_folders()
    return folder_paths.get_filename_list(VECTOR_FOLDER)


def vector_path(name: str) -> str:
    """Full path of a listed vector file; names outside the registered folders are refused."""
    register_folders()
    path = folder_paths.get_full_path(VECTOR_FOLDER, name)
    if path is None:
        raise RefusalError(f"refusal vector '{name}' is not in models/{VECTOR_FOLDER}: pick a file from the list")
    return path


def new_vector_path(prefix: str) -> Path:
    """models/refusal_vectors/<prefix>_00001.safetensors, the next free counter."""
    return new_file_path(VECTOR_FOLDER, prefix)


def new_lora_path(prefix: str) -> Path:
    """models/loras/<prefix>_00001.safetensors, where LoraLoaderModelOnly lists it."""
    return new_file_path("loras", prefix)


def new_file_path(folder: str, prefix: str) -> Path:
    """<first folder of a registered model folder>/<prefix>_NNNNN.safetensors; no '..' or absolute paths."""
    register_folders()
    check_prefix(prefix)
    root = Path(folder_paths.get_folder_paths(folder)[0]).resolve()
    base = (root / prefix).resolve()
    if root not in base.parents:
        raise RefusalError(f"filename prefix '{prefix}' leaves models/{folder}")
    n = 1
    while (p := base.parent / f"{base.name}_{n:05d}.safetensors").exists():
        n += 1
    return p


def check_prefix(prefix: str) -> None:
    """A filename prefix is folder names and a name of letters, digits, spaces, '-', '_' and '.'."""
    parts = (prefix or "").split("/")
    if not prefix or not all(re.fullmatch(r"[A-Za-z0-9_\-. ]+", p) and p.strip(". ") for p in parts):
        raise RefusalError(
            f"filename prefix '{prefix}' may only hold letters, digits, spaces, '-', '_', '.' and '/' between folder names "
            "(no empty, '.' or '..' parts)"
        )


def input_files(suffixes: tuple[str, ...]) -> list[str]:
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(
        f for f in os.listdir(folder) if f.lower().endswith(suffixes) and os.path.isfile(os.path.join(folder, f))
    )


def input_file_path(name: str) -> str:
    """A file directly in ComfyUI's input folder; anything else is refused."""
    folder = Path(folder_paths.get_input_directory()).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise RefusalError(f"pairs file '{name}' is not a file in ComfyUI's input folder")
    return str(path)
