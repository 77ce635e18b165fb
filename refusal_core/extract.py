"""Activations of prompt pairs -> per-layer differences D, neutral rows E (rows or moments), r = mean(D),
and the rows of the keep prompts when there are any.

The steps, one function each: schedule() orders every (prompt, sigma) forward, batches() groups them,
run_forwards() runs them with the site's inputs captured, Reducer turns each completed pair, neutral
or keep prompt into rows and drops its activations, choose_layers() keeps the blocks "auto" picks.
extract_refusal_stats() chains them under one ExtractSettings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import __version__, defaults
from .align import aligned_text_diffs, aligned_text_rows, text_rows
from .capture import capture_inputs
from .sites import JOINT, TEXT, Site
from .stats import Moments, RowAccumulator, Rows, n_rows, row_mean
from .types import EncodedPrompt, LayerStats, PromptPairs, RefusalError, RefusalStats

# forward(conditioning, latent [B, C, T, H, W], sigma) runs the host model once.
Forward = Callable[[Any, torch.Tensor, float], Any]
# forward_batch(conditionings, latent [1, C, T, H, W], sigma) runs B prompts as one batch of B.
BatchForward = Callable[[Sequence[Any], torch.Tensor, float], Any]
Progress = Callable[[int, int], None]


class CannotBatch(Exception):
    """Raised by a forward_batch whose conditionings cannot run as one batch without padding (their
    tensors differ in shape): the prompts then run one per forward, which gives the same result."""


def parse_sigmas(text: str) -> list[float]:
    """Noise levels as users write them (defaults.SIGMAS_TEXT): numbers in (0, 1] separated by commas."""
    try:
        sigmas = [float(s) for s in text.replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise RefusalError(
            f"noise levels '{text}' must be numbers separated by commas, e.g. '{defaults.SIGMAS_TEXT}'"
        ) from None
    if not sigmas or any(not (0.0 < s <= 1.0) for s in sigmas):
        raise RefusalError(f"noise levels '{text}' must be between 0 (exclusive) and 1, e.g. '{defaults.SIGMAS_TEXT}'")
    return sigmas


def pairs_digest(prompts: PromptPairs) -> str:
    h = hashlib.sha256()
    for u, s in prompts.pairs:
        h.update(f"{u.text}\x1f{s.text}\x1e".encode())
    for n in prompts.neutral:
        h.update(f"{n.text}\x1d".encode())
    for n in prompts.keep:  # after the rest, so that statistics without keep prompts keep their digest
        h.update(f"{n.text}\x1c".encode())
    return h.hexdigest()


class _RowBudget:
    """Keeps at most `per_chunk` rows of each chunk, chosen by a seeded generator."""

    def __init__(self, per_chunk: int, seed: int):
        self.per_chunk = max(1, per_chunk)
        self.gen = torch.Generator().manual_seed(seed)

    def pick(self, n: int) -> torch.Tensor | None:
        """The indices of the rows to keep of n (sorted), or None for all of them."""
        if n <= self.per_chunk:
            return None
        return torch.randperm(n, generator=self.gen)[: self.per_chunk].sort().values

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        idx = self.pick(rows.shape[0])
        return rows if idx is None else rows[idx]


def _check_finite(t: torch.Tensor, point: str, text: str) -> None:
    if not torch.isfinite(t).all():
        raise RefusalError(
            f"the activations at '{point}' for prompt '{text[:60]}' contain NaN or inf "
            "(often fp16 overflow): load the model in bf16 or fp32 and run again; nothing was changed"
        )


def _same(t: torch.Tensor) -> tuple:
    """Identity of a tensor's data (storage address, shape, strides): equal for views of the same values."""
    return (t.data_ptr(), tuple(t.shape), t.stride())


def _split_joint(a: torch.Tensor, enc: EncodedPrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint sequence [video tokens, text tokens] -> (video rows, text rows)."""
    if enc.text_len is None or enc.text_len > a.shape[0]:
        raise RefusalError("this edit site mixes video and text tokens, but the prompt's text length is unknown")
    n_video = a.shape[0] - enc.text_len
    return a[:n_video], a[n_video:]


def pair_rows(
    site: Site, a_u: torch.Tensor, a_s: torch.Tensor, enc_u: EncodedPrompt, enc_s: EncodedPrompt
) -> torch.Tensor:
    """Difference rows a(u) - a(s) [n, d] at one layer, tokens paired as the site's token space requires."""
    return aligned_pair_rows(site, a_u, a_s, enc_u, enc_s)[0]


def aligned_pair_rows(
    site: Site, a_u: torch.Tensor, a_s: torch.Tensor, enc_u: EncodedPrompt, enc_s: EncodedPrompt
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(difference rows [n, d], and at text sites the aligned rows a(u)_i and a(s)_j [n, d] they are the difference of,
    else None and None): the closed-form map is solved from the aligned rows themselves."""
    if site.tokens == TEXT:
        u, s = aligned_text_rows(a_u, a_s, enc_u.token_ids, enc_s.token_ids)
        return u - s, u, s
    if site.tokens == JOINT:
        (v_u, t_u), (v_s, t_s) = _split_joint(a_u, enc_u), _split_joint(a_s, enc_s)
        if v_u.shape != v_s.shape:
            raise RefusalError(f"video tokens do not line up at {site.name}: '{enc_u.text[:40]}' / '{enc_s.text[:40]}'")
        return torch.cat([v_u - v_s, aligned_text_diffs(t_u, t_s, enc_u.token_ids, enc_s.token_ids)]), None, None
    if a_u.shape != a_s.shape:
        raise RefusalError(
            f"tokens do not line up at {site.name} for the pair '{enc_u.text[:40]}' / '{enc_s.text[:40]}'"
        )
    return a_u - a_s, None, None


def prompt_rows(site: Site, a: torch.Tensor, enc: EncodedPrompt) -> torch.Tensor:
    """The rows of one prompt's input that hold real tokens (no text padding) [m, d]."""
    if site.tokens == TEXT:
        return text_rows(a, enc.token_ids)
    if site.tokens == JOINT:
        video, text = _split_joint(a, enc)
        return torch.cat([video, text_rows(text, enc.token_ids)])
    return a


def separation(D: Rows, E: Rows, r: torch.Tensor) -> float:
    """d' of a layer: ||r|| over the spread of neutral activations along r_hat.

    How far unsafe activations sit from their safe twins along the refusal direction, in units
    of how much unrelated prompts vary along it: high where the concept is one clear direction
    that a rank-1 edit removes without moving much else. Scale-free, so layers compare.
    D, E: rows [n, d] / [m, d] or their Moments (the same value either way).
    """
    r_norm = float(r.norm())
    if n_rows(E) < 2 or r_norm == 0:
        return 0.0
    r_hat = r.double() / r_norm
    if isinstance(E, Moments):
        # the sample standard deviation of the projections E r_hat, from sum and sum of squares
        s1, s2, m = float(E.total @ r_hat), float(r_hat @ E.gram @ r_hat), E.count
        spread = max(s2 - s1 * s1 / m, 0.0) ** 0.5 / (m - 1) ** 0.5
    else:
        spread = float((E.double() @ r_hat).std())
    return r_norm / max(spread, 1e-12 * r_norm)


def stack_forward(forward: Forward) -> BatchForward:
    """A batched forward for tensor conditionings [1, L, D] of one shape: one call of `forward` with
    the conditionings concatenated [B, L, D] and the latent repeated [B, C, T, H, W] (the testbed's
    and TinyWan's forward take a batch so)."""

    def forward_batch(conditionings: Sequence[Any], latent: torch.Tensor, sigma: float) -> Any:
        return forward(torch.cat(list(conditionings)), latent.expand(len(conditionings), *latent.shape[1:]), sigma)

    return forward_batch


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
    keep_rows: keep every row even beyond the layer width (memory grows with the rows; for checks).
    """

    site: Site
    blocks: tuple[int, ...]
    sigmas: tuple[float, ...]
    family: str
    auto_pick: int | None = None
    max_rows: int | None = defaults.MAX_ROWS
    seed: int = defaults.SEED
    batch_size: int = 1
    keep_rows: bool = False

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


Job = tuple[EncodedPrompt, float]
# Job indices reduced together: ("pair", (u, s)) at one sigma, ("neutral", (n,)) or ("keep", (n,)).
Unit = tuple[str, tuple[int, ...]]


def schedule(prompts: PromptPairs, sigmas: Sequence[float]) -> tuple[list[Job], list[Unit]]:
    """(jobs, units): every (prompt, sigma) forward in the order they are reduced, and the groups of job
    indices reduced together. Pairs come first, pair by pair, then the neutral and the keep prompts, so
    the row budget draws its random rows in one fixed order however prompts are batched."""
    jobs: list[Job] = []
    units: list[Unit] = []
    for enc_u, enc_s in prompts.pairs:
        for sigma in sigmas:
            units.append(("pair", (len(jobs), len(jobs) + 1)))
            jobs += [(enc_u, float(sigma)), (enc_s, float(sigma))]
    for kind, encs in (("neutral", prompts.neutral), ("keep", prompts.keep)):
        for enc in encs:
            for sigma in sigmas:
                units.append((kind, (len(jobs),)))
                jobs.append((enc, float(sigma)))
    return jobs, units


def batches(jobs: list[Job], batch_size: int, any_conditioning: bool) -> list[list[int]]:
    """Consecutive jobs at one sigma, at most batch_size per forward. Tensor conditionings batch only with
    others of the same shape (concatenating them must not pad, which would change the result); other
    conditionings only when the caller gave its own batched forward (any_conditioning)."""
    out: list[list[int]] = []
    for i, (enc, sigma) in enumerate(jobs):
        last = out[-1] if out else None
        if last is not None and len(last) < batch_size and jobs[last[0]][1] == sigma:
            first = jobs[last[0]][0].conditioning
            if isinstance(first, torch.Tensor) and isinstance(enc.conditioning, torch.Tensor):
                fits = first.shape == enc.conditioning.shape and first.shape[0] == 1
            else:
                fits = any_conditioning
            if fits:
                last.append(i)
                continue
        out.append([i])
    return out


def _captured(root: nn.Module, points: Sequence[str], run: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """{point: [B, L, d]} inputs of the edit-site layers during one forward run by `run`."""
    with capture_inputs(root, points) as acts:
        run()
    return acts


def _checked(
    part: list[int], jobs: list[Job], acts: dict[str, torch.Tensor], points: Sequence[str]
) -> dict[int, dict[str, torch.Tensor]]:
    """One forward's captured inputs, checked (every layer reached, one row per prompt, finite), as
    {job index: {point: [L, d]}}."""
    missing = [p for p in points if p not in acts]
    if missing:
        raise RefusalError(f"the forward pass never reached {missing[0]}: this edit site does not fit the model")
    for p in points:
        if acts[p].shape[0] != len(part):
            raise RefusalError(
                f"a batch of {len(part)} prompts gave {acts[p].shape[0]} inputs at {p}: run with batch size 1"
            )
    checked = set()
    for p in points:
        if _same(acts[p]) not in checked:  # blocks that read one tensor (Wan's text context) are checked once
            checked.add(_same(acts[p]))
            for b, j in enumerate(part):
                _check_finite(acts[p][b], p, jobs[j][0].text)
    return {j: {p: acts[p][b] for p in points} for b, j in enumerate(part)}


def run_forwards(
    root: nn.Module,
    points: Sequence[str],
    jobs: list[Job],
    groups: list[list[int]],
    latent: torch.Tensor,
    forward: Forward,
    forward_batch: BatchForward,
) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Per group of jobs, {job index: {point: captured input [L, d]}}. A group that forward_batch cannot
    run as one batch (CannotBatch) runs one prompt per forward: the hooks then see each prompt's own forward."""
    for group in groups:
        encs = [jobs[j][0] for j in group]
        sigma = jobs[group[0]][1]
        if len(group) == 1:
            runs = [(group, _captured(root, points, lambda: forward(encs[0].conditioning, latent, sigma)))]  # noqa: B023 (called at once)
        else:
            try:
                runs = [
                    (
                        group,
                        _captured(root, points, lambda: forward_batch([e.conditioning for e in encs], latent, sigma)),  # noqa: B023
                    )
                ]
            except CannotBatch:
                runs = [
                    ([j], _captured(root, points, lambda j=j: forward(jobs[j][0].conditioning, latent, sigma)))  # noqa: B023
                    for j in group
                ]
        out: dict[int, dict[str, torch.Tensor]] = {}
        for part, acts in runs:
            out.update(_checked(part, jobs, acts, points))
        del runs
        yield out


class Reducer:
    """Turns completed units (a pair at one sigma, a neutral or keep prompt at one sigma) into rows of D, E
    and the keep rows per layer as soon as their activations are in, and drops the activations. A layer keeps
    rows while it has at most d_in of them, then their Moments (stats.py), so memory is bounded by d_in x d_in
    per layer."""

    def __init__(
        self,
        settings: ExtractSettings,
        jobs: list[Job],
        units: list[Unit],
        n_pairs: int,
        n_neutral: int,
        n_keep: int = 0,
    ):
        self.site, self.blocks, self.points, self.jobs, self.units = (
            settings.site,
            settings.blocks,
            settings.points,
            jobs,
            units,
        )
        budget = settings.max_rows if settings.max_rows is not None else 1 << 62
        n_sig = len(settings.run_sigmas)
        self.keep_d = _RowBudget(budget // (n_pairs * n_sig), settings.seed)
        self.keep_e = _RowBudget(budget // max(1, n_neutral * n_sig), settings.seed + 1)
        self.keep_k = _RowBudget(budget // max(1, n_keep * n_sig), settings.seed + 2)
        self.n_keep = n_keep
        self.acc_d = {p: RowAccumulator(keep_rows=settings.keep_rows) for p in self.points}
        self.acc_e = {p: RowAccumulator(keep_rows=settings.keep_rows) for p in self.points}
        self.acc_k = {p: RowAccumulator(keep_rows=settings.keep_rows) for p in self.points}
        # r is the mean of EVERY difference row; only the factorization's statistics use the row budget.
        self.sum_d = {p: torch.zeros((), dtype=torch.float64) for p in self.points}
        self.count_d = dict.fromkeys(self.points, 0)
        self.rows_u: dict[str, list[torch.Tensor]] = {p: [] for p in self.points}
        self.rows_s: dict[str, list[torch.Tensor]] = {p: [] for p in self.points}
        self.pending: dict[int, dict[str, torch.Tensor]] = {}  # job -> {point: [L, d]} until its unit is reduced
        self.next_unit = 0

    def add(self, captured: dict[int, dict[str, torch.Tensor]]) -> None:
        self.pending.update(captured)
        while self.next_unit < len(self.units) and all(j in self.pending for j in self.units[self.next_unit][1]):
            kind, unit = self.units[self.next_unit]
            if kind == "pair":
                self._pair(*unit)
            else:
                self._prompt(*unit, *((self.acc_e, self.keep_e) if kind == "neutral" else (self.acc_k, self.keep_k)))
            for j in unit:
                del self.pending[j]  # this prompt's raw activations are not needed any more
            self.next_unit += 1

    def _pair(self, ju: int, js: int) -> None:
        (enc_u, _), (enc_s, _) = self.jobs[ju], self.jobs[js]
        a_u, a_s = self.pending[ju], self.pending[js]
        memo: dict[tuple, Any] = {}  # blocks that read the very same input get the very same rows, computed once
        for p in self.points:
            key = (_same(a_u[p]), _same(a_s[p]))
            if key not in memo:
                rows, u, s = aligned_pair_rows(self.site, a_u[p], a_s[p], enc_u, enc_s)
                idx = self.keep_d.pick(rows.shape[0])
                kept = [x if x is None or idx is None else x[idx] for x in (rows, u, s)]
                # u and s may be views of the whole batch's activations, which must not stay alive
                memo[key] = (
                    rows.double().sum(0),
                    rows.shape[0],
                    kept[0],
                    *[None if x is None else x.clone() for x in kept[1:]],
                )
            total, count, rows, u, s = memo[key]
            self.acc_d[p].add(rows)
            if u is not None:
                self.rows_u[p].append(u)
                self.rows_s[p].append(s)
            self.sum_d[p] = self.sum_d[p] + total
            self.count_d[p] += count

    def _prompt(self, j: int, acc: dict[str, RowAccumulator], budget: _RowBudget) -> None:
        enc, a = self.jobs[j][0], self.pending[j]
        memo: dict[tuple, Any] = {}
        for p in self.points:
            key = (_same(a[p]),)
            if key not in memo:
                memo[key] = prompt_rows(self.site, a[p], enc).clone()  # a view would keep the whole batch alive
            acc[p].add(budget(memo[key]))

    def layers(self) -> list[tuple[int, LayerStats]]:
        """(block, LayerStats) per block read; identical sides are refused."""
        out = []
        joined: dict[tuple[int, ...], torch.Tensor] = {}  # blocks that read the same rows share one tensor of them

        def join(parts: list[torch.Tensor]) -> torch.Tensor | None:
            if not parts:
                return None
            key = tuple(id(t) for t in parts)
            if key not in joined:
                joined[key] = torch.cat(parts).float()
            return joined[key]

        for b, p in zip(self.blocks, self.points):
            D = self.acc_d[p].result()
            E = self.acc_e[p].result(dim=D.shape[1])
            K = self.acc_k[p].result(dim=D.shape[1]) if self.n_keep else None
            r = (self.sum_d[p] / max(self.count_d[p], 1)).float() if self.count_d[p] else row_mean(D)
            if not torch.isfinite(r).all() or r.norm() == 0:
                raise RefusalError(
                    f"unsafe and safe prompts give identical activations at {p}: "
                    "each pair's two sides must differ by the concept (e.g. 'a nude woman | a woman')"
                )
            out.append(
                (
                    b,
                    LayerStats(
                        point=p,
                        edit_keys=self.site.edit_keys(b),
                        diffs=D,
                        neutral=E,
                        r=r,
                        unsafe=join(self.rows_u[p]),
                        safe=join(self.rows_s[p]),
                        keep=K,
                    ),
                )
            )
        return out


def choose_layers(
    layers: list[tuple[int, LayerStats]], auto_pick: int | None
) -> tuple[list[tuple[int, LayerStats]], dict[str, float]]:
    """(the kept (block, layer) pairs in block order, d' of every candidate): all of them, or the
    auto_pick best separated ones. Ties (blocks that read the very same input, as Wan's text context) go
    to later blocks, the paper's choice."""
    scores = {layer.point: separation(layer.diffs, layer.neutral, layer.r) for _, layer in layers}
    if auto_pick is None:
        return layers, scores
    best = sorted(layers, key=lambda bl: (-round(scores[bl[1].point], 9), -bl[0]))[:auto_pick]
    return sorted(best, key=lambda bl: bl[0]), scores


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
    reducer = Reducer(settings, jobs, units, len(prompts.pairs), len(prompts.neutral), len(prompts.keep))
    done = 0
    for captured in run_forwards(
        root, settings.points, jobs, groups, latent, forward, forward_batch or stack_forward(forward)
    ):
        reducer.add(captured)
        done += len(captured)
        if progress is not None:
            progress(done, len(jobs))
    kept, scores = choose_layers(reducer.layers(), settings.auto_pick)
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
        "pairs_sha256": pairs_digest(prompts),
        "version": __version__,
    }
    return RefusalStats(layers=tuple(layer for _, layer in kept), meta=meta)
