"""Ready-made prompt pairs for common concepts (data files in presets/); clinical, non-graphic texts.

Each file: title, needs_name (a "{name}" in the pairs is the subject the user types), pairs, neutral
prompts, where the preset has them keep prompts (generic look-alikes that its edit leaves alone:
keep.py) and, where there is one, a held-out set (other phrasings) that the Refusal Probe scores on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .defaults import PRESET
from .prompts import parse_pairs_text
from .types import PromptPair, RefusalError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
CUSTOM = "custom"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _data(name: str) -> dict:
    if name not in preset_names():
        raise RefusalError(f"preset '{name}' does not exist; choose one of: {CUSTOM}, {', '.join(preset_names())}")
    return json.loads((PRESET_DIR / f"{name}.json").read_text(encoding="utf-8"))


def load_preset(name: str, subject: str = "") -> tuple[list[PromptPair], list[str]]:
    """The preset's pairs (with "{name}" filled by subject) and neutral prompts."""
    data = _data(name)
    subject = subject.strip()
    if data["needs_name"] and not subject:
        raise RefusalError(
            f"the preset '{name}' ({data['title']}) needs a name: type it in preset_subject, e.g. the character or brand"
        )
    if "{" in subject or "}" in subject or "|" in subject:
        raise RefusalError("preset_subject may not hold '{', '}' or '|'")
    filled = [[u.replace("{name}", subject), s.replace("{name}", subject)] for u, s in data["pairs"]]
    pairs, neutral = parse_pairs_text(
        json.dumps({"pairs": filled, "neutral": data["neutral"]}), ".json", f"preset {name}"
    )
    return pairs, neutral


def preset_keep(name: str) -> list[str]:
    """The preset's keep prompts, [] when it has none. The character preset's are generic cartoon animals
    in its pairs' phrasings: a named mouse, duck or rabbit is erased, the plain animal kept (docs/results.md)."""
    return [str(t) for t in _data(name).get("keep", [])]


def held_out(name: str = PRESET) -> tuple[list[PromptPair], list[str]]:
    """The preset's held-out pairs and neutral prompts (phrasings in none of its pairs), for evaluation."""
    data = _data(name).get("held_out")
    if data is None:
        raise RefusalError(f"the preset '{name}' has no held-out prompts: write your own held-out pairs")
    return parse_pairs_text(
        json.dumps({"pairs": data["pairs"], "neutral": data["neutral"]}), ".json", f"preset {name} (held out)"
    )


def pairs_text(pairs: Sequence[PromptPair]) -> str:
    """Pairs as the Prompt Pairs node's text: one 'unsafe | safe' per line."""
    return "\n".join(f"{p.unsafe} | {p.safe}" for p in pairs)


def default_texts() -> tuple[str, str]:
    """(pairs text, neutral text) of PRESET, as a fresh Prompt Pairs node shows them."""
    pairs, neutral = load_preset(PRESET)
    return pairs_text(pairs), "\n".join(neutral)
