"""Every (prompt, sigma) forward an extraction needs: their order, their batches, and running them with the
edit site's inputs captured and checked.

A forward runs only as deep as the edit: it ends as soon as the last input the site needs is read (the
blocks after the last edited one and the head never run), and a site whose blocks all read one tensor
computed before the blocks (Site.shared: Wan's text context) is read there, so no block runs at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .capture import AllCaptured, capture_inputs
from .sites import Site
from .types import EncodedPrompt, PromptPairs, RefusalError

# forward(conditioning, latent [B, C, T, H, W], sigma) runs the host model once.
Forward = Callable[[Any, torch.Tensor, float], Any]
# forward_batch(conditionings, latent [1, C, T, H, W], sigma) runs B prompts as one batch of B.
BatchForward = Callable[[Sequence[Any], torch.Tensor, float], Any]


class CannotBatch(Exception):
    """Raised by a forward_batch whose conditionings cannot run as one batch without padding (their
    tensors differ in shape): the prompts then run one per forward, which gives the same result.
    failed: the model itself raised on the batch (one prompt at a time is then a fallback the extraction
    reports), rather than the prompts not fitting one batch by shape (expected, not reported)."""

    def __init__(self, reason: str, failed: bool = False):
        super().__init__(reason)
        self.failed = failed


def stack_forward(forward: Forward) -> BatchForward:
    """A batched forward for tensor conditionings [1, L, D] of one shape: one call of `forward` with
    the conditionings concatenated [B, L, D] and the latent repeated [B, C, T, H, W] (the testbed's
    and TinyWan's forward take a batch so)."""

    def forward_batch(conditionings: Sequence[Any], latent: torch.Tensor, sigma: float) -> Any:
        return forward(torch.cat(list(conditionings)), latent.expand(len(conditionings), *latent.shape[1:]), sigma)

    return forward_batch


Job = tuple[EncodedPrompt, float]
# Job indices reduced together: ("pair", (u, s)) at one sigma, ("neutral", (n,)), ("keep", (n,)) or ("ordinary", (n,)).
Unit = tuple[str, tuple[int, ...]]


def schedule(prompts: PromptPairs, sigmas: Sequence[float]) -> tuple[list[Job], list[Unit]]:
    """(jobs, units): every (prompt, sigma) forward in the order they are reduced, and the groups of job
    indices reduced together. Pairs come first, pair by pair, then the neutral, keep and ordinary prompts, so
    the row budget draws its random rows in one fixed order however prompts are batched. The ordinary text is read
    at the middle sigma only: it is many prompts, and only its leading directions are used."""
    jobs: list[Job] = []
    units: list[Unit] = []
    for enc_u, enc_s in prompts.pairs:
        for sigma in sigmas:
            units.append(("pair", (len(jobs), len(jobs) + 1)))
            jobs += [(enc_u, float(sigma)), (enc_s, float(sigma))]
    middle = list(sigmas)[len(sigmas) // 2 : len(sigmas) // 2 + 1]
    for kind, encs, at in (
        ("neutral", prompts.neutral, sigmas),
        ("keep", prompts.keep, sigmas),
        ("ordinary", prompts.ordinary, middle),
    ):
        for enc in encs:
            for sigma in at:
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


def read_inputs(
    root: nn.Module, points: Sequence[str], shared: str | None, run: Callable[[], Any]
) -> dict[str, torch.Tensor]:
    """{point: [B, L, d]} inputs of the edit-site layers during one forward run by `run`, which ends once they
    are read. shared: a module whose output every point reads as its input (Site.shared), captured there
    instead and handed to every point as one tensor (the reduction then computes its rows once)."""
    names = [shared] if shared is not None else list(points)
    with capture_inputs(root, names, outputs=shared is not None, stop=True) as acts:
        try:
            run()
        except AllCaptured:
            pass
    if shared is not None and shared in acts:
        return {p: acts[shared] for p in points}
    return acts


def shared_input(root: nn.Module, site: Site) -> str | None:
    """The module the site's points read their input from, when the site names one and the model has it
    (else the points are read in the blocks: the same values, computed deeper)."""
    if site.shared is None:
        return None
    try:
        root.get_submodule(site.shared)
    except AttributeError:
        return None
    return site.shared


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
        if same_data(acts[p]) not in checked:  # blocks that read one tensor (Wan's text context) are checked once
            checked.add(same_data(acts[p]))
            for b, j in enumerate(part):
                _check_finite(acts[p][b], p, jobs[j][0].text)
    return {j: {p: acts[p][b] for p in points} for b, j in enumerate(part)}


def run_forwards(
    root: nn.Module,
    points: Sequence[str],
    shared: str | None,
    jobs: list[Job],
    groups: list[list[int]],
    latent: torch.Tensor,
    forward: Forward,
    forward_batch: BatchForward,
    fallbacks: list[str] | None = None,
) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Per group of jobs, {job index: {point: captured input [L, d]}}; shared: see read_inputs. A group that
    forward_batch cannot run as one batch (CannotBatch) runs one prompt per forward: the hooks then see each
    prompt's own forward, and the reason is appended to `fallbacks` (the extraction reports it)."""

    def one(j: int) -> dict[str, torch.Tensor]:
        enc, sigma = jobs[j]
        return read_inputs(root, points, shared, lambda: forward(enc.conditioning, latent, sigma))

    def together(group: list[int]) -> dict[str, torch.Tensor]:
        conds, sigma = [jobs[j][0].conditioning for j in group], jobs[group[0]][1]
        return read_inputs(root, points, shared, lambda: forward_batch(conds, latent, sigma))

    for group in groups:
        if len(group) == 1:
            runs = [(group, one(group[0]))]
        else:
            try:
                runs = [(group, together(group))]
            except CannotBatch as e:
                if fallbacks is not None and e.failed:
                    fallbacks.append(f"{e}: the prompts ran one per forward from then on")
                runs = [([j], one(j)) for j in group]
        out: dict[int, dict[str, torch.Tensor]] = {}
        for part, acts in runs:
            out.update(_checked(part, jobs, acts, points))
        del runs
        yield out


def _check_finite(t: torch.Tensor, point: str, text: str) -> None:
    if not torch.isfinite(t).all():
        raise RefusalError(
            f"the activations at '{point}' for prompt '{text[:60]}' contain NaN or inf "
            "(often fp16 overflow): load the model in bf16 or fp32 and run again; nothing was changed"
        )


def same_data(t: torch.Tensor) -> tuple:
    """Identity of a tensor's data (storage address, shape, strides): equal for views of the same values."""
    return (t.data_ptr(), tuple(t.shape), t.stride())
