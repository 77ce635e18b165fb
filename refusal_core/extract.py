"""Activations of prompt pairs -> per-layer differences D and the refusal vector r = mean(D)."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import __version__
from .align import aligned_text_diffs, text_rows
from .capture import capture_inputs
from .sites import Site
from .types import LayerVector, PromptPairs, RefusalError, RefusalVector

# forward(conditioning, latent [B, C, T, H, W], sigma) runs the host model once.
Forward = Callable[[Any, torch.Tensor, float], Any]
Progress = Callable[[int, int], None]


def pairs_digest(prompts: PromptPairs) -> str:
    h = hashlib.sha256()
    for p in prompts.pairs:
        h.update(f"{p.unsafe}\x1f{p.safe}\x1e".encode())
    for n in prompts.neutral:
        h.update(f"{n}\x1d".encode())
    return h.hexdigest()


class _RowBudget:
    """Keeps at most `per_chunk` rows of each chunk, chosen by a seeded generator."""

    def __init__(self, per_chunk: int, seed: int):
        self.per_chunk = max(1, per_chunk)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[0] <= self.per_chunk:
            return rows
        idx = torch.randperm(rows.shape[0], generator=self.gen)[: self.per_chunk]
        return rows[idx.sort().values]


def _check_finite(t: torch.Tensor, point: str, text: str) -> None:
    if not torch.isfinite(t).all():
        raise RefusalError(
            f"the activations at '{point}' for prompt '{text[:60]}' contain NaN or inf "
            "(often fp16 overflow): load the model in bf16 or fp32 and run again; nothing was changed"
        )


def extract_refusal_vector(
    root: nn.Module,
    forward: Forward,
    prompts: PromptPairs,
    site: Site,
    blocks: Sequence[int],
    latent: torch.Tensor,
    sigmas: Sequence[float],
    family: str,
    max_rows: int = 4096,
    seed: int = 0,
    progress: Progress | None = None,
) -> RefusalVector:
    """Run every prompt through the model and collect per-layer differences.

    root:    the module whose submodule names match the site ("blocks.N...").
    latent:  [1, C, T, H, W] seeded noise, shared by every prompt so that video
             tokens line up between u and s.
    sigmas:  noise levels; a text-space site is read once (its input does not
             depend on the latent or sigma).
    Returns an unfactorized RefusalVector (direction = None) holding, per layer,
    D rows [n, d_in], neutral rows [m, d_in] and r = mean(D) [d_in].
    """
    if len(prompts.pairs) < 1:
        raise RefusalError("no prompt pairs: give at least 2 lines 'unsafe prompt | safe prompt'")
    if not sigmas:
        raise RefusalError("no noise levels: give at least one sigma, e.g. '0.9,0.6,0.3'")
    points = [site.point(b) for b in blocks]
    text_space = site.token_space == "text"
    run_sigmas = list(sigmas[:1]) if text_space else list(sigmas)
    n_runs = (2 * len(prompts.pairs) + len(prompts.neutral)) * len(run_sigmas)
    chunks_d = len(prompts.pairs) * len(run_sigmas)
    chunks_e = max(1, len(prompts.neutral) * len(run_sigmas))
    keep_d = _RowBudget(max_rows // chunks_d, seed)
    keep_e = _RowBudget(max_rows // chunks_e, seed + 1)
    done = 0

    def run(text: str) -> list[dict[str, torch.Tensor]]:
        nonlocal done
        enc = prompts.encoding(text)
        out = []
        for sigma in run_sigmas:
            with capture_inputs(root, points) as acts:
                forward(enc.conditioning, latent, float(sigma))
            missing = [p for p in points if p not in acts]
            if missing:
                raise RefusalError(f"the forward pass never reached {missing[0]}: this edit site does not fit the model")
            for p in points:
                _check_finite(acts[p], p, text)
            out.append({p: acts[p][0] for p in points})
            done += 1
            if progress is not None:
                progress(done, n_runs)
        return out

    diffs: dict[str, list[torch.Tensor]] = {p: [] for p in points}
    neutral: dict[str, list[torch.Tensor]] = {p: [] for p in points}
    for pair in prompts.pairs:
        enc_u, enc_s = prompts.encoding(pair.unsafe), prompts.encoding(pair.safe)
        acts_u, acts_s = run(pair.unsafe), run(pair.safe)
        for a_u, a_s in zip(acts_u, acts_s):
            for p in points:
                if text_space:
                    rows = aligned_text_diffs(a_u[p], a_s[p], enc_u.token_ids, enc_s.token_ids)
                else:
                    if a_u[p].shape != a_s[p].shape:
                        raise RefusalError(f"video tokens of the pair '{pair.unsafe}' do not line up at {p}")
                    rows = a_u[p] - a_s[p]
                diffs[p].append(keep_d(rows))
    for text in prompts.neutral:
        enc = prompts.encoding(text)
        for acts in run(text):
            for p in points:
                rows = text_rows(acts[p], enc.token_ids) if text_space else acts[p]
                neutral[p].append(keep_e(rows))

    layers = []
    for b, p in zip(blocks, points):
        D = torch.cat(diffs[p])
        E = torch.cat(neutral[p]) if neutral[p] else D.new_zeros((0, D.shape[1]))
        r = D.mean(0)
        if not torch.isfinite(r).all() or r.norm() == 0:
            raise RefusalError(
                f"unsafe and safe prompts give identical activations at {p}: "
                "each pair's two sides must differ by the concept (e.g. 'a nude woman | a woman')"
            )
        layers.append(LayerVector(point=p, edit_keys=site.edit_keys(b), diffs=D, neutral=E, r=r))
    meta = {
        "family": family,
        "site": site.name,
        "blocks": ",".join(str(b) for b in blocks),
        "dims": ",".join(str(layer.dim) for layer in layers),
        "sigmas": ",".join(f"{s:g}" for s in run_sigmas),
        "latent_shape": "x".join(str(s) for s in latent.shape),
        "seed": str(seed),
        "n_pairs": str(len(prompts.pairs)),
        "n_neutral": str(len(prompts.neutral)),
        "pairs_sha256": pairs_digest(prompts),
        "method": "none",
        "version": __version__,
    }
    return RefusalVector(layers=tuple(layers), meta=meta)
