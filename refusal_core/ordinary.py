"""The ordinary text: phrases that name no concept ("a dog walking in a park"), shipped with the pack.

Every prompt a user types is made mostly of such text, so the leading directions of its rows at an edit site
are what every prompt shares. A refusal direction that overlaps them removes a little of every prompt (drift);
taken off them (solvers/keep.py), it removes what the concept's rows hold and leaves the rest. The phrases are
someone doing something somewhere, from word lists that name no concept of the pack's presets or testbeds (a
test holds it), read once per extraction like keep prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

ORDINARY_FILE = Path(__file__).resolve().parent / "ordinary_text.json"


def ordinary_text() -> list[str]:
    """The shipped phrases, in their file's order."""
    return [str(t) for t in json.loads(ORDINARY_FILE.read_text(encoding="utf-8"))["phrases"]]
