"""Step 3: a layer's statistics -> the edit, by the solver a user names (solvers/), with the report the
Low-Rank Factorize node shows and the provenance the edit carries."""

from __future__ import annotations

import json
import logging

import torch

from . import __version__, defaults
from .edit import RefusalEdit
from .solvers.closed_form import MapFit, solve_maps
from .solvers.keep import joint_basis, keep_basis, kept_off
from .solvers.rank_one import METHODS, factorize_layer, pair_residual
from .stats import n_rows
from .types import LayerEdit, RefusalError, RefusalStats
from .weights import check_strength

log = logging.getLogger(__name__)

CLOSED_FORM = "closed_form"  # a map, not a direction (solvers/closed_form.py)
SOLVERS = METHODS + (CLOSED_FORM,)


def factorize(
    stats: RefusalStats,
    method: str = defaults.METHOD,
    k: int = defaults.K,
    alpha: float = defaults.ALPHA,
    moment: str = defaults.MOMENT,
    preserve: float = defaults.PRESERVE,
    ridge: float = defaults.RIDGE,
    keep_rank: int = defaults.KEEP_RANK,
    ordinary_rank: int = defaults.ORDINARY_RANK,
    ordinary_strength: float = defaults.ORDINARY_STRENGTH,
) -> RefusalEdit:
    """The edit of one concept: per layer the unit direction d [1, d_in] at strength 1, or with method
    "closed_form" the map of solvers/closed_form.py (preserve and ridge are its settings; k, alpha, moment unused).
    Layers with keep rows (keep prompts) get d orthogonal to their leading keep_rank directions, and layers with
    ordinary rows (the ordinary text) to their leading ordinary_rank directions too (solvers/keep.py; 0 leaves
    d as solved), and such a layer's edit carries ordinary_strength (else 1: the paper's); the closed form ignores
    both."""
    if method == CLOSED_FORM:
        return closed_form(stats, preserve, ridge)
    return refusal_direction(stats, method, k, alpha, moment, keep_rank, ordinary_rank, ordinary_strength)


def refusal_direction(
    stats: RefusalStats,
    method: str,
    k: int,
    alpha: float,
    moment: str,
    keep_rank: int,
    ordinary_rank: int = 0,
    ordinary_strength: float = 1.0,
) -> RefusalEdit:
    """The paper's edit: one unit direction d [1, d_in] per layer (solvers/rank_one.py), kept off the keep
    prompts' and the ordinary text's directions where there are any, with the report the node shows. A layer
    kept off the ordinary text carries ordinary_strength: its d holds less of the concept."""
    if check_strength(ordinary_strength, "the ordinary text's strength") == 0:
        raise RefusalError("the ordinary text's strength must be above 0: an edit at strength 0 erases nothing")
    layers: list[LayerEdit] = []
    report = []
    inside = []
    residuals: list[float] = []
    fallbacks: list[str] = []
    for layer in stats.layers:
        f = factorize_layer(layer.diffs, layer.neutral, layer.r, method, k, alpha, moment)
        direction, kept = f.direction, ""
        U_keep, U_ordinary = (
            keep_basis(rows, rank) if rows is not None else torch.zeros(layer.dim, 0, dtype=torch.float64)
            for rows, rank in ((layer.keep, keep_rank), (layer.ordinary, ordinary_rank))
        )
        if U_keep.shape[1] or U_ordinary.shape[1]:
            direction, left = kept_off(f.direction, joint_basis(U_keep, U_ordinary))
            named = [
                f"{U.shape[1]} {what}" for U, what in ((U_keep, "keep"), (U_ordinary, "ordinary-text")) if U.shape[1]
            ]
            kept = f", kept off {' and '.join(named)} directions ({left:.2f} of d left)"
            if left < 1e-6:
                inside.append(layer.point)
        strength = ordinary_strength if U_ordinary.shape[1] else 1.0
        layers.append(
            LayerEdit(layer.point, layer.edit_keys, direction[None], (strength,), f.spectrum, f.k_used, f.retained)
        )
        residuals.append(pair_residual(layer.diffs, direction))
        if f.fallback and method != "mean_diff":
            fallbacks.append(layer.point)
            log.warning("%s: %s", layer.point, f.fallback)
        if method == "mean_diff":
            report.append(f"{layer.point}: d = r / |r|{kept}")
            continue
        capped = f" (capped: the data supports {f.k_used})" if f.k_used < k else ""
        solver = ", dense (more rows than width)" if f.solver == "dense" else ""
        fell_back = f"; {f.fallback}" if f.fallback else ""
        report.append(
            f"{layer.point}: k={f.k_used} of {k}{capped}, keeps {f.retained:.2f} of |r|, C_r {f.moment}{solver}{kept}"
            f"{fell_back}"
        )
    has_keep = any(layer.keep is not None and n_rows(layer.keep) for layer in stats.layers)
    has_ordinary = any(layer.ordinary is not None and n_rows(layer.ordinary) for layer in stats.layers)
    if inside:
        held = " and ".join(
            what for what, has in (("the keep prompts", has_keep), ("the ordinary text", has_ordinary)) if has
        )
        raise RefusalError(
            f"at {inside[0]} the concept lies inside what {held} hold: nothing would be erased. Keep prompts should "
            "show look-alikes without the concept (e.g. 'a cartoon mouse' to keep while erasing a named mouse); remove "
            "the ones that show the concept itself"
            + (", or turn keep_ordinary_text off in Prompt Pairs" if has_ordinary else "")
        )
    residual = sum(residuals) / max(len(residuals), 1)
    kept_note = "".join(
        [
            f", kept off the keep prompts' top {keep_rank} directions" if has_keep and keep_rank > 0 else "",
            f", kept off the ordinary text's top {ordinary_rank} directions (strength {ordinary_strength:g})"
            if has_ordinary and ordinary_rank > 0
            else "",
        ]
    )
    report.insert(
        0,
        f"rank-1 refusal direction ({method}) at {len(layers)} layer(s){kept_note}; residual on the pairs {residual:.3f} "
        "(|D (I - d d^T)| / |D|, mean over layers: the share of the unsafe - safe differences still read)",
    )
    if fallbacks:
        report.insert(0, f"WARNING: at {len(fallbacks)} layer(s) ({', '.join(fallbacks)}) d fell back to r / |r|")
    report[:0] = extraction_warnings(stats)
    meta = {
        **stats.provenance(),
        "edit": "refusal_direction",
        "rank": "1",
        "residual": f"{residual:.6f}",
        "method": method,
        "k": str(k),
        "alpha": str(alpha if method == "cpca" else 0.0),
        "moment": moment,
        **({"keep_rank": str(keep_rank)} if has_keep else {}),
        **(
            {"ordinary_rank": str(ordinary_rank), "ordinary_strength": f"{ordinary_strength:g}"} if has_ordinary else {}
        ),
        "factorization": "; ".join(report),
        "version": __version__,
    }
    return RefusalEdit(tuple(layers), meta, source=stats)


def closed_form(stats: RefusalStats, preserve: float = defaults.PRESERVE, ridge: float = defaults.RIDGE) -> RefusalEdit:
    """The closed-form edit: one map per layer (solvers/closed_form.py) with its report and provenance."""
    layers, fits = solve_maps(stats, preserve, ridge)
    return RefusalEdit(tuple(layers), _closed_form_meta(stats, fits, preserve, ridge), source=stats)


def _closed_form_meta(stats: RefusalStats, fits: dict[str, MapFit], preserve: float, ridge: float) -> dict[str, str]:
    ranks = sorted({f.rank for f in fits.values()})
    mean_res = sum(f.residual for f in fits.values()) / len(fits)
    summary = (
        f"closed-form map at {len(stats.layers)} layer(s); rank {','.join(map(str, ranks))}; "
        f"residual on the pairs {mean_res:.3f} (0 = every unsafe token row sent to its safe twin); "
        f"preserve {preserve:g}, ridge {ridge:g}"
    )
    report = "; ".join([*extraction_warnings(stats), summary])
    return {
        **stats.provenance(),
        "edit": "closed_form",
        "method": "closed_form",
        "preserve": f"{preserve:g}",
        "ridge": f"{ridge:g}",
        "rank": ",".join(map(str, ranks)),
        "residual": f"{mean_res:.6f}",
        "fits": json.dumps(
            {p: {"rank": f.rank, "residual": round(f.residual, 6), "moved": round(f.moved, 6)} for p, f in fits.items()}
        ),
        "factorization": report,
        "version": __version__,
    }


def extraction_warnings(stats: RefusalStats) -> list[str]:
    """The fallbacks extraction took (extract.py), for the top of the report."""
    return [f"WARNING (extraction): {stats.meta['fallbacks']}"] if stats.meta.get("fallbacks") else []
