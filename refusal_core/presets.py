"""Ready-made prompt pairs for common concepts (data files in presets/); clinical, non-graphic texts."""
from __future__ import annotations

import json
from pathlib import Path

from .prompts import parse_pairs_text
from .types import PromptPair, RefusalError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
CUSTOM = "custom"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str, subject: str = "") -> tuple[list[PromptPair], list[str]]:
    """The preset's pairs (with "{name}" filled by subject) and neutral prompts."""
    if name not in preset_names():
        raise RefusalError(f"preset '{name}' does not exist; choose one of: {CUSTOM}, {', '.join(preset_names())}")
    data = json.loads((PRESET_DIR / f"{name}.json").read_text(encoding="utf-8"))
    subject = subject.strip()
    if data["needs_name"] and not subject:
        raise RefusalError(f"the preset '{name}' ({data['title']}) needs a name: type it in preset_subject, e.g. the character or brand")
    if "{" in subject or "}" in subject or "|" in subject:
        raise RefusalError("preset_subject may not hold '{', '}' or '|'")
    filled = [[u.replace("{name}", subject), s.replace("{name}", subject)] for u, s in data["pairs"]]
    pairs, neutral = parse_pairs_text(json.dumps({"pairs": filled, "neutral": data["neutral"]}), ".json", f"preset {name}")
    return pairs, neutral
