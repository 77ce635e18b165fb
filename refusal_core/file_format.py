"""The file format of edits (and, on request, their statistics): .safetensors with metadata, never pickle.

Format "refusal_edit/1": per layer i the basis "{i}.basis" [m, d], its spectrum and, for a map (not a
projection), its left basis "{i}.left" [m, d] (a file without it is a projection); the layer table
(points, edit keys, strengths, k, retained) and the edit's metadata as JSON strings. With statistics,
"stats.{i}.r", "stats.{i}.diffs" / ".neutral" (rows [n, d] float32, or moments ".total" / ".gram"
float64), at text sites ".unsafe" / ".safe" (the aligned rows; a layer that shares another's names it
in its table as "unsafe_of" / "safe_of"), ".keep" / ".ordinary" (the keep prompts' and the ordinary text's rows, when there are any) and
their own table and metadata. A file of the first release ("refusal_vector/1": one
layer table holding r, D, E and, once factorized, the direction) loads as its statistics and, when
it was factorized or combined, its edit, which applies exactly as that release applied it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .compatibility import orthonormal
from .io import save_atomic
from .stats import Moments, Rows
from .types import LayerEdit, LayerStats, RefusalError, RefusalStats
from .weights import orthonormal_rows

if TYPE_CHECKING:  # edit.py builds RefusalEdit from what this module reads
    from .edit import RefusalEdit

# (layers, meta, source): what RefusalEdit is made of, as read from a file
EditParts = tuple[tuple[LayerEdit, ...], dict[str, str], "RefusalStats | None"]

FORMAT = "refusal_edit/1"
LEGACY_FORMAT = "refusal_vector/1"
MAX_FILE_BYTES = 4 << 30


def save_refusal_edit(edit: RefusalEdit, path: str | os.PathLike, include_statistics: bool = False) -> Path:
    """Write the edit atomically (see save_atomic); with include_statistics, also the RefusalStats it was
    solved from (much larger: up to d x d per layer), so that it can be factorized again later."""
    if include_statistics and edit.source is None:
        raise RefusalError(
            "this refusal vector carries no statistics to save (it was combined or loaded without them): "
            "turn include_statistics off"
        )
    tensors: dict[str, torch.Tensor] = {}
    table = []
    for i, layer in enumerate(edit.layers):
        tensors[f"{i}.basis"] = layer.basis.float().contiguous()
        if layer.spectrum is not None:
            tensors[f"{i}.spectrum"] = layer.spectrum.float().contiguous()
        if layer.left is not None:
            tensors[f"{i}.left"] = layer.left.float().contiguous()
        table.append(
            {
                "point": layer.point,
                "edit_keys": list(layer.edit_keys),
                "strengths": list(layer.strengths),
                "k_used": layer.k_used,
                "retained": layer.retained,
            }
        )
    meta = {str(k): str(v) for k, v in edit.meta.items()}
    meta["format"] = FORMAT
    meta["layers"] = json.dumps(table)
    if include_statistics:
        stats_table = []
        written: dict[tuple[str, int], int] = {}
        for i, layer in enumerate(edit.source.layers):
            tensors[f"stats.{i}.r"] = layer.r.float().contiguous()
            counts = {
                name: _put_rows(tensors, f"stats.{i}.{name}", getattr(layer, name))
                for name in ("diffs", "neutral", "keep", "ordinary")
                if getattr(layer, name) is not None
            }
            row = {
                "point": layer.point,
                "edit_keys": list(layer.edit_keys),
                **{f"{name}_count": n for name, n in counts.items() if n is not None},
            }
            for name in (
                "unsafe",
                "safe",
            ):  # the closed-form map's rows, at text sites; blocks that read one input share them
                t = getattr(layer, name)
                if t is not None:
                    first = written.setdefault((name, id(t)), i)
                    if first == i:
                        tensors[f"stats.{i}.{name}"] = t.float().contiguous()
                    else:
                        row[f"{name}_of"] = first
            stats_table.append(row)
        meta["stats_layers"] = json.dumps(stats_table)
        meta["stats_meta"] = json.dumps({str(k): str(v) for k, v in edit.source.meta.items()})
    return save_atomic(tensors, path, meta)


def read_refusal_file(path: str | os.PathLike) -> tuple[EditParts | None, RefusalStats | None]:
    """(the edit's parts, statistics) from a file of either format; either may be None when the file holds
    none (an unfactorized first-release vector has statistics only; an edit saved without them, none)."""
    path = Path(path)
    if not path.is_file():
        raise RefusalError(f"refusal vector file '{path.name}' does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise RefusalError(f"'{path.name}' is larger than {MAX_FILE_BYTES >> 30} GiB: not a refusal vector file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RefusalError(f"'{path.name}' is not a readable .safetensors file (truncated or corrupt?): {e}") from None
    fmt = meta.pop("format", None)
    if fmt not in (FORMAT, LEGACY_FORMAT):
        raise RefusalError(f"'{path.name}' is a .safetensors file but not a refusal vector (no '{FORMAT}' metadata)")
    try:
        edit, stats = (_read_edit if fmt == FORMAT else _read_legacy)(tensors, meta)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError, IndexError) as e:
        raise RefusalError(f"'{path.name}' is damaged: its layer table does not match its tensors ({e})") from None
    for layer in stats.layers if stats is not None else ():
        _check_stats(layer, path.name)
    for layer in edit[0] if edit is not None else ():
        _check_edit(layer, path.name)
    return edit, stats


def _read_edit(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> tuple[EditParts, RefusalStats | None]:
    table = json.loads(meta.pop("layers"))
    stats_table = json.loads(meta.pop("stats_layers")) if "stats_layers" in meta else None
    stats_meta = json.loads(meta.pop("stats_meta")) if "stats_meta" in meta else {}
    layers = tuple(
        LayerEdit(
            str(t["point"]),
            tuple(str(k) for k in t["edit_keys"]),
            tensors[f"{i}.basis"],
            tuple(float(x) for x in t["strengths"]),
            tensors.get(f"{i}.spectrum"),
            int(t["k_used"]),
            float(t["retained"]),
            tensors.get(f"{i}.left"),
        )
        for i, t in enumerate(table)
    )
    stats = None
    if stats_table is not None:
        stats = RefusalStats(
            tuple(_stats_layer(tensors, f"stats.{i}", t) for i, t in enumerate(stats_table)),
            {str(k): str(v) for k, v in stats_meta.items()},
        )
    return (layers, meta, stats), stats


def _read_legacy(
    tensors: dict[str, torch.Tensor], meta: dict[str, str]
) -> tuple[EditParts | None, RefusalStats | None]:
    """A first-release file: its statistics, and its edit built as that release applied it (a stack of unit
    directions, the ones at strength 0 left out, orthonormalized in order)."""
    table = json.loads(meta.pop("layers"))
    stats = RefusalStats(tuple(_stats_layer(tensors, str(i), t) for i, t in enumerate(table)), dict(meta))
    if not all(f"{i}.direction" in tensors for i in range(len(table))):
        return None, stats
    layers = []
    for i, t in enumerate(table):
        D = tensors[f"{i}.direction"]
        D = D[None] if D.ndim == 1 else D
        s = torch.tensor([float(x) for x in t["strengths"]] if t.get("strengths") is not None else [1.0] * D.shape[0])
        keep = s != 0
        if not bool(keep.any()):
            Q, strengths = D[:1] / D[:1].norm(), (0.0,)
        else:
            Q, kept = orthonormal_rows(D[keep])
            strengths = tuple(float(x) for x in s[keep][kept])
        layers.append(
            LayerEdit(
                str(t["point"]),
                tuple(str(k) for k in t["edit_keys"]),
                Q,
                strengths,
                tensors.get(f"{i}.spectrum"),
                int(t["k_used"]),
                float(t["retained"]),
            )
        )
    combined = meta.get("method") == "combined"
    edit_meta = {**meta, "edit": "combined" if combined else "refusal_direction"}
    # a combined file's statistics are its concepts' rows stacked: nothing to factorize again
    return (tuple(layers), edit_meta, None if combined else stats), None if combined else stats


def _stats_layer(tensors: dict[str, torch.Tensor], key: str, t: dict) -> LayerStats:
    return LayerStats(
        str(t["point"]),
        tuple(str(k) for k in t["edit_keys"]),
        _get_rows(tensors, f"{key}.diffs", t.get("diffs_count")),
        _get_rows(tensors, f"{key}.neutral", t.get("neutral_count")),
        tensors[f"{key}.r"],
        *(tensors.get(_shared_key(key, t, name)) for name in ("unsafe", "safe")),
        **{
            name: _get_rows(tensors, f"{key}.{name}", t.get(f"{name}_count"))
            for name in ("keep", "ordinary")
            if _has_rows(tensors, f"{key}.{name}")
        },
    )


def _has_rows(tensors: dict[str, torch.Tensor], key: str) -> bool:
    return key in tensors or f"{key}.gram" in tensors


def _shared_key(key: str, t: dict, name: str) -> str:
    """The tensor name of a layer's aligned rows: its own, or those of the first layer that shares them."""
    if f"{name}_of" not in t:
        return f"{key}.{name}"
    return f"{key.rsplit('.', 1)[0]}.{int(t[f'{name}_of'])}.{name}"


def _put_rows(tensors: dict[str, torch.Tensor], key: str, X: Rows) -> int | None:
    """Rows as '<key>' [n, d] float32; Moments as '<key>.total' [d] and '<key>.gram' [d, d] in float64
    (centering subtracts large terms) plus their count, which is returned for the layer table."""
    if isinstance(X, Moments):
        tensors[f"{key}.total"] = X.total.double().contiguous()
        tensors[f"{key}.gram"] = X.gram.double().contiguous()
        return X.count
    # a copy: blocks that read one input share one tensor of rows, which safetensors refuses to write twice
    tensors[key] = X.float().contiguous().clone()
    return None


def _get_rows(tensors: dict[str, torch.Tensor], key: str, count: object) -> Rows:
    if key in tensors:
        return tensors[key]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{key} has moments but no valid row count")
    total, gram = (
        t.double() if t.is_floating_point() else t for t in (tensors[f"{key}.total"], tensors[f"{key}.gram"])
    )
    return Moments(count, total, gram)


def _finite_floats(*ts: torch.Tensor | None) -> bool:
    return all(t is None or (t.is_floating_point() and bool(torch.isfinite(t).all())) for t in ts)


def _check_stats(layer: LayerStats, name: str) -> None:
    """Shapes and values statistics must have; anything else is a damaged or foreign file."""
    d = layer.r.shape[0] if layer.r.ndim == 1 else -1
    problems = []
    if d < 1:
        problems.append("r is not a vector")
    stats = []
    for field, t in (
        ("diffs", layer.diffs),
        ("neutral", layer.neutral),
        ("keep", layer.keep),
        ("ordinary", layer.ordinary),
    ):
        if t is None:
            continue
        if isinstance(t, Moments):
            if t.total.shape != (d,) or t.gram.shape != (d, d):
                problems.append(f"{field} moments are not [{d}] and [{d}, {d}]")
            stats += [t.total, t.gram]
        elif t.ndim != 2 or t.shape[1] != d:
            problems.append(f"{field} is not [rows, {d}]")
        else:
            stats.append(t)
    if (
        (layer.unsafe is None) != (layer.safe is None)
        or any(t is not None and (t.ndim != 2 or t.shape[1] != d) for t in (layer.unsafe, layer.safe))
        or (layer.unsafe is not None and layer.unsafe.shape != layer.safe.shape)
    ):
        problems.append(f"its unsafe and safe rows are not two [rows, {d}] of one shape")
    else:
        stats += [t for t in (layer.unsafe, layer.safe) if t is not None]
    if not _finite_floats(layer.r, *stats):
        problems.append("it holds non-float or non-finite values")
    if not layer.edit_keys:
        problems.append("it names no layer to edit")
    if problems:
        raise RefusalError(f"'{name}' is damaged at {layer.point}: {'; '.join(problems)}")


def _check_edit(layer: LayerEdit, name: str) -> None:
    problems = []
    Q = layer.basis
    if Q.ndim != 2 or Q.shape[0] < 1 or Q.shape[1] < 1:
        problems.append("its basis is not [m, d]")
    elif len(layer.strengths) != Q.shape[0]:
        problems.append("strengths do not match the basis")
    if layer.spectrum is not None and layer.spectrum.ndim != 1:
        problems.append("spectrum is not a vector")
    if not _finite_floats(Q, layer.spectrum) or not all(map(math.isfinite, layer.strengths)):
        problems.append("it holds non-float or non-finite values")
    elif layer.left is not None and layer.left.shape != Q.shape:
        problems.append("its left basis does not match its basis")
    elif not _finite_floats(layer.left):
        problems.append("its left basis holds non-float or non-finite values")
    elif Q.ndim == 2 and Q.shape[0] >= 1 and not all(orthonormal(B) for B in (Q, layer.left) if B is not None):
        problems.append("its basis is not orthonormal")
    if not layer.edit_keys:
        problems.append("it names no layer to edit")
    if problems:
        raise RefusalError(f"'{name}' is damaged at {layer.point}: {'; '.join(problems)}")
