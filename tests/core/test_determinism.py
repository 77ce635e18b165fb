"""The same prompts give the same edit on every machine.

Another CPU, BLAS or thread count changes float32 results by round-off only: the order of a sum,
the kernel of a matrix product. The factorization must not turn that into another direction, so
here it is given exactly those perturbations (threads, row order: the same d to 1e-4 up to sign; relative noise of a
forward pass's own error: d moves in proportion, no discrete choice changes); test_kernels_give_the_same_direction runs the
same problems in fresh processes under other MKL code paths and compares their directions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.types import RefusalStats
from tests.core.toy_wan import Counter, every_row, linear_text_wan, prompts, random_wan, same_up_to_sign

WAN = FAMILIES["wan"].sites
METHODS = (("cpca", 0.5), ("cpca", 2.0), ("pca", 0.0), ("mean_diff", 0.0))
TOLERANCE = 1e-4
FORWARD_ERROR = 6e-6  # relative: a forward pass's own round-off in float32
NOISE_TOLERANCE = 1e-3  # d's largest entry change under that noise (measured: up to 2.7e-4 on the video problem)
ROOT = Path(__file__).resolve().parents[2]


def planted() -> RefusalStats:
    """The planted concept at the text site: every difference row is r (to round-off)."""
    model = linear_text_wan(0)
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    return extract_refusal_stats(
        model, Counter(model), prompts(), latent, ExtractSettings(WAN["text_kv"], [0, 1, 2], [0.6], "wan")
    )


def video_site(max_rows: int | None) -> RefusalStats:
    """A problem with real spread: the video tokens of a random (non-linear) Wan at cross_out. With
    max_rows 24 the rows fit the span solver; with every row (96 of width 64) the dense one solves."""
    model = random_wan(0)
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    settings = ExtractSettings(WAN["cross_out"], [0, 2], [0.9, 0.3], "wan", max_rows=max_rows)
    with every_row() if max_rows is None else nullcontext():
        return extract_refusal_stats(model, Counter(model), prompts(), latent, settings)


PROBLEMS = {"planted": planted, "video_span": lambda: video_site(24), "video_dense": lambda: video_site(None)}


def directions(stats: RefusalStats, method: str, alpha: float) -> list[torch.Tensor]:
    return [layer.basis[0] for layer in factorize(stats, method, 100, alpha).layers]


def perturbed(stats: RefusalStats, seed: int, relative: float = 0.0, permute: bool = False) -> RefusalStats:
    """stats with its rows shuffled and / or each entry scaled by (1 + relative * N(0, 1))."""
    g = torch.Generator().manual_seed(seed)

    def noisy(X: torch.Tensor) -> torch.Tensor:
        return X * (1 + relative * torch.randn(X.shape, generator=g)) if relative else X

    def rows(X: torch.Tensor) -> torch.Tensor:
        return noisy(X[torch.randperm(X.shape[0], generator=g)] if permute else X)

    layers = []
    for layer in stats.layers:
        layers.append(replace(layer, diffs=rows(layer.diffs), neutral=rows(layer.neutral), r=noisy(layer.r)))
    return stats.with_layers(tuple(layers))


def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(same_up_to_sign(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def problem(request) -> RefusalStats:
    return PROBLEMS[request.param]()


@pytest.mark.parametrize("method,alpha", METHODS)
def test_thread_count_row_order_and_round_off_leave_d_unchanged(problem, method, alpha):
    ref = directions(problem, method, alpha)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = directions(problem, method, alpha)
    finally:
        torch.set_num_threads(threads)
    assert worst(ref, one_thread) < TOLERANCE
    for seed in range(3):
        assert worst(ref, directions(perturbed(problem, seed, permute=True), method, alpha)) < TOLERANCE


@pytest.mark.parametrize("method,alpha", METHODS)
def test_noise_of_the_forward_passs_own_size_moves_d_in_proportion_and_decides_nothing(problem, method, alpha):
    """Every activation perturbed by the forward pass's own error (float32's 6e-8 after some hundred accumulated
    operations, as another kernel, CPU or thread count leaves them; factorize.ROUND_OFF's comment): d moves in proportion
    (at most some forty times the noise on these problems), and no discrete choice (k, the moment, the solver) changes,
    which would move it by far more."""
    ref = factorize(problem, method, 100, alpha)
    for seed in range(3):
        got = factorize(perturbed(problem, seed, relative=FORWARD_ERROR), method, 100, alpha)
        assert (
            worst([layer.basis[0] for layer in ref.layers], [layer.basis[0] for layer in got.layers]) < NOISE_TOLERANCE
        )
        assert _choices(got) == _choices(ref)


def _choices(edit) -> list[str]:
    """Per layer, what the factorization decided (k, moment, solver), without the numbers it measured."""
    return [re.sub(r"keeps [0-9.]+ of", "keeps _ of", part) for part in edit.meta["factorization"].split("; ")[1:]]


def test_extraction_with_one_thread_gives_the_same_direction():
    ref = {name: directions(build(), "cpca", 0.5) for name, build in PROBLEMS.items()}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = {name: directions(build(), "cpca", 0.5) for name, build in PROBLEMS.items()}
    finally:
        torch.set_num_threads(threads)
    for name in PROBLEMS:
        assert worst(ref[name], one[name]) < TOLERANCE, name


def test_the_planted_concept_is_r_itself():
    """Where every difference row is r there is nothing to denoise: every method returns r / |r|."""
    stats = planted()
    for method, alpha in METHODS:
        for layer, d in zip(stats.layers, directions(stats, method, alpha)):
            assert float(d @ layer.r / layer.r.norm()) > 1 - 1e-6, method


# MKL's code paths (its instruction sets and its bitwise-reproducible mode) and two thread counts.
KERNELS = [
    {},
    {"MKL_CBWR": "COMPATIBLE"},
    {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
]
THREADS = ("1", "2")

_CHILD = """
import json, sys, torch
from tests.core.test_determinism import PROBLEMS, METHODS, directions
out = {f"{name}/{m}/{a}": [d.tolist() for d in directions(build(), m, a)] for name, build in PROBLEMS.items() for m, a in METHODS}
json.dump(out, open(sys.argv[1], "w"))
"""


def test_kernels_give_the_same_direction(tmp_path):
    """Extraction and factorization in fresh processes, one per MKL setting and thread count: one d."""
    results = {}
    for i, kernel in enumerate(KERNELS):
        for threads in THREADS:
            env = {**os.environ, **kernel, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            path = tmp_path / f"{i}_{threads}.json"
            subprocess.run([sys.executable, "-c", _CHILD, str(path)], cwd=ROOT, env=env, check=True, timeout=600)
            results[f"{kernel or 'default'} threads={threads}"] = json.loads(path.read_text())
    (first_name, first), *others = results.items()
    for name, got in others:
        for key, dirs in first.items():
            a, b = [torch.tensor(d) for d in dirs], [torch.tensor(d) for d in got[key]]
            assert worst(a, b) < TOLERANCE, f"{key}: {first_name} and {name} differ"
