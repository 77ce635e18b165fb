"""Interleaved repeats and the rule that turns their paired ratios into a verdict (bench/run.py, bench/full_size.py).

A timed ratio is measured as repetitions: in each, every variant runs once, in an order that rotates from one
repetition to the next, and the ratio of that repetition's two times is one paired ratio (neighbouring runs see the
same load from other work on the machine). The figure is the median of the paired ratios; its spread, their
quartiles (q1, q3), min, max and count n. Where a control is measured (the base against itself, in the same
rotation), its quartiles show how far identical work differs here.

The verdict against a goal "<= goal": the interval is the ratio's [q1, q3], widened on both sides by the control's
noise where there is one: divided and multiplied by the control's larger factor away from 1 (max(q3, 1 / q1) of the
base against itself: identical work that differs by that factor says any ratio of this run can be off by it, whether
the ratio is near 1 or far below it). pass when the interval's upper end is <= goal, FAIL when its lower end is
> goal, otherwise "within noise": this run cannot tell, and says so. A figure measured once (no spread) is judged by
its value.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

PASS, FAIL, NOISE = "pass", "FAIL", "within noise"


def spread(ratios: Sequence[float]) -> dict:
    """The median of paired ratios with their quartiles, min, max and count."""
    xs = sorted(float(x) for x in ratios)
    q1, q3 = (statistics.quantiles(xs, n=4, method="inclusive")[i] for i in (0, 2)) if len(xs) > 1 else (xs[0],) * 2
    return {"median": statistics.median(xs), "q1": q1, "q3": q3, "min": xs[0], "max": xs[-1], "n": len(xs)}


def verdict(value: float, goal: float | None, ratio: dict | None = None, control: dict | None = None) -> str:
    """pass / FAIL / within noise by the module's rule; "-" without a goal."""
    if goal is None:
        return "-"
    lo, hi = (ratio["q1"], ratio["q3"]) if ratio else (value, value)
    if control:
        factor = max(control["q3"], 1 / control["q1"], 1.0)
        lo, hi = lo / factor, hi * factor
    return PASS if hi <= goal else FAIL if lo > goal else NOISE


def rotations(names: Sequence[str], reps: int):
    """(repetition, variant) for reps repetitions, the order rotating by one each time."""
    for rep in range(reps):
        k = rep % len(names)
        for name in [*names[k:], *names[:k]]:
            yield rep, name


def interleave(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each variant (a callable returning its seconds) reps times in rotating order; their times by name."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _, name in rotations(list(variants), reps):
        times[name].append(variants[name]())
    return times


def paired(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """Repetition by repetition, num's time over den's."""
    return [a / b for a, b in zip(times[num], times[den])]


def span_text(s: dict) -> str:
    """'[q1, q3] of n' for a table."""
    return f"[{s['q1']:.3g}, {s['q3']:.3g}] of {s['n']}"
