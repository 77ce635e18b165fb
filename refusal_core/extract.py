"""Activations of prompt pairs -> per-layer differences D and the refusal vector r = mean(D)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import __version__
from .align import aligned_text_diffs, text_rows
from .capture import capture_inputs
from .sites import JOINT, TEXT, Site
from .types import EncodedPrompt, LayerVector, PromptPairs, RefusalError, RefusalVector

# forward(conditioning, latent [B, C, T, H, W], sigma) runs the host model once.
Forward = Callable[[Any, torch.Tensor, float], Any]
Progress = Callable[[int, int], None]


def pairs_digest(prompts: PromptPairs) -> str:
    h = hashlib.sha256()
    for u, s in prompts.pairs:
        h.update(f"{u.text}\x1f{s.text}\x1e".encode())
    for n in prompts.neutral:
        h.update(f"{n.text}\x1d".encode())
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


def _split_joint(a: torch.Tensor, enc: EncodedPrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint sequence [video tokens, text tokens] -> (video rows, text rows)."""
    if enc.text_len is None or enc.text_len > a.shape[0]:
        raise RefusalError("this edit site mixes video and text tokens, but the prompt's text length is unknown")
    n_video = a.shape[0] - enc.text_len
    return a[:n_video], a[n_video:]


def pair_rows(site: Site, a_u: torch.Tensor, a_s: torch.Tensor, enc_u: EncodedPrompt, enc_s: EncodedPrompt) -> torch.Tensor:
    """Difference rows a(u) - a(s) [n, d] at one layer, tokens paired as the site's token space requires."""
    if site.tokens == TEXT:
        return aligned_text_diffs(a_u, a_s, enc_u.token_ids, enc_s.token_ids)
    if site.tokens == JOINT:
        (v_u, t_u), (v_s, t_s) = _split_joint(a_u, enc_u), _split_joint(a_s, enc_s)
        if v_u.shape != v_s.shape:
            raise RefusalError(f"video tokens do not line up at {site.name}: '{enc_u.text[:40]}' / '{enc_s.text[:40]}'")
        return torch.cat([v_u - v_s, aligned_text_diffs(t_u, t_s, enc_u.token_ids, enc_s.token_ids)])
    if a_u.shape != a_s.shape:
        raise RefusalError(f"tokens do not line up at {site.name} for the pair '{enc_u.text[:40]}' / '{enc_s.text[:40]}'")
    return a_u - a_s


def prompt_rows(site: Site, a: torch.Tensor, enc: EncodedPrompt) -> torch.Tensor:
    """The rows of one prompt's input that hold real tokens (no text padding) [m, d]."""
    if site.tokens == TEXT:
        return text_rows(a, enc.token_ids)
    if site.tokens == JOINT:
        video, text = _split_joint(a, enc)
        return torch.cat([video, text_rows(text, enc.token_ids)])
    return a


def separation(D: torch.Tensor, E: torch.Tensor, r: torch.Tensor) -> float:
    """d' of a layer: ||r|| over the spread of neutral activations along r_hat.

    How far unsafe activations sit from their safe twins along the refusal direction, in units
    of how much unrelated prompts vary along it: high where the concept is one clear direction
    that a rank-1 edit removes without moving much else. Scale-free, so layers compare.
    """
    r_norm = float(r.norm())
    if E.shape[0] < 2 or r_norm == 0:
        return 0.0
    spread = float((E.double() @ (r.double() / r_norm)).std())
    return r_norm / max(spread, 1e-12 * r_norm)


def extract_refusal_vector(
    root: nn.Module,
    forward: Forward,
    prompts: PromptPairs,
    site: Site,
    blocks: Sequence[int],
    latent: torch.Tensor,
    sigmas: Sequence[float],
    family: str,
    auto_pick: int | None = None,
    max_rows: int = 4096,
    seed: int = 0,
    progress: Progress | None = None,
) -> RefusalVector:
    """Run every prompt through the model and collect per-layer differences.

    root:      the module whose submodule names match the site.
    blocks:    the blocks to read; with auto_pick = n, every one is scored by separation()
               and the n best are kept.
    latent:    [1, C, T, H, W] seeded noise, shared by every prompt so that video tokens
               line up between u and s.
    sigmas:    noise levels; a site whose input does not depend on them is read once.
    Returns an unfactorized RefusalVector (direction = None) holding, per layer, D rows
    [n, d_in], neutral rows [m, d_in] and r = mean(D) [d_in].
    """
    if len(prompts.pairs) < 1:
        raise RefusalError("no prompt pairs: give at least 2 lines 'unsafe prompt | safe prompt'")
    if not sigmas:
        raise RefusalError("no noise levels: give at least one sigma, e.g. '0.9,0.6,0.3'")
    if not blocks:
        raise RefusalError(f"no block to read for the site {site.name}")
    points = [site.point(b) for b in blocks]
    run_sigmas = list(sigmas) if site.per_sigma else list(sigmas[:1])
    n_runs = (2 * len(prompts.pairs) + len(prompts.neutral)) * len(run_sigmas)
    keep_d = _RowBudget(max_rows // (len(prompts.pairs) * len(run_sigmas)), seed)
    keep_e = _RowBudget(max_rows // max(1, len(prompts.neutral) * len(run_sigmas)), seed + 1)
    done = 0

    def run(enc: EncodedPrompt) -> list[dict[str, torch.Tensor]]:
        nonlocal done
        out = []
        for sigma in run_sigmas:
            with capture_inputs(root, points) as acts:
                forward(enc.conditioning, latent, float(sigma))
            missing = [p for p in points if p not in acts]
            if missing:
                raise RefusalError(f"the forward pass never reached {missing[0]}: this edit site does not fit the model")
            for p in points:
                _check_finite(acts[p], p, enc.text)
            out.append({p: acts[p][0] for p in points})
            done += 1
            if progress is not None:
                progress(done, n_runs)
        return out

    diffs: dict[str, list[torch.Tensor]] = {p: [] for p in points}
    neutral: dict[str, list[torch.Tensor]] = {p: [] for p in points}
    for enc_u, enc_s in prompts.pairs:
        for a_u, a_s in zip(run(enc_u), run(enc_s)):
            for p in points:
                diffs[p].append(keep_d(pair_rows(site, a_u[p], a_s[p], enc_u, enc_s)))
    for enc in prompts.neutral:
        for acts in run(enc):
            for p in points:
                neutral[p].append(keep_e(prompt_rows(site, acts[p], enc)))

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
        layers.append((b, LayerVector(point=p, edit_keys=site.edit_keys(b), diffs=D, neutral=E, r=r)))
    scores = {layer.point: separation(layer.diffs, layer.neutral, layer.r) for _, layer in layers}
    if auto_pick is not None:
        # Ties (blocks that read the very same input, as Wan's text context) go to later blocks, the paper's choice.
        best = sorted(layers, key=lambda bl: (-round(scores[bl[1].point], 9), -bl[0]))[:auto_pick]
        layers = sorted(best, key=lambda bl: bl[0])
    meta = {
        "family": family,
        "site": site.name,
        "blocks": ",".join(str(b) for b, _ in layers),
        "layer_choice": f"auto{auto_pick}" if auto_pick is not None else "given",
        "layer_scores": json.dumps({p: round(s, 6) for p, s in scores.items()}),
        "dims": ",".join(str(layer.dim) for _, layer in layers),
        "sigmas": ",".join(f"{s:g}" for s in run_sigmas),
        "latent_shape": "x".join(str(s) for s in latent.shape),
        "seed": str(seed),
        "n_pairs": str(len(prompts.pairs)),
        "n_neutral": str(len(prompts.neutral)),
        "pairs_sha256": pairs_digest(prompts),
        "method": "none",
        "version": __version__,
    }
    return RefusalVector(layers=tuple(layer for _, layer in layers), meta=meta)
