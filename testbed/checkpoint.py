"""The finished parts of a long run, kept on disk as each one ends, so that a run stopped part-way (a closed laptop,
the end of a CI job) picks up where it was when the same command is run again, at the same code with the same
settings; anything else starts afresh. A part is stored as JSON and handed back as read from it, whether it was just
computed or loaded, so a resumed run and an uninterrupted one compute the same results from the same values.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from . import provenance

FOLDER = provenance.ROOT / "testbed_out" / "checkpoints"


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


class Checkpoint:
    """The parts of one run (name -> JSON value) in FOLDER / f"{run}.json", under the code's hash and the settings."""

    def __init__(self, run: str, settings: dict, say: Callable[[str], None] = print):
        self.path = FOLDER / f"{run}.json"
        self.key = _as_json({"code": provenance.code_hash(), "settings": settings})
        self.parts: dict[str, Any] = {}
        self.seconds_before = 0.0  # compute time of the kept parts in earlier runs
        self.t0 = time.perf_counter()
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("key") == self.key:
                self.parts, self.seconds_before = saved["parts"], saved["seconds"]
                say(f"resuming: {len(self.parts)} finished parts read from {self.path}")
            else:
                say(f"starting afresh: {self.path} was made by other code or settings")

    @property
    def seconds(self) -> float:
        """Compute time of this run's results: the kept parts' earlier runs and this one."""
        return self.seconds_before + time.perf_counter() - self.t0

    def part(self, name: str, compute: Callable[[], Any], advance: Callable[[int], None], units: int) -> Any:
        """The part's value: read back when an earlier run finished it (advancing its `units` of progress at once),
        else computed (advancing as it goes) and written to disk before it is returned."""
        if name in self.parts:
            advance(units)
            return self.parts[name]
        self.parts[name] = _as_json(compute())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "seconds": self.seconds, "parts": self.parts}))
        os.replace(tmp, self.path)  # whole or not at all: a run killed while writing keeps the previous file
        return self.parts[name]

    def finished(self) -> None:
        """The run's results are written: its parts are not needed any more."""
        self.path.unlink(missing_ok=True)
