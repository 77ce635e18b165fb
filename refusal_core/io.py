"""Refusal vectors as .safetensors files with metadata (never pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .stats import Moments, Rows
from .types import LayerVector, RefusalError, RefusalVector

FORMAT = "refusal_vector/1"
MAX_FILE_BYTES = 4 << 30


def save_atomic(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """safetensors.save_file to a temporary file in the same folder, renamed when complete: an
    interrupted or failed save leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_refusal_vector(rv: RefusalVector, path: str | os.PathLike) -> Path:
    """Write rv atomically (see save_atomic)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    layers_meta = []
    for i, layer in enumerate(rv.layers):
        tensors[f"{i}.r"] = layer.r.float().contiguous()
        counts = {}
        for name in ("diffs", "neutral"):
            counts[name] = _put_rows(tensors, f"{i}.{name}", getattr(layer, name))
        if layer.direction is not None:
            tensors[f"{i}.direction"] = layer.direction.float().contiguous()
        if layer.spectrum is not None:
            tensors[f"{i}.spectrum"] = layer.spectrum.float().contiguous()
        layers_meta.append(
            {"point": layer.point, "edit_keys": list(layer.edit_keys), "k_used": layer.k_used, "retained": layer.retained,
             "strengths": list(layer.strengths) if layer.strengths is not None else None,
             **{f"{name}_count": n for name, n in counts.items() if n is not None}}
        )
    meta = {str(k): str(v) for k, v in rv.meta.items()}
    meta["format"] = FORMAT
    meta["layers"] = json.dumps(layers_meta)
    return save_atomic(tensors, path, meta)


def load_refusal_vector(path: str | os.PathLike) -> RefusalVector:
    path = Path(path)
    if not path.is_file():
        raise RefusalError(f"refusal vector file '{path.name}' does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise RefusalError(f"'{path.name}' is larger than {MAX_FILE_BYTES >> 30} GiB: not a refusal vector file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RefusalError(f"'{path.name}' is not a readable .safetensors file (truncated or corrupt?): {e}") from None
    if meta.get("format") != FORMAT:
        raise RefusalError(f"'{path.name}' is a .safetensors file but not a refusal vector (no '{FORMAT}' metadata)")
    try:
        layers_meta = json.loads(meta.pop("layers"))
        meta.pop("format")
        layers = []
        for i, lm in enumerate(layers_meta):
            layers.append(
                LayerVector(
                    point=str(lm["point"]),
                    edit_keys=tuple(str(k) for k in lm["edit_keys"]),
                    diffs=_get_rows(tensors, f"{i}.diffs", lm.get("diffs_count")),
                    neutral=_get_rows(tensors, f"{i}.neutral", lm.get("neutral_count")),
                    r=tensors[f"{i}.r"],
                    direction=tensors.get(f"{i}.direction"),
                    spectrum=tensors.get(f"{i}.spectrum"),
                    k_used=int(lm["k_used"]),
                    retained=float(lm["retained"]),
                    strengths=tuple(float(x) for x in lm["strengths"]) if lm.get("strengths") is not None else None,
                )
            )
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
        raise RefusalError(f"'{path.name}' is damaged: its layer table does not match its tensors ({e})") from None
    for layer in layers:
        _check_layer(layer, path.name)
    return RefusalVector(layers=tuple(layers), meta=meta)


def _put_rows(tensors: dict[str, torch.Tensor], key: str, X: Rows) -> int | None:
    """Rows as '<key>' [n, d] float32; Moments as '<key>.total' [d] and '<key>.gram' [d, d] in float64
    (centering subtracts large terms) plus their count, which is returned for the layer table."""
    if isinstance(X, Moments):
        tensors[f"{key}.total"] = X.total.double().contiguous()
        tensors[f"{key}.gram"] = X.gram.double().contiguous()
        return X.count
    tensors[key] = X.float().contiguous()
    return None


def _get_rows(tensors: dict[str, torch.Tensor], key: str, count: object) -> Rows:
    if key in tensors:
        return tensors[key]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{key} has moments but no valid row count")
    total, gram = (t.double() if t.is_floating_point() else t for t in (tensors[f"{key}.total"], tensors[f"{key}.gram"]))
    return Moments(count, total, gram)


def _check_layer(layer: LayerVector, name: str) -> None:
    """Shapes and values a refusal vector must have; anything else is a damaged or foreign file."""
    d = layer.r.shape[0] if layer.r.ndim == 1 else -1
    problems = []
    if d < 1:
        problems.append("r is not a vector")
    stats = []
    for field, t in (("diffs", layer.diffs), ("neutral", layer.neutral)):
        if isinstance(t, Moments):
            if t.total.shape != (d,) or t.gram.shape != (d, d):
                problems.append(f"{field} moments are not [{d}] and [{d}, {d}]")
            stats += [t.total, t.gram]
        elif t.ndim != 2 or t.shape[1] != d:
            problems.append(f"{field} is not [rows, {d}]")
        else:
            stats.append(t)
    if layer.direction is not None and (layer.direction.shape[-1:] != (d,) or layer.direction.ndim not in (1, 2)):
        problems.append("direction does not match r")
    m = layer.direction.shape[0] if layer.direction is not None and layer.direction.ndim == 2 else 1
    if layer.strengths is not None and len(layer.strengths) != m:
        problems.append("strengths do not match the directions")
    if layer.spectrum is not None and layer.spectrum.ndim != 1:
        problems.append("spectrum is not a vector")
    for t in (layer.r, *stats, layer.direction, layer.spectrum):
        if t is not None and (not t.is_floating_point() or not torch.isfinite(t).all()):
            problems.append("it holds non-float or non-finite values")
            break
    if not layer.edit_keys:
        problems.append("it names no layer to edit")
    if problems:
        raise RefusalError(f"'{name}' is damaged at {layer.point}: {'; '.join(problems)}")
