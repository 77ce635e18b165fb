"""How many directions does a concept take? Remove a rank-m subspace and score it on the testbed.

    python -m testbed.rank_sweep [--concept character] [--sites text_kv,cross_out] [--ranks 1,2,4,6,8]

The subspace per layer is d (the default cPCA direction) plus the next m - 1 eigenvectors of the
very C = C_r - alpha C_e that the factorization solved (factorize_layer's U_k), orthonormalized; the
edit is W (I - Q^T Q), applied through the same factors as CombineRefusalVectors' edits. Not a pack
option: it measures what a rank-1 edit leaves (docs/results.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from refusal_core import defaults
from refusal_core.edit import orthonormal_rows
from refusal_core.factorize import factorize_layer
from refusal_core.types import LayerEdit, RefusalEdit, RefusalStats

from . import run
from .progress import Progress
from .train import TrainConfig, load_or_train


def subspace_edit(stats: RefusalStats, m: int) -> RefusalEdit:
    """Per layer Q [<= m, d_in]: d, then the top m - 1 eigenvectors of factorize's C (default settings)."""
    layers = []
    for layer in stats.layers:
        f = factorize_layer(layer.diffs, layer.neutral, layer.r, defaults.METHOD, defaults.K, defaults.ALPHA, defaults.MOMENT,
                            with_U_k=True)
        rows = [f.direction[None]] + ([f.U_k[:, : m - 1].T] if f.U_k is not None and m > 1 else [])
        Q, _ = orthonormal_rows(torch.cat(rows))
        layers.append(LayerEdit(layer.point, layer.edit_keys, Q, (1.0,) * Q.shape[0]))
    return RefusalEdit(tuple(layers), {**stats.meta, "edit": f"rank{m}"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="character", choices=list(run.CONCEPTS))
    ap.add_argument("--sites", default="text_kv,cross_out")
    ap.add_argument("--ranks", default="1,2,4,6,8")
    ap.add_argument("--out", help="also write the rows as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    shown = Progress(args.quiet)
    bed = run.Testbed(load_or_train(TrainConfig(), log=shown.say, progress=shown.bar), TrainConfig().text_seed)
    ev = run.EvalSet.build(bed)
    sites, ranks = args.sites.split(","), [int(x) for x in args.ranks.split(",")]
    advance = shown.bar(1 + len(sites) * (1 + len(ranks)), f"rank sweep ({args.concept})")
    base = run.generate_all(bed.model, ev)
    advance()
    rows = []
    for site in sites:
        stats = run.extract(bed, args.concept, site)
        advance()
        for m in ranks:
            s = run.scores(base, run.generate_all(run.edited(bed.model, subspace_edit(stats, m), defaults.STRENGTH), ev), ev, args.concept)
            rows.append({"concept": args.concept, "site": site, "rank": m, **s})
            advance()
    print(f"{args.concept}: rank-m subspace edits, {run.HELD_OUT} held-out prompts, drift on {len(ev.clean)} prompts without a concept")
    for r in rows:
        print(f"{r['site']:9} m={r['rank']}  render {r['render_before']:4.0%} -> {r['render_after']:4.0%}  "
              f"others {r['others_after']:4.0%}  drift {r['drift']:.3f}  change {r['change']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"held_out_per_concept": run.HELD_OUT, "clean_prompts": len(ev.clean), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
