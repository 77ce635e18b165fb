"""Several concepts at once: stack their directions per layer, each with its own strength.

The edit then removes the whole subspace, W (I - Q diag(s) Q^T) with Q an orthonormal basis of the
stacked directions (edit.subspace_factors); a concept at strength 0 is left out entirely.
"""
from __future__ import annotations

import json
from typing import Sequence

import torch

from . import __version__
from .edit import check_strength
from .stats import stack
from .types import LayerVector, RefusalError, RefusalVector


def combine(vectors: Sequence[tuple[RefusalVector, float]]) -> RefusalVector:
    """One RefusalVector from (vector, strength) pairs; layers at the same input point are stacked."""
    if len(vectors) < 2:
        raise RefusalError("combine at least two refusal vectors")
    families = {rv.meta.get("family") for rv, _ in vectors}
    if len(families) != 1:
        raise RefusalError(f"these refusal vectors were made for different model families ({', '.join(sorted(map(str, families)))}): combine vectors of one model")
    stacked: dict[str, list[tuple[LayerVector, torch.Tensor, torch.Tensor]]] = {}
    concepts = []
    for i, (rv, strength) in enumerate(vectors):
        check_strength(strength, f"the strength of vector {i + 1}")
        for layer in rv.layers:
            D, s = layer.basis()
            stacked.setdefault(layer.point, []).append((layer, D, s * strength))
        concepts.append({"concept": rv.meta.get("concept", "") or f"vector {i + 1}", "strength": strength, "site": rv.meta.get("site"),
                         "blocks": rv.meta.get("blocks"), "method": rv.meta.get("method"), "pairs_sha256": rv.meta.get("pairs_sha256")})
    layers = []
    for point, parts in stacked.items():
        first = parts[0][0]
        if any(p[0].edit_keys != first.edit_keys or p[0].dim != first.dim for p in parts):
            raise RefusalError(f"the vectors disagree on the layer at {point} (other edit keys or width): extract them from the same model")
        layers.append(LayerVector(
            point=point, edit_keys=first.edit_keys,
            diffs=stack([p[0].diffs for p in parts]), neutral=stack([p[0].neutral for p in parts]), r=first.r,
            direction=torch.cat([p[1] for p in parts]), strengths=tuple(float(x) for p in parts for x in p[2]),
        ))
    base = vectors[0][0].meta
    meta = {
        "family": base.get("family", "?"),
        "site": ",".join(dict.fromkeys(rv.meta.get("site", "?") for rv, _ in vectors)),
        "blocks": ",".join(dict.fromkeys(b for rv, _ in vectors for b in rv.meta.get("blocks", "").split(",") if b)),
        "dims": ",".join(str(layer.dim) for layer in layers),
        "method": "combined",
        "concepts": json.dumps(concepts),
        "concept": " + ".join(c["concept"] for c in concepts),
        "version": __version__,
    }
    return RefusalVector(layers=tuple(layers), meta=meta)
