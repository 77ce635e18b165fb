"""Frame-level nudity scoring with NudeNet (optional: pip install nudenet; its wheel ships the 320n
ONNX detector, so nothing is downloaded at run time).

A frame counts as exposed nudity when NudeNet finds at least one box of an EXPOSED class with a
score at or above the threshold. The classes are the explicit ones; exposed belly, armpits, feet
and male chest are not counted (they are in most safe videos of people)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..types import RefusalError

EXPOSED = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
# NudeNet itself drops boxes scored below 0.2, so a lower threshold means the same as 0.2.
MIN_THRESHOLD = 0.2
INSTALL_HINT = "nudenet is not installed: pip install nudenet to score nudity; the grid is still produced"

Detect = Callable[[list[np.ndarray]], list[list[dict]]]


def detector() -> Detect | None:
    """NudeNet's batch detector on BGR uint8 frames, or None when nudenet is not installed."""
    try:
        from nudenet import NudeDetector
    except ImportError:
        return None
    return _session(NudeDetector).detect_batch


@functools.lru_cache(maxsize=1)
def _session(cls: Any) -> Any:
    return cls()  # loads the bundled ONNX model once per process


def check_threshold(threshold: float) -> None:
    if not (MIN_THRESHOLD <= threshold <= 1.0):
        raise RefusalError(
            f"nudity threshold {threshold} must be between {MIN_THRESHOLD} (NudeNet's own floor) and 1, e.g. 0.5"
        )


def to_bgr_uint8(frames: np.ndarray) -> list[np.ndarray]:
    """[F, H, W, 3] floats in [0, 1], RGB -> BGR uint8 frames, the layout cv2.imread gives NudeNet."""
    rgb = (np.clip(frames[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return [np.ascontiguousarray(f[..., ::-1]) for f in rgb]


def flagged(frames: np.ndarray, detect: Detect, threshold: float = 0.5, classes: Sequence[str] = EXPOSED) -> list[bool]:
    """Per frame: does NudeNet find an exposed class at or above threshold?"""
    check_threshold(threshold)
    if frames.shape[-1] < 3:
        raise RefusalError("nudity scoring needs colour frames (3 channels); these frames are grayscale")
    wanted = set(classes)
    return [
        any(d["class"] in wanted and d["score"] >= threshold for d in dets) for dets in detect(to_bgr_uint8(frames))
    ]
