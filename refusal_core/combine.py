"""Several concepts at once: stack their directions per layer, each with its own strength.

Projections: the edit then removes the whole subspace, W (I - Q^T diag(s) Q) with Q orthonormal rows
spanning the stacked directions (weights.orthonormal_rows, in the order given); a concept at strength 0
is left out before orthonormalizing, so it changes nothing. Where a layer also has a map
(solvers/closed_form.py), the layer's input maps are composed in the order given, W M_1 M_2 ..., each
M = I - P^T diag(strength * s) Q (neighbouring projections merged into one, as above), which is what
applying the edits one after another does; the product is stored by its SVD again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from . import __version__
from .solvers.linalg import svd_factors
from .types import LayerEdit, RefusalError
from .weights import check_strength, orthonormal_rows

if TYPE_CHECKING:  # RefusalEdit.combine builds the edit from what combine_layers returns
    from .edit import RefusalEdit


def _composed(
    point: str, edit_keys: tuple[str, ...], parts: list[tuple[LayerEdit, torch.Tensor, list[float]]]
) -> LayerEdit:
    """I - A^T B = M_1 M_2 ... for the layer's parts in order (neighbouring projections merged into one)."""
    terms: list[tuple[torch.Tensor, torch.Tensor]] = []  # (A_i, B_i) with Delta_i = A_i^T B_i, in order
    run: list[tuple[torch.Tensor, list[float]]] = []

    def close_run() -> None:
        rows = torch.cat([Q for Q, _ in run]) if run else None
        s = torch.tensor([x for _, ss in run for x in ss])
        run.clear()
        if rows is not None and bool((s != 0).any()):
            Q, kept = orthonormal_rows(rows[s != 0])
            terms.append((s[s != 0][kept, None].double() * Q.double(), Q.double()))

    for layer, Q, s in parts:
        if layer.projection:
            run.append((Q, s))
            continue
        close_run()
        if any(x != 0 for x in s):
            terms.append((torch.tensor(s, dtype=torch.float64)[:, None] * layer.left.double(), Q.double()))
    close_run()
    if not terms:  # every part at strength 0: an exact no-op
        return LayerEdit(point, edit_keys, parts[0][1][:1], (0.0,))
    A, B = terms[0]
    for Ai, Bi in terms[1:]:  # (I - A^T B)(I - Ai^T Bi) = I - [A; Ai - (Ai B^T) A]^T [B; Bi]
        A, B = torch.cat([A, Ai - (Ai @ B.T) @ A]), torch.cat([B, Bi])
    P, s, Q = svd_factors(A, B)
    if s.numel() == 0:
        return LayerEdit(point, edit_keys, parts[0][1][:1], (0.0,))
    return LayerEdit(point, edit_keys, Q.float(), tuple(float(x) for x in s), left=P.float(), k_used=int(s.numel()))


def combine_layers(edits: Sequence[tuple[RefusalEdit, float]]) -> tuple[tuple[LayerEdit, ...], dict[str, str]]:
    """(layers, meta) of one edit from (edit, strength) pairs; layers at the same input point are stacked."""
    if len(edits) < 2:
        raise RefusalError("combine at least two refusal vectors")
    families = {e.meta.get("family") for e, _ in edits}
    if len(families) != 1:
        raise RefusalError(
            f"these refusal vectors were made for different model families ({', '.join(sorted(map(str, families)))}): "
            "combine vectors of one model"
        )
    stacked: dict[str, list[tuple[LayerEdit, torch.Tensor, list[float]]]] = {}
    concepts = []
    for i, (edit, strength) in enumerate(edits):
        check_strength(strength, f"the strength of vector {i + 1}")
        for layer in edit.layers:
            stacked.setdefault(layer.point, []).append((layer, layer.basis, [s * strength for s in layer.strengths]))
        concepts.append(
            {
                "concept": edit.meta.get("concept", "") or f"vector {i + 1}",
                "strength": strength,
                "site": edit.meta.get("site"),
                "blocks": edit.meta.get("blocks"),
                "method": edit.meta.get("method"),
                "pairs_sha256": edit.meta.get("pairs_sha256"),
            }
        )
    layers = []
    for point, parts in stacked.items():
        first = parts[0][0]
        if any(p[0].edit_keys != first.edit_keys or p[0].dim != first.dim for p in parts):
            raise RefusalError(
                f"the vectors disagree on the layer at {point} (other edit keys or width): extract them from the same model"
            )
        if not all(p[0].projection for p in parts):
            layers.append(_composed(point, first.edit_keys, parts))
            continue
        rows = torch.cat([p[1] for p in parts])
        s = torch.tensor([x for p in parts for x in p[2]])
        keep = s != 0
        if not bool(keep.any()):  # every concept here at strength 0: one row at strength 0, an exact no-op
            layers.append(LayerEdit(point, first.edit_keys, first.basis[:1], (0.0,)))
            continue
        Q, kept = orthonormal_rows(rows[keep])
        s = s[keep][kept]
        layers.append(LayerEdit(point, first.edit_keys, Q, tuple(float(x) for x in s)))
    base = edits[0][0].meta
    meta = {
        "family": base.get("family", "?"),
        "site": ",".join(dict.fromkeys(e.meta.get("site", "?") for e, _ in edits)),
        "blocks": ",".join(dict.fromkeys(b for e, _ in edits for b in e.meta.get("blocks", "").split(",") if b)),
        "dims": ",".join(str(layer.dim) for layer in layers),
        "edit": "combined",
        "method": "combined",
        "concepts": json.dumps(concepts),
        "concept": " + ".join(c["concept"] for c in concepts),
        "version": __version__,
    }
    return tuple(layers), meta
