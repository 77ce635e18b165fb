"""bench/paired.py: interleaved repeats rotate their order, and a ratio whose goal lies within its own or its control's
noise reads "within noise", never pass or FAIL."""

from __future__ import annotations

from bench import paired


def test_every_repetition_runs_each_variant_once_in_a_rotating_order():
    order = [name for _, name in paired.rotations(["a", "b", "c"], 4)]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    clock = iter(range(1, 100))
    times = paired.interleave({"a": lambda: float(next(clock)), "b": lambda: float(next(clock))}, 3)
    assert times == {"a": [1.0, 4.0, 5.0], "b": [2.0, 3.0, 6.0]}
    assert paired.paired(times, "a", "b") == [0.5, 4 / 3, 5 / 6]


def test_the_spread_is_the_quartiles_of_the_paired_ratios():
    s = paired.spread([1.0, 1.2, 0.8, 1.1, 0.9])
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"], s["n"]) == (1.0, 0.9, 1.1, 0.8, 1.2, 5)
    assert paired.spread([2.0]) == {"median": 2.0, "q1": 2.0, "q3": 2.0, "min": 2.0, "max": 2.0, "n": 1}


def test_the_verdict_passes_or_fails_only_outside_the_noise():
    tight = paired.spread([1.000, 1.002, 1.004])
    assert paired.verdict(tight["median"], 1.01, tight) == paired.PASS
    assert paired.verdict(tight["median"], 0.99, tight) == paired.FAIL
    wide = paired.spread([0.98, 1.00, 1.02, 1.04])
    assert paired.verdict(wide["median"], 1.01, wide) == paired.NOISE
    control = paired.spread([0.96, 1.0, 1.04])  # identical work differs by 2 % either side here
    assert paired.verdict(tight["median"], 1.01, tight, control) == paired.NOISE
    assert paired.verdict(1.5, 1.01, paired.spread([1.5, 1.5]), control) == paired.FAIL
    # the control's noise is a factor: a ratio far below 1 is off by that factor, not by its distance from 1
    far_below, noisy = paired.spread([0.0048, 0.0058, 0.0060]), paired.spread([0.8, 1.0, 1.01])
    assert paired.verdict(far_below["median"], 0.1, far_below, noisy) == paired.PASS
    assert paired.verdict(far_below["median"], 0.005, far_below, noisy) == paired.NOISE
    assert paired.verdict(0.5, 1.0) == paired.PASS and paired.verdict(2.0, 1.0) == paired.FAIL
    assert paired.verdict(2.0, None) == "-"
