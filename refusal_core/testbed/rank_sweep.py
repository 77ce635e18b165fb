"""How many directions does a concept take? Remove a rank-m subspace and score it on the testbed.

    python -m refusal_core.testbed.rank_sweep [--concept character] [--sites text_kv,cross_out] [--ranks 1,2,4,6,8]

The subspace per layer is d (the default cPCA direction) plus the next m - 1 eigenvectors of
C = C_r - alpha C_e, orthonormalized; the edit is W (I - Q Q^T), as CombineRefusalVectors applies
several directions. Not a pack option: it measures what a rank-1 edit leaves (README "Known limits").
"""
from __future__ import annotations

import argparse
import copy

import torch

from ..edit import subspace_factors
from ..factorize import factorize
from ..stats import as_moments
from . import run
from .train import TrainConfig, load_or_train


def subspace(layer, d: torch.Tensor, m: int, alpha: float = 0.5) -> torch.Tensor:
    """[d_in, m] orthonormal: d, then the top m - 1 eigenvectors of C (relative alpha, as factorize)."""
    Cr, Ce = as_moments(layer.diffs).second_moment(False), as_moments(layer.neutral).second_moment(False)
    w, V = torch.linalg.eigh(Cr - alpha * Ce * (Cr.trace() / Ce.trace().clamp_min(1e-30)))
    V = V[:, w.argsort(descending=True)]
    return torch.linalg.qr(torch.cat([d.double()[:, None], V[:, : m - 1]], 1))[0]


def edited(model, rv, m: int):
    out = copy.deepcopy(model)
    sd = out.state_dict()
    for layer in rv.layers:
        Q = subspace(layer, layer.direction, m).float()
        for key in layer.edit_keys:
            W = sd[f"{key}.weight"]
            up, down = subspace_factors(W, Q.T, torch.ones(m))  # the edit CombineRefusalVectors applies
            sd[f"{key}.weight"] = W + up @ down
    out.load_state_dict(sd)
    return out


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
        rv = factorize(run.extract(bed, args.concept, site), method="cpca", k=100, alpha=0.5)
        for m in (int(x) for x in args.ranks.split(",")):
            s = run.scores(base, run.generate_all(edited(bed.model, rv, m), ev), ev, args.concept)
            print(f"{site:9} m={m}  render {s['render_before']:4.0%} -> {s['render_after']:4.0%}  "
                  f"others {s['others_after']:4.0%}  drift {s['drift']:.3f}  change {s['change']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
