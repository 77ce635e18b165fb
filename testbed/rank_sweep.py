"""How many directions does a concept take? Remove a rank-m subspace and score it on the testbed.

    python -m testbed.rank_sweep [--concept character] [--sites text_kv,cross_out] [--ranks 1,2,4,6,8]

The subspace per layer is d (the default cPCA direction) plus the next m - 1 eigenvectors of the
very C = C_r - alpha C_e that the factorization solved (factorize_layer's U_k), orthonormalized; the
edit is W (I - Q^T Q), applied through the same factors as CombineRefusalVectors' edits. Not a pack
option: it measures what a rank-1 edit leaves (docs/results.md).
"""
from __future__ import annotations

import argparse

import torch

from refusal_core import defaults
from refusal_core.edit import orthonormal_rows
from refusal_core.factorize import factorize_layer
from refusal_core.types import LayerEdit, RefusalEdit, RefusalStats

from . import run
from .train import TrainConfig, load_or_train


def subspace_edit(stats: RefusalStats, m: int) -> RefusalEdit:
    """Per layer Q [<= m, d_in]: d, then the top m - 1 eigenvectors of factorize's C (default settings)."""
    layers = []
    for layer in stats.layers:
        f = factorize_layer(layer.diffs, layer.neutral, layer.r, defaults.METHOD, defaults.K, defaults.ALPHA, defaults.MOMENT)
        rows = [f.direction[None]] + ([f.U_k[:, : m - 1].T] if f.U_k is not None and m > 1 else [])
        Q, _ = orthonormal_rows(torch.cat(rows))
        layers.append(LayerEdit(layer.point, layer.edit_keys, Q, (1.0,) * Q.shape[0]))
    return RefusalEdit(tuple(layers), {**stats.meta, "edit": f"rank{m}"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="character", choices=list(run.CONCEPTS))
    ap.add_argument("--sites", default="text_kv,cross_out")
    ap.add_argument("--ranks", default="1,2,4,6,8")
    args = ap.parse_args(argv)
    bed = run.Testbed(load_or_train(TrainConfig()), TrainConfig().text_seed)
    ev = run.EvalSet.build(bed)
    base = run.generate_all(bed.model, ev)
    print(f"{args.concept}: rank-m subspace edits, {run.HELD_OUT} held-out prompts, drift on {len(ev.clean)} prompts without a concept")
    for site in args.sites.split(","):
        stats = run.extract(bed, args.concept, site)
        for m in (int(x) for x in args.ranks.split(",")):
            s = run.scores(base, run.generate_all(run.edited(bed.model, subspace_edit(stats, m), 1.0), ev), ev, args.concept)
            print(f"{site:9} m={m}  render {s['render_before']:4.0%} -> {s['render_after']:4.0%}  "
                  f"others {s['others_after']:4.0%}  drift {s['drift']:.3f}  change {s['change']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
