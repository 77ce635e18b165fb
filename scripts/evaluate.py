"""Evaluate a saved refusal vector on a model, outside a graph: the Refusal Probe node's measurement
(held-out leakage and collateral at the output and at every edited layer, projections on d before and
after) with the edit applied exactly as Apply Refusal To Model applies it. The model and text encoder
are loaded in this process by ComfyUI's own loaders (UNETLoader, CLIPLoader / DualCLIPLoader).

    python scripts/evaluate.py --unet wan2.1_t2v_1.3B_fp16.safetensors \\
        --clip umt5_xxl_fp8_e4m3fn_scaled.safetensors --clip-type wan \\
        --vector nudity_00001.safetensors --out eval/nudity [--pairs held_out.txt] [--strength 1.0]

Writes into --out: report.json (every number), report.txt (the node's report), probe.png (leakage per
layer and at the output) and, when the vector carries them, spectrum.png and layer_scores.png. A
non-empty --out is refused unless --force; nothing is written when the run fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pack import REPO, import_host, import_pack, load_diffusion_model_file, load_text_encoder_files

log = logging.getLogger("refusal.evaluate")


def default_comfyui() -> Path:
    """$COMFYUI_PATH, else the ComfyUI this pack is installed in (custom_nodes/<pack>), else ~/ComfyUI."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).expanduser()
    if REPO.parent.name == "custom_nodes" and (REPO.parents[1] / "main.py").is_file():
        return REPO.parents[1]
    return Path.home() / "ComfyUI"


def has_accelerator() -> bool:
    """A device ComfyUI would pick over the CPU (without one, ComfyUI must be told --cpu)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


def read_prompts(args):
    """(pairs, neutral, source): --pairs file or --preset, --neutral file; the probe node's defaults otherwise."""
    from refusal_pack.refusal_core import presets
    from refusal_pack.refusal_core import prompts as P
    from refusal_pack.refusal_core.types import RefusalError

    neutral: list[str] = []
    if args.pairs and args.preset:
        raise RefusalError("give --pairs or --preset, not both")
    if args.pairs:
        if not args.pairs.is_file():
            raise RefusalError(f"--pairs file '{args.pairs}' does not exist")
        pairs, neutral = P.read_pairs_file(args.pairs)
        source = f"file {args.pairs.name}"
    elif args.preset:
        pairs, neutral = presets.load_preset(args.preset, args.preset_subject)
        source = f"preset {args.preset} (if the vector was extracted from this preset these pairs are not held out)"
    else:
        pairs, neutral = presets.held_out()
        source = "the Refusal Probe node's default held-out nudity phrasings"
    if args.neutral:
        if args.neutral.suffix.lower() != ".txt" or not args.neutral.is_file():
            raise RefusalError(f"--neutral '{args.neutral}' must be an existing .txt file, one prompt per line")
        neutral = P.parse_prompt_lines(args.neutral.read_text(encoding="utf-8-sig"))
    elif not neutral:
        neutral = presets.held_out()[1]
    P.validate_pairs(pairs, neutral)
    return pairs, neutral, source


def parser() -> argparse.ArgumentParser:
    import_pack()
    from refusal_pack.refusal_core import defaults

    ap = argparse.ArgumentParser(
        prog="python scripts/evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--comfyui",
        type=Path,
        default=None,
        help="the ComfyUI checkout to load models with (default: $COMFYUI_PATH, the ComfyUI this pack is installed in, ~/ComfyUI)",
    )
    ap.add_argument(
        "--unet",
        type=Path,
        required=True,
        help="the diffusion model file (what UNETLoader loads from models/diffusion_models)",
    )
    ap.add_argument(
        "--weight-dtype",
        default="default",
        help="UNETLoader's weight_dtype: default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2",
    )
    ap.add_argument(
        "--clip",
        type=Path,
        nargs="+",
        required=True,
        help="the text encoder file (two files for DualCLIPLoader, e.g. HunyuanVideo's clip_l and llava_llama3)",
    )
    ap.add_argument(
        "--clip-type", default="wan", help="CLIPLoader's type (wan; hunyuan_video, ltxv, mochi, ...), default wan"
    )
    ap.add_argument(
        "--vector", type=Path, required=True, help="a refusal vector saved by Save Refusal Vector (.safetensors)"
    )
    ap.add_argument(
        "--pairs",
        type=Path,
        help="held-out pairs NOT used for extraction: .txt 'unsafe | safe' lines, .csv or .json "
        "(JSON may carry neutral prompts); default: the Refusal Probe node's held-out pairs",
    )
    ap.add_argument("--preset", help="held-out pairs from one of the pack's presets instead of --pairs")
    ap.add_argument("--preset-subject", default="", help="the name a preset needs (character, brand, person)")
    ap.add_argument(
        "--neutral", type=Path, help="unrelated prompts, one per line (.txt): how far they move is the collateral"
    )
    ap.add_argument(
        "--strength",
        type=float,
        default=defaults.STRENGTH,
        help="lambda of Apply Refusal To Model (0 = no edit, 1 = the paper)",
    )
    ap.add_argument("--noise-levels", default=defaults.SIGMAS_TEXT, help="sigmas at which outputs are compared")
    ap.add_argument("--width", type=int, default=defaults.WIDTH, help="probe latent width in pixels")
    ap.add_argument("--height", type=int, default=defaults.HEIGHT, help="probe latent height in pixels")
    ap.add_argument("--length", type=int, default=defaults.LENGTH, help="probe video length in frames")
    ap.add_argument("--seed", type=int, default=defaults.PROBE_SEED, help="seed of the shared probe noise latent")
    ap.add_argument("--out", type=Path, required=True, help="folder for report.json and the charts (created)")
    ap.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    ap.add_argument("--verbose", action="store_true", help="ComfyUI's and the pack's log messages")
    return ap


def evaluate(args) -> dict:
    """Everything of one run in memory: {file name: bytes} for --out (raises RefusalError for user mistakes)."""
    import_pack()
    from outdir import check_out_dir, png_bytes
    from refusal_pack.refusal_core.edit import RefusalEdit
    from refusal_pack.refusal_core.report import plot
    from refusal_pack.refusal_core.types import RefusalError
    from refusal_pack.refusal_core.weights import check_strength

    check_out_dir(args.out, args.force)
    check_strength(args.strength, "--strength")
    for name in ("width", "height", "length"):
        if getattr(args, name) < 1:
            raise RefusalError(f"--{name} must be at least 1")
    edit = RefusalEdit.load(args.vector)
    pairs, neutral, source = read_prompts(args)

    version = import_host((args.comfyui or default_comfyui()).expanduser(), args.cpu or not has_accelerator())
    from refusal_pack.nodes.apply import ApplyRefusalToModel
    from refusal_pack.nodes.host import models
    from refusal_pack.nodes.probe import run_probe
    from refusal_pack.refusal_core.prompts import parse_sigmas

    sigmas = parse_sigmas(args.noise_levels)
    log.info("loading %s and %s", args.unet.name, ", ".join(c.name for c in args.clip))
    model = load_diffusion_model_file(args.unet, args.weight_dtype)
    clip = load_text_encoder_files(args.clip, args.clip_type)
    edited = ApplyRefusalToModel.execute(model, edit, args.strength).result[0]
    result = run_probe(
        model, edited, clip, edit, pairs, neutral, sigmas, args.width, args.height, args.length, args.seed
    )

    files = {"probe.png": png_bytes(plot.probe_chart(result))}
    if any(layer.spectrum is not None and layer.spectrum.numel() for layer in edit.layers):
        files["spectrum.png"] = png_bytes(plot.spectrum_image(edit))
    if json.loads(edit.meta.get("layer_scores", "{}") or "{}"):
        files["layer_scores.png"] = png_bytes(plot.layer_scores_image(edit))
    report = result.report()
    data = {
        **result.as_dict(),
        "report": report,
        "model_family": models.model_family(model),
        "inputs": {
            "unet": args.unet.name,
            "weight_dtype": args.weight_dtype,
            "clip": [c.name for c in args.clip],
            "clip_type": args.clip_type,
            "vector": args.vector.name,
            "strength": args.strength,
            "noise_levels": sigmas,
            "width": args.width,
            "height": args.height,
            "length": args.length,
            "seed": args.seed,
            "pairs_source": source,
            "pairs": [[p.unsafe, p.safe] for p in pairs],
            "neutral": neutral,
        },
        "vector_meta": dict(edit.meta),
        "charts": sorted(files),
        "comfyui_version": version,
    }
    files["report.json"] = (json.dumps(data, indent=2) + "\n").encode()
    files["report.txt"] = (report + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        log.setLevel(logging.INFO)
        log.addHandler(logging.StreamHandler(sys.stderr))
        log.propagate = False
    import_pack()
    from outdir import OutputFolderError, write_out_dir
    from refusal_pack.refusal_core.types import RefusalError

    try:
        files = evaluate(args)
        written = write_out_dir(args.out, files, args.force)
    except (RefusalError, OutputFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = json.loads(files["report.json"])
    print(report["report"])
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
