"""How many directions does a concept take? Remove a rank-m subspace and score it on the first world.

    python -m testbed.rank_sweep [--concept character] [--sites text_kv,cross_out] [--ranks 1,2,4,6,8]

The subspace per layer is d (the default cPCA direction) plus the next m - 1 eigenvectors of the very
C = C_r - alpha C_e that the factorization solved (evaluate.subspace_edit), orthonormalized; the edit is
W (I - Q^T Q), applied through the same factors as CombineRefusalVectors' edits. Not a pack option: it
measures what a rank-1 edit leaves (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refusal_core import defaults

from . import provenance
from .evaluate import Bed, Groups, edited_model, generate, scores, subspace_edit
from .progress import Progress
from .run import SEED, SIZES
from .tables import pct, table
from .worlds import FIRST


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concept", default="character", choices=list(FIRST.concepts))
    ap.add_argument("--sites", default="text_kv,cross_out")
    ap.add_argument("--ranks", default="1,2,4,6,8")
    ap.add_argument("--out", help="also write the rows as JSON to this file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    shown = Progress(args.quiet)
    bed = Bed(FIRST, 0, log=shown.say, progress=shown.bar)
    groups = Groups.build(FIRST, "held_out", SIZES)
    sites, ranks = args.sites.split(","), [int(x) for x in args.ranks.split(",")]
    advance = shown.bar(1 + len(sites) * (1 + len(ranks)), f"rank sweep ({args.concept})")
    base = generate(bed.model, groups, SEED + 1)
    advance()
    rows = []
    for site in sites:
        stats = bed.extract(args.concept, site, defaults.SIGMAS, SEED)
        advance()
        for m in ranks:
            after = generate(edited_model(bed.model, subspace_edit(stats, m), defaults.STRENGTH), groups, SEED + 1)
            rows.append({"concept": args.concept, "site": site, "rank": m, **scores(base, after, groups, args.concept)})
            advance()
    print(
        f"{args.concept}: rank-m subspace edits, {SIZES.unsafe} held-out prompts, drift on {len(groups.prompts['clean'])} prompts without a concept"
    )
    print(
        table(
            ["site", "rank", "render", "others", "drift", "change"],
            [
                [
                    r["site"],
                    str(r["rank"]),
                    f"{pct(r['render_before'])} -> {pct(r['render_after'])}",
                    pct(r["others_after"]),
                    f"{r['drift']:.3f}",
                    f"{r['change']:.3f}",
                ]
                for r in rows
            ],
        )
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "made_by": provenance.made_by(),
                    "held_out_per_concept": SIZES.unsafe,
                    "clean_prompts": len(groups.prompts["clean"]),
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
