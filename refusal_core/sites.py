"""Edit sites per architecture: which linear layers read the concept, by module name.

Names are those of ComfyUI's state dicts (without the "diffusion_model." prefix).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .types import RefusalError


@dataclass(frozen=True)
class Site:
    """One edit site of a family.

    capture:  module whose input is recorded, "{i}" stands for the block index.
    edits:    linear layers that read that same input and receive the edit.
    token_space: "text" when the input is the text context (independent of the
                 latent and sigma: captured once, rows aligned by token ids),
                 "video" when it is video tokens (aligned by position).
    """

    name: str
    capture: str
    edits: tuple[str, ...]
    token_space: str
    description: str

    def point(self, block: int) -> str:
        return self.capture.format(i=block)

    def edit_keys(self, block: int) -> tuple[str, ...]:
        return tuple(e.format(i=block) for e in self.edits)


WAN_SITES: dict[str, Site] = {
    "text_kv": Site(
        "text_kv",
        "blocks.{i}.cross_attn.k",
        ("blocks.{i}.cross_attn.k", "blocks.{i}.cross_attn.v"),
        "text",
        "cross-attention key and value: the only path by which text reaches Wan's video tokens",
    ),
    "ffn_in": Site(
        "ffn_in",
        "blocks.{i}.ffn.0",
        ("blocks.{i}.ffn.0",),
        "video",
        "first feed-forward linear (the paper's site on Open-Sora)",
    ),
}

FAMILIES: dict[str, dict[str, Site]] = {"wan": WAN_SITES}
# Measured on Wan (METHOD.md, README "Results"): the FFN input erases nothing there.
DEFAULT_SITE = {"wan": "text_kv"}

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def get_site(family: str, site: str) -> Site:
    if family not in FAMILIES:
        raise RefusalError(f"model family '{family}' is not supported; supported: {', '.join(FAMILIES)}")
    sites = FAMILIES[family]
    if site == "auto":
        site = DEFAULT_SITE[family]
    if site not in sites:
        raise RefusalError(f"edit site '{site}' does not exist for {family}; choose one of: {', '.join(sites)}")
    return sites[site]


def count_blocks(module_names: Iterable[str]) -> int:
    """Number of transformer blocks, from names like "blocks.12.ffn.0"."""
    found = [int(m.group(1)) for n in module_names if (m := _BLOCK.match(n))]
    return max(found) + 1 if found else 0


def parse_layers(spec: str, n_blocks: int) -> list[int]:
    """Block indices from "last2", "all", "first3", "12,13" or "10-13" (0-based)."""
    s = spec.strip().lower().replace(" ", "")
    if n_blocks <= 0:
        raise RefusalError("the model has no transformer blocks named 'blocks.N'")
    if s == "all":
        return list(range(n_blocks))
    m = re.fullmatch(r"(last|first)(\d+)", s)
    if m:
        n = int(m.group(2))
        if n < 1:
            raise RefusalError(f"layers '{spec}': the count must be at least 1")
        n = min(n, n_blocks)
        return list(range(n_blocks - n, n_blocks)) if m.group(1) == "last" else list(range(n))
    out: list[int] = []
    for part in filter(None, s.split(",")):
        r = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not r:
            raise RefusalError(
                f"layers '{spec}' is not understood: write 'last2', 'all', 'first3', a list like '12,13' or a range like '10-13'"
            )
        lo, hi = int(r.group(1)), int(r.group(2) or r.group(1))
        if hi < lo:
            raise RefusalError(f"layers '{spec}': range {part} runs backwards")
        out.extend(range(lo, hi + 1))
    if not out:
        raise RefusalError("layers is empty: write 'last2', 'all' or a list like '12,13'")
    bad = [i for i in out if i >= n_blocks]
    if bad:
        raise RefusalError(f"layers {bad} do not exist: this model has blocks 0-{n_blocks - 1}")
    return sorted(set(out))
