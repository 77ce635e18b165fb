"""Command line: export a saved refusal vector as a standard LoRA for a base checkpoint, outside ComfyUI.

    python -m refusal_core export-lora --base wan2.1_t2v_1.3B_fp16.safetensors \\
        --vector nudity_00001.safetensors --out nudity_lora.safetensors [--strength 1.0] [--concept nudity]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from .defaults import STRENGTH
from .edit import RefusalEdit
from .families import detect_family, model_prefix
from .io import save_atomic
from .types import RefusalError
from .weights import check_strength

# safetensors' dtype names of the float formats the factors may take (lora.lora_dtype); any other is stored float32.
_STORED = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# How diffusion-model weights are prefixed in the checkpoints people share.
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")


def export_lora(
    base: Path, vector: Path, out: Path, strength: float = STRENGTH, concept: str = "", force: bool = False
) -> dict[str, int]:
    """Write the LoRA of `vector` for the diffusion model in `base`; returns {"layers": n, "bytes": size}."""
    if out.exists() and not force:
        raise RefusalError(f"'{out}' exists: choose another --out or pass --force")
    edit = RefusalEdit.load(vector)
    try:
        handle = safe_open(str(base), framework="pt")
    except Exception as e:  # safetensors raises its own error types for unreadable files
        raise RefusalError(f"'{base}' is not a readable .safetensors checkpoint: {e}") from None
    with handle as f:
        keys = list(f.keys())
        prefix = model_prefix(keys, PREFIXES)
        names = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
        shapes = {
            n[: -len(".weight")]: tuple(f.get_slice(prefix + n).get_shape()) for n in names if n.endswith(".weight")
        }
        edit.check_fits(detect_family(names), shapes)
        key_set = set(keys)

        def weight(name: str):
            """As ComfyUI computes with it: float32, times its scale in an fp8-scaled checkpoint."""
            W = f.get_tensor(f"{prefix}{name}.weight").float()
            scale = f"{prefix}{name}.scale_weight"
            return W * f.get_tensor(scale).float() if scale in key_set else W

        tensors = edit.to_lora(
            weight,
            strength,
            lambda name: _STORED.get(f.get_slice(f"{prefix}{name}.weight").get_dtype(), torch.float32),
        )
    save_atomic(tensors, out, edit.lora_metadata(strength, concept))
    return {"layers": len(edit.bases()), "bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m refusal_core", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export-lora", help="write a refusal vector as a LoRA for a base checkpoint")
    ex.add_argument(
        "--base",
        type=Path,
        required=True,
        help="the diffusion model checkpoint (.safetensors) the vector was made from",
    )
    ex.add_argument("--vector", type=Path, required=True, help="a refusal vector saved by Save Refusal Vector")
    ex.add_argument("--out", type=Path, required=True, help="the LoRA file to write")
    ex.add_argument(
        "--strength", type=float, default=STRENGTH, help="lambda baked into the LoRA (load it at strength 1)"
    )
    ex.add_argument("--concept", default="", help="name of the erased concept, for the file's metadata")
    ex.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)
    try:
        check_strength(args.strength, "--strength")
        info = export_lora(args.base, args.vector, args.out, args.strength, args.concept, args.force)
    except RefusalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {info['layers']} layers, {info['bytes']} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
