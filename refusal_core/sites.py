"""Edit sites: which linear layers read the concept, by module name, and the layer specs users write.

Names are those of ComfyUI's state dicts (without the "diffusion_model." prefix). "{i}" stands
for the block index; a site's blocks are the indices whose capture module exists in the model.
Each family's sites are in families.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .defaults import AUTO_LAYERS
from .types import RefusalError

# What the captured input rows are, which decides how unsafe and safe rows are paired:
TEXT = "text"  # text tokens: aligned by token ids
VIDEO = "video"  # video tokens: aligned by position (same seeded latent)
JOINT = "joint"  # video tokens then text tokens in one sequence (single-stream blocks)
IMAGE = "image"  # image-conditioning tokens (i2v CLIP-vision tokens): aligned by position


@dataclass(frozen=True)
class Site:
    """One edit site of a family.

    capture:   module whose input is recorded.
    edits:     linear layers that read that same input and receive the edit.
    tokens:    TEXT, VIDEO, JOINT or IMAGE (see above).
    per_sigma: whether the input changes with the latent / noise level; if not, it is read once.
    shared:    a module whose output is the capture module's input in every block, computed before the
               blocks (Wan's text context); the extraction reads it there, so no block has to run.
    """

    name: str
    capture: str
    edits: tuple[str, ...]
    tokens: str
    per_sigma: bool
    description: str
    shared: str | None = None

    def __post_init__(self) -> None:
        if self.shared is not None and self.per_sigma:
            raise ValueError(f"site {self.name}: an input computed before the blocks cannot change with sigma")

    def point(self, block: int) -> str:
        return self.capture.format(i=block)

    def edit_keys(self, block: int) -> tuple[str, ...]:
        return tuple(e.format(i=block) for e in self.edits)

    def blocks(self, module_names: Iterable[str]) -> list[int]:
        """Indices of the blocks that have this site, from the model's module names."""
        pattern = re.compile("^" + re.escape(self.capture).replace(re.escape("{i}"), r"(\d+)") + "$")
        return sorted({int(m.group(1)) for n in module_names if (m := pattern.match(n))})


def _read_spec(spec: str) -> str | tuple[str, int] | list[int]:
    """A layer spec's meaning, without the model: "all", ("last" / "first", n) or block indices."""
    s = spec.strip().lower().replace(" ", "")
    if s == "all":
        return "all"
    m = re.fullmatch(r"(last|first)(\d+)", s)
    if m:
        if int(m.group(2)) < 1:
            raise RefusalError(f"layers '{spec}': the count must be at least 1")
        return m.group(1), int(m.group(2))
    out: list[int] = []
    for part in filter(None, s.split(",")):
        r = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not r:
            raise RefusalError(
                f"layers '{spec}' is not understood: write 'auto', 'last2', 'all', 'first3', a list like '12,13' or a range like '10-13'"
            )
        lo, hi = int(r.group(1)), int(r.group(2) or r.group(1))
        if hi < lo:
            raise RefusalError(f"layers '{spec}': range {part} runs backwards")
        out.extend(range(lo, hi + 1))
    if not out:
        raise RefusalError("layers is empty: write 'auto', 'last2', 'all' or a list like '12,13'")
    return out


def check_layer_spec(spec: str) -> None:
    """Refuse a layer spec that no model could take (before anything runs)."""
    if parse_auto(spec) is None:
        _read_spec(spec)


def parse_layers(spec: str, available: list[int]) -> list[int]:
    """Block indices from "last2", "all", "first3", "12,13" or "10-13" (0-based), among `available`."""
    if not available:
        raise RefusalError("the model has no block with this edit site")
    meaning = _read_spec(spec)
    if meaning == "all":
        return list(available)
    if isinstance(meaning, tuple):
        kind, n = meaning
        return list(available[-n:]) if kind == "last" else list(available[:n])
    bad = [i for i in meaning if i not in available]
    if bad:
        raise RefusalError(f"layers {bad} do not exist: this model has this site in blocks {_ranges(available)}")
    return sorted(set(meaning))


def parse_auto(spec: str) -> int | None:
    """'auto' -> defaults.AUTO_LAYERS layers, 'auto4' -> 4; None when the spec is not automatic."""
    m = re.fullmatch(r"auto(\d*)", spec.strip().lower())
    if not m:
        return None
    n = int(m.group(1) or AUTO_LAYERS)
    if n < 1:
        raise RefusalError("layers 'auto0' picks nothing: write 'auto' or 'auto3'")
    return n


def _ranges(ix: list[int]) -> str:
    return f"{ix[0]}-{ix[-1]}" if ix == list(range(ix[0], ix[-1] + 1)) else ",".join(map(str, ix))
