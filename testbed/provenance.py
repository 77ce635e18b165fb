"""What made a data file: the commit it was run at and a hash of the code that computes its numbers (the library and
the testbed). A test fails when a committed file's hash is not that of the code at HEAD: its numbers are stale."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("refusal_core", "testbed")  # every .py and .json under these; the shipped models are keyed in testbed's source


def code_files() -> list[Path]:
    return sorted(
        p
        for folder in CODE
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    )


def code_hash() -> str:
    """sha256 over the paths and contents of the code files, line endings normalized."""
    h = hashlib.sha256()
    for path in code_files():
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return h.hexdigest()[:16]


def commit() -> str:
    """HEAD's commit, with "+changes" when the code differs from it (the numbers then come from uncommitted code)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def made_by() -> dict[str, str]:
    return {"commit": commit(), "code": code_hash()}


if __name__ == "__main__":
    import json

    print(json.dumps(made_by()))
