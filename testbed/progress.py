"""Progress for the testbed's commands: a bar with the time left on the terminal, nothing with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm


class Progress:
    """One bar at a time on stderr (quiet: none), and messages printed above it."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def bar(self, total: int, desc: str) -> Callable[[int], None]:
        """advance(n) for a task of `total` units; the bar closes when it is full."""
        if self.quiet:
            return lambda n=1: None
        bar = tqdm(
            total=total,
            desc=desc,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
        )

        def advance(n: int = 1) -> None:
            bar.update(n)
            if bar.n >= bar.total:
                bar.close()

        return advance

    def say(self, text: str) -> None:
        if not self.quiet:
            tqdm.write(text, file=sys.stderr)
