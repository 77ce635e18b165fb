"""The weight edit W' = W (I - lambda P^T diag(s) Q) as low-rank factors (docs/method.md, step 4).

Q [m, d_in] holds orthonormal rows (one per concept), s their strengths, and P = Q: with one concept
this is the paper's W (I - lambda d d^T). A map (solvers/closed_form.py) has its own orthonormal P. The
factors up = -lambda (W P^T) diag(s) [d_out, m] and down = Q [m, d_in] give W' = W + up @ down,
which is how ComfyUI applies the edit (a LoRA patch) and how a LoRA file stores it; nothing here
ever forms a dense d x d matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .defaults import MAX_STRENGTH
from .types import RefusalError

if TYPE_CHECKING:  # the edit's edited_state_dict calls this module
    from .edit import RefusalEdit


def check_strength(strength: float, name: str = "strength") -> float:
    """lambda must be finite and in [0, MAX_STRENGTH]: 1 removes the direction exactly, above that it over-suppresses."""
    if not math.isfinite(strength) or not 0.0 <= strength <= MAX_STRENGTH:
        raise RefusalError(f"{name} must be between 0 and {MAX_STRENGTH:g}, got {strength}")
    return strength


# A row that the rows before it span to within this (relative to its length) adds no direction.
DEPENDENT = 1e-6


def orthonormal_rows(D: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(Q [r, d] orthonormal rows spanning the rows of D [m, d], the indices of the rows of D they come from).

    Gram-Schmidt in order, in float64 and twice over (Q[0] = D[0] / |D[0]|); a row that the earlier
    ones span adds no row (QR would give it a direction of round-off).
    """
    out: list[torch.Tensor] = []
    kept: list[int] = []
    for j, row in enumerate(D.double()):
        v = row.clone()
        for _ in range(2):
            for q in out:
                v = v - (v @ q) * q
        if float(v.norm()) > DEPENDENT * float(row.norm()):
            out.append(v / v.norm())
            kept.append(j)
    if not out:
        raise RefusalError("no direction to edit: every direction is zero")
    return torch.stack(out).float().contiguous(), kept


def edit_factors(
    W: torch.Tensor,
    Q: torch.Tensor,
    s: Sequence[float] | torch.Tensor,
    lam: float = 1.0,
    dtype: torch.dtype | None = None,
    P: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """up [d_out, m], down [m, d_in] with W + up @ down = W (I - lam P^T diag(s) Q).

    W: [d_out, d_in]; Q: [m, d_in] orthonormal rows (a single direction [d_in] is taken as m = 1);
    s: [m] strengths; P: [m, d_in] (default Q). Computed in float32 from W as given (the caller passes
    the weight as the host computes with it: dequantized, earlier patches included); returned in
    `dtype` (default W's).
    """
    Q = Q[None] if Q.ndim == 1 else Q
    P = Q if P is None else (P[None] if P.ndim == 1 else P)
    s = torch.as_tensor(s, dtype=torch.float32).reshape(-1)
    if W.ndim != 2 or Q.ndim != 2 or Q.shape[1] != W.shape[1] or s.shape != (Q.shape[0],) or P.shape != Q.shape:
        raise ValueError(
            f"weight {tuple(W.shape)} does not take directions {tuple(Q.shape)} with strengths {tuple(s.shape)}"
        )
    Qf = Q.detach().to(device=W.device, dtype=torch.float32)
    Pf = P.detach().to(device=W.device, dtype=torch.float32)
    up = -lam * (W.detach().float() @ Pf.T) * s.to(W.device)
    dtype = dtype or W.dtype
    return up.to(dtype), Qf.to(dtype, copy=True).contiguous()  # its own copy: layers that share Q get their own factors


def edited_weight(
    W: torch.Tensor,
    Q: torch.Tensor,
    s: Sequence[float] | torch.Tensor | None = None,
    lam: float = 1.0,
    P: torch.Tensor | None = None,
) -> torch.Tensor:
    """W (I - lam P^T diag(s) Q) [d_out, d_in] (P default Q) in W's dtype, computed as the host applies
    the factors (float32 sum, then cast); for checks and pure-torch models, never for hosts."""
    Q = Q[None] if Q.ndim == 1 else Q
    up, down = edit_factors(W, Q, torch.ones(Q.shape[0]) if s is None else s, lam, torch.float32, P)
    return (W.float() + up @ down).to(W.dtype)


def edited_state_dict(state: dict[str, torch.Tensor], edit: RefusalEdit, lam: float = 1.0) -> dict[str, torch.Tensor]:
    """A new state dict with every '<name>.weight' that `edit` touches edited; the input is untouched."""
    out = dict(state)
    for name, (P, s, Q) in edit.maps().items():
        key = f"{name}.weight"
        if key not in state:
            raise KeyError(f"no weight '{key}' in the model")
        out[key] = edited_weight(state[key], Q, s, lam, P)
    return out


def residual(W_edited: torch.Tensor, W: torch.Tensor, d: torch.Tensor) -> float:
    """||W' d|| / ||W||: 0 when the edited layer no longer reads d (lambda = 1)."""
    return float((W_edited.float() @ d.float().to(W_edited.device)).norm() / W.float().norm().clamp_min(1e-30))
