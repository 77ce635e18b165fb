"""Activations of prompt pairs -> per-layer differences D, neutral rows E (rows or moments), r = mean(D),
and the rows of the keep prompts and of the ordinary text when there are any.

Steps 1-2 of the method, chained under one ExtractSettings: forwards.py orders every (prompt, sigma)
forward, batches and runs them with the site's inputs captured; reduce.py turns each completed pair,
neutral, keep or ordinary prompt into rows (align.py pairs the tokens) and drops its activations; layer_choice.py
keeps the blocks "auto" picks. Fallbacks taken on the way (prompts run one by one after a failed batch,
text rows paired by position) are logged as warnings and named in the statistics' metadata ("fallbacks").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import __version__, defaults
from .forwards import BatchForward, Forward, batches, run_forwards, schedule, shared_input, stack_forward
from .layer_choice import choose_layers
from .prompts import pairs_digest
from .reduce import Reducer
from .sites import Site
from .types import PromptPairs, RefusalError, RefusalStats

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractSettings:
    """What to read and how much of it to keep.

    site, blocks: the layers read (with auto_pick = n, every block is scored by separation() and
               the n best are kept). sigmas: noise levels; a site whose input does not depend on them is
               read once. family: the model family's name (families.py).
    max_rows:  per layer, at most this many rows of D (and of E) for the factorization, drawn at
               random per prompt and sigma with `seed`; None keeps every row. r is the mean of every
               row whatever the budget. 512 keeps the factorization in a span far narrower than
               the models' widths (video sites give thousands of rows: 256 tokens x 3 sigmas x 5 pairs).
    batch_size: up to this many prompts at one sigma per forward (same result as 1, to float rounding).
    """

    site: Site
    blocks: tuple[int, ...]
    sigmas: tuple[float, ...]
    family: str
    auto_pick: int | None = None
    max_rows: int | None = defaults.MAX_ROWS
    seed: int = defaults.SEED
    batch_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))

    @property
    def points(self) -> list[str]:
        return [self.site.point(b) for b in self.blocks]

    @property
    def run_sigmas(self) -> list[float]:
        return [float(s) for s in (self.sigmas if self.site.per_sigma else self.sigmas[:1])]

    def check(self, prompts: PromptPairs) -> None:
        if len(prompts.pairs) < 1:
            raise RefusalError("no prompt pairs: give at least 2 lines 'unsafe prompt | safe prompt'")
        if not self.sigmas:
            raise RefusalError(f"no noise levels: give at least one sigma, e.g. '{defaults.SIGMAS_TEXT}'")
        if not self.blocks:
            raise RefusalError(f"no block to read for the site {self.site.name}")
        if self.batch_size < 1:
            raise RefusalError(f"batch size must be at least 1, got {self.batch_size}")


def extract_refusal_stats(
    root: nn.Module,
    forward: Forward,
    prompts: PromptPairs,
    latent: torch.Tensor,
    settings: ExtractSettings,
    forward_batch: BatchForward | None = None,
    progress: Progress | None = None,
) -> RefusalStats:
    """Run every prompt through the model and reduce, per layer, the differences and neutral activations.

    root:      the module whose submodule names match the site.
    forward:   forward(conditioning, latent, sigma) runs the model once on one prompt.
    latent:    [1, C, T, H, W] seeded noise, shared by every prompt so that video tokens line up between u and s.
    forward_batch: forward_batch(conditionings, latent [1, ...], sigma) for settings.batch_size > 1;
               default stack_forward(forward) for tensor conditionings of one shape. One that cannot run
               its conditionings as one batch raises CannotBatch; those prompts then run one per forward.
    progress:  progress(done, total) after every forward.
    Returns per layer D [n, d_in] and E [m, d_in] (rows or Moments) and r = mean(D) [d_in].
    """
    settings.check(prompts)
    jobs, units = schedule(prompts, settings.run_sigmas)
    groups = batches(jobs, settings.batch_size, forward_batch is not None)
    reducer = Reducer(
        settings, jobs, units, len(prompts.pairs), len(prompts.neutral), len(prompts.keep), len(prompts.ordinary)
    )
    done = 0
    fallbacks: list[str] = []
    shared = shared_input(root, settings.site)
    for captured in run_forwards(
        root, settings.points, shared, jobs, groups, latent, forward, forward_batch or stack_forward(forward), fallbacks
    ):
        reducer.add(captured)
        done += len(captured)
        if progress is not None:
            progress(done, len(jobs))
    kept, scores = choose_layers(reducer.layers(), settings.auto_pick)
    if reducer.by_position:
        fallbacks.append(
            f"{reducer.by_position} pair reading(s) had no token ids, so their text rows were paired by position: "
            "the concept's tokens may be compared with other words"
        )
    fallbacks = list(dict.fromkeys(fallbacks))
    for note in fallbacks:
        log.warning("extraction: %s", note)
    meta = {
        "family": settings.family,
        "site": settings.site.name,
        "blocks": ",".join(str(b) for b, _ in kept),
        "layer_choice": f"auto{settings.auto_pick}" if settings.auto_pick is not None else "given",
        "layer_scores": json.dumps({p: round(s, 6) for p, s in scores.items()}),
        "dims": ",".join(str(layer.dim) for _, layer in kept),
        "sigmas": ",".join(f"{s:g}" for s in settings.run_sigmas),
        "latent_shape": "x".join(str(s) for s in latent.shape),
        "seed": str(settings.seed),
        "n_pairs": str(len(prompts.pairs)),
        "n_neutral": str(len(prompts.neutral)),
        **({"n_keep": str(len(prompts.keep))} if prompts.keep else {}),
        **({"n_ordinary": str(len(prompts.ordinary))} if prompts.ordinary else {}),
        "pairs_sha256": pairs_digest(prompts),
        **({"fallbacks": "; ".join(fallbacks)} if fallbacks else {}),
        "version": __version__,
    }
    return RefusalStats(layers=tuple(layer for _, layer in kept), meta=meta)
