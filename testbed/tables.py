"""Plain-text tables for the testbed's commands (the documents' tables are written by scripts/make_docs.py)."""

from __future__ import annotations


def pct(x: float) -> str:
    return "" if x != x else f"{x:4.0%}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns as wide as their widest cell, the first left-aligned, the others right-aligned."""
    cells = [headers] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])
