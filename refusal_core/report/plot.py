"""Eigenvalue spectrum of C per layer as an RGB image (Pillow, which ComfyUI ships)."""

from __future__ import annotations

import json
import math

import numpy as np

from ..edit import RefusalEdit
from ..types import RefusalStats

PANEL_W, PANEL_H, MAX_PANELS = 320, 200, 12


def _symlog(w: np.ndarray) -> np.ndarray:
    """Signed log scale in [-1, 1]: keeps the tail of the spectrum and negative eigenvalues visible."""
    scale = max(float(np.abs(w).max()), 1e-30)
    return np.sign(w) * np.log10(1 + 1e3 * np.abs(w) / scale) / 3.0004


def spectrum_image(edit: RefusalEdit) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1]: one panel per layer, eigenvalues of C in order, k marked."""
    from PIL import Image, ImageDraw

    layers = list(edit.layers)[:MAX_PANELS]
    cols = min(3, max(1, len(layers)))
    rows = max(1, math.ceil(len(layers) / cols))
    img = Image.new("RGB", (cols * PANEL_W, rows * PANEL_H + 24), "white")
    draw = ImageDraw.Draw(img)
    if edit.meta.get("method") == "closed_form":
        title = f"singular values of the map Delta   preserve={edit.meta.get('preserve')} ridge={edit.meta.get('ridge')} rank={edit.meta.get('rank')}"
    else:
        title = f"spectrum of C = C_r - alpha C_e   method={edit.meta.get('method')} k={edit.meta.get('k')} alpha={edit.meta.get('alpha')}"
    if len(edit.layers) > MAX_PANELS:
        title += f"   (first {MAX_PANELS} of {len(edit.layers)} layers)"
    draw.text((6, 6), title, fill="black")
    for i, layer in enumerate(layers):
        x0, y0 = (i % cols) * PANEL_W, 24 + (i // cols) * PANEL_H
        left, right, top, bottom = x0 + 34, x0 + PANEL_W - 8, y0 + 18, y0 + PANEL_H - 22
        draw.rectangle([left, top, right, bottom], outline="gray")
        caption = (
            f"rank {layer.rank}" if not layer.projection else f"k={layer.k_used}  kept {layer.retained:.2f} of |r|"
        )
        draw.text((x0 + 6, y0 + 2), f"{layer.point}  {caption}", fill="black")
        if layer.spectrum is None or layer.spectrum.numel() == 0:
            draw.text((left + 8, (top + bottom) // 2), "mean_diff: no factorization", fill="gray")
            continue
        w = layer.spectrum.double().cpu().numpy()
        y = _symlog(w)
        mid = (top + bottom) / 2
        half = (bottom - top) / 2 - 2
        draw.line([left, mid, right, mid], fill=(200, 200, 200))
        n = len(w)
        xs = [left + (right - left) * j / max(n - 1, 1) for j in range(n)]
        pts = [(xs[j], mid - half * y[j]) for j in range(n)]
        if len(pts) > 1:
            draw.line(pts, fill=(20, 80, 200), width=2)
        if 0 < layer.k_used <= n:
            xk = xs[layer.k_used - 1]
            draw.line([xk, top, xk, bottom], fill=(220, 30, 30), width=1)
            draw.text((min(xk + 3, right - 40), top + 2), f"k={layer.k_used}", fill=(220, 30, 30))
        draw.text((x0 + 2, top), "+max", fill="gray")
        draw.text((x0 + 2, bottom - 10), "-max", fill="gray")
        draw.text((left, bottom + 4), f"1 .. {n} eigenvalues (signed log)", fill="gray")
    return np.asarray(img, dtype=np.float32) / 255.0


def layer_scores_image(made: RefusalStats | RefusalEdit, width: int = 640, height: int = 240) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1]: a bar per candidate block (separation d'), kept blocks in red."""
    from PIL import Image, ImageDraw

    scores = json.loads(made.meta.get("layer_scores", "{}"))
    kept = {layer.point for layer in made.layers}
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text(
        (6, 6),
        f"separation d' per block, site {made.meta.get('site')} ({made.meta.get('layer_choice')}): kept in red",
        fill="black",
    )
    if not scores:
        return np.asarray(img, dtype=np.float32) / 255.0
    top, bottom, left, right = 28, height - 22, 40, width - 10
    best = max(max(scores.values()), 1e-12)
    slot = (right - left) / len(scores)
    for j, (point, s) in enumerate(scores.items()):
        x0 = left + j * slot
        y = bottom - (bottom - top) * s / best
        draw.rectangle(
            [x0 + slot * 0.15, y, x0 + slot * 0.85, bottom], fill=(220, 30, 30) if point in kept else (120, 140, 180)
        )
        if len(scores) <= 48 or j % 5 == 0:
            block = next((part for part in point.split(".") if part.isdigit()), str(j))
            draw.text((x0 + slot * 0.2, bottom + 4), block, fill="gray")
    draw.text((4, top), f"{best:.3g}", fill="gray")
    draw.line([left, bottom, right, bottom], fill="gray")
    return np.asarray(img, dtype=np.float32) / 255.0


def probe_chart(result, width: int = 640, height: int = 260) -> np.ndarray:
    """[H, W, 3] float32: held-out leakage per edited layer and at the model output (1 = untouched)."""
    from PIL import Image, ImageDraw

    bars = list(result.layer_leakage.items()) + [("model output", result.leakage)]
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text(
        (6, 6),
        f"held-out leakage (1 = untouched, 0 = erased); collateral at the output {result.collateral:.3f}",
        fill="black",
    )
    top, bottom, left, right = 30, height - 40, 40, width - 10
    top_value = max(1.1, max(v for _, v in bars) * 1.05)
    y_of = lambda v: bottom - (bottom - top) * min(max(v, 0.0), top_value) / top_value  # noqa: E731
    draw.line([left, y_of(1.0), right, y_of(1.0)], fill=(180, 180, 180))
    draw.text((4, y_of(1.0) - 6), "1.0", fill="gray")
    slot = (right - left) / len(bars)
    for j, (name, value) in enumerate(bars):
        x0 = left + j * slot
        color = (220, 30, 30) if name == "model output" else (90, 120, 190)
        draw.rectangle([x0 + slot * 0.15, y_of(value), x0 + slot * 0.85, bottom], fill=color)
        draw.text((x0 + slot * 0.15, y_of(value) - 12), f"{value:.2f}", fill="black")
        if len(bars) <= 16 or j % 4 == 0 or name == "model output":
            label = (
                "out"
                if name == "model output"
                else ".".join(p for p in name.split(".") if p.isdigit() or len(p) <= 5)[-14:]
            )
            draw.text((x0 + 2, bottom + 4 + 12 * (j % 2)), label, fill="gray")
    return np.asarray(img, dtype=np.float32) / 255.0
