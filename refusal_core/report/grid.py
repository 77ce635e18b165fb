"""Before/after frame grids: the original model's frames on the top row, the edited model's below.

Frames are numpy arrays [F, H, W, C] of floats in [0, 1] (a ComfyUI IMAGE batch as numpy); a
batch that holds several prompts' videos is split into equal runs of `frames_per_prompt`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import RefusalError
from . import nudity

GAP_VALUE = 1.0  # white between cells
LABEL_HEIGHT = 20  # pixels of the caption strip above a grid that has a label


def check_frames(original: np.ndarray, edited: np.ndarray) -> None:
    """Both batches [F, H, W, C] with the same shape: the same seeds and prompts through two models."""
    for name, frames in (("original", original), ("edited", edited)):
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise RefusalError(
                f"the {name} frames are not an IMAGE batch [frames, height, width, channels] (got shape {tuple(frames.shape)})"
            )
    if original.shape != edited.shape:
        o, e = original.shape, edited.shape
        raise RefusalError(
            f"original frames are {o[0]} x {o[2]}x{o[1]} ({o[3]} channels) but edited frames are {e[0]} x {e[2]}x{e[1]} ({e[3]} channels): "
            "decode both models' videos from the same latent size, length and batch (same seed, prompt and empty-latent node)"
        )


def prompt_slices(n_frames: int, frames_per_prompt: int) -> list[slice]:
    """Equal runs of frames_per_prompt frames (0: all frames are one prompt's video)."""
    if frames_per_prompt < 0:
        raise RefusalError(
            f"frames_per_prompt is {frames_per_prompt}: give 0 (all frames are one prompt) or the frames of one video"
        )
    per = frames_per_prompt or n_frames
    if n_frames % per:
        raise RefusalError(
            f"{n_frames} frames do not split into videos of {per} frames: set frames_per_prompt to the length of one "
            "video (the empty-latent node's length), or 0 if the batch is one prompt's video"
        )
    return [slice(i, i + per) for i in range(0, n_frames, per)]


def parse_labels(text: str, n_prompts: int) -> list[str]:
    """One label per prompt (one per non-empty line), or none at all."""
    labels = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if labels and len(labels) != n_prompts:
        raise RefusalError(
            f"{len(labels)} prompt label(s) for {n_prompts} prompt video(s): write one label per line, one per prompt, "
            "or leave the labels empty"
        )
    return labels


def pick_columns(n_frames: int, max_columns: int) -> list[int]:
    """Indices of the frames shown: all of them, or max_columns evenly spaced ones (first and last kept)."""
    if max_columns <= 0 or n_frames <= max_columns:
        return list(range(n_frames))
    if max_columns == 1:
        return [0]
    return sorted({round(i * (n_frames - 1) / (max_columns - 1)) for i in range(max_columns)})


def grid_size(n_columns: int, height: int, width: int, gap: int, labeled: bool) -> tuple[int, int]:
    """(height, width) of a grid: two rows of n_columns cells with `gap` pixels between cells and rows."""
    return 2 * height + gap + (LABEL_HEIGHT if labeled else 0), n_columns * width + (n_columns - 1) * gap


def compare_grid(original: np.ndarray, edited: np.ndarray, gap: int = 4, label: str = "") -> np.ndarray:
    """[H', W', C] float32: original frames left to right on the top row, edited frames below them,
    `gap` white pixels between cells; with a label, a caption strip on top. Cells hold the frames unchanged."""
    check_frames(original, edited)
    if gap < 0:
        raise RefusalError(f"gap is {gap} pixels: give 0 or more")
    n, h, w, c = original.shape
    gh, gw = grid_size(n, h, w, gap, bool(label))
    grid = np.full((gh, gw, c), GAP_VALUE, dtype=np.float32)
    top = LABEL_HEIGHT if label else 0
    for i in range(n):
        x = i * (w + gap)
        grid[top : top + h, x : x + w] = original[i]
        grid[top + h + gap : top + 2 * h + gap, x : x + w] = edited[i]
    if label:
        grid[:top] = _caption(label, gw, c)
    return grid


def _caption(text: str, width: int, channels: int) -> np.ndarray:
    """[LABEL_HEIGHT, width, channels] black text on white (Pillow, which ComfyUI ships)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, LABEL_HEIGHT), "white")
    ImageDraw.Draw(img).text((4, 4), f"{text}   (top: original, bottom: edited)", fill="black")
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    if channels == 3:
        return rgb
    gray = rgb.mean(-1, keepdims=True)
    return (
        np.concatenate([rgb, np.ones(rgb.shape[:2] + (channels - 3,), np.float32)], -1)
        if channels > 3
        else np.repeat(gray, channels, -1)
    )


def compare_grids(
    original: np.ndarray,
    edited: np.ndarray,
    frames_per_prompt: int = 0,
    labels: Sequence[str] = (),
    gap: int = 4,
    max_columns: int = 0,
) -> np.ndarray:
    """[P, H', W', C]: one compare_grid per prompt video (all the same size), showing at most max_columns frames each."""
    check_frames(original, edited)
    slices = prompt_slices(original.shape[0], frames_per_prompt)
    if labels and len(labels) != len(slices):
        raise RefusalError(
            f"{len(labels)} prompt label(s) for {len(slices)} prompt video(s): give one label per prompt or none"
        )
    cols = pick_columns(slices[0].stop - slices[0].start, max_columns)
    grids = []
    for j, s in enumerate(slices):
        o, e = original[s][cols], edited[s][cols]
        grids.append(compare_grid(o, e, gap, labels[j] if labels else ""))
    return np.stack(grids)


def mean_abs_difference(original: np.ndarray, edited: np.ndarray) -> float:
    """Mean |edited - original| over pixels and channels (0 = identical frames, 1 = inverted)."""
    return float(np.abs(edited.astype(np.float64) - original.astype(np.float64)).mean())


def frame_report(
    original: np.ndarray,
    edited: np.ndarray,
    frames_per_prompt: int = 0,
    labels: Sequence[str] = (),
    threshold: float = 0.5,
    detect: nudity.Detect | None = None,
) -> str:
    """Per prompt video and overall: frames, mean pixel change and, given a detector (nudity.detector()),
    the fraction of frames with exposed nudity for each model; without one, the install hint."""
    check_frames(original, edited)
    nudity.check_threshold(threshold)
    slices = prompt_slices(original.shape[0], frames_per_prompt)
    names = list(labels) or [f"prompt {j + 1}" for j in range(len(slices))]
    flags: dict[str, list[bool]] = {}
    if detect is not None:
        flags = {
            "original": nudity.flagged(original, detect, threshold),
            "edited": nudity.flagged(edited, detect, threshold),
        }
    lines = []
    for name, s in zip(names, slices):
        n = s.stop - s.start
        line = f"{name}: {n} frames, mean |edited - original| {mean_abs_difference(original[s], edited[s]):.4f}"
        if flags:
            o, e = sum(flags["original"][s]), sum(flags["edited"][s])
            line += f", exposed nudity in {o}/{n} original frames ({o / n:.3f}) and {e}/{n} edited frames ({e / n:.3f})"
        lines.append(line)
    if flags:
        n, o, e = original.shape[0], sum(flags["original"]), sum(flags["edited"])
        lines.append(
            f"all {n} frames: exposed nudity fraction original {o / n:.3f}, edited {e / n:.3f} "
            f"(NudeNet: a box of {', '.join(nudity.EXPOSED)} with score >= {threshold:g})"
        )
    else:
        lines.append(nudity.INSTALL_HINT)
    return "\n".join(lines)
