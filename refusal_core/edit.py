"""The weight edit W' = W (I - lambda d d^T), kept as rank-1 factors (METHOD.md step 4)."""
from __future__ import annotations

import math

import torch

from .types import RefusalError

MAX_STRENGTH = 4.0


def check_strength(strength: float, name: str = "strength") -> float:
    """lambda must be finite and in [0, 4]: 1 removes the direction exactly, above that it over-suppresses."""
    if not math.isfinite(strength) or not 0.0 <= strength <= MAX_STRENGTH:
        raise RefusalError(f"{name} must be between 0 and {MAX_STRENGTH:g}, got {strength}")
    return strength


def refusal_factors(W: torch.Tensor, d: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA-style factors of the edit: W + lambda * up @ down = W (I - lambda d d^T).

    W: [d_out, d_in], d: [d_in] unit. Computed in float32.
    Returns up = -W d [d_out, 1] and down = d^T [1, d_in], in `dtype` (default W's).
    """
    if W.ndim != 2 or d.ndim != 1 or W.shape[1] != d.shape[0]:
        raise ValueError(f"weight {tuple(W.shape)} does not take a direction of size {tuple(d.shape)}")
    Wf, df = W.float(), d.to(device=W.device, dtype=torch.float32)
    dtype = dtype or W.dtype
    up = -(Wf @ df)[:, None]
    down = df[None, :]
    return up.to(dtype), down.to(dtype)


def subspace_factors(
    W: torch.Tensor, D: torch.Tensor, s: torch.Tensor, lam: float = 1.0, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of W' = W (I - lam Q diag(s) Q^T), Q = orthonormal basis of the rows of D (in order).

    W: [d_out, d_in]; D: [m, d_in] unit directions of m concepts; s: [m] their strengths. Concepts at
    strength 0 are left out before orthonormalizing, so they change nothing. Computed in float32.
    Returns up = -lam W Q diag(s) [d_out, r] and down = Q^T [r, d_in] (r <= m), W' = W + up @ down.
    """
    if D.ndim != 2 or D.shape[1] != W.shape[1] or s.shape != (D.shape[0],):
        raise ValueError(f"weight {tuple(W.shape)} does not take directions {tuple(D.shape)} with strengths {tuple(s.shape)}")
    keep = s != 0
    dtype = dtype or W.dtype
    if not bool(keep.any()):
        return W.new_zeros((W.shape[0], 1), dtype=dtype), W.new_zeros((1, W.shape[1]), dtype=dtype)
    Q, _ = torch.linalg.qr(D[keep].to(device=W.device, dtype=torch.float32).T)  # [d_in, r]
    up = -lam * (W.float() @ Q) * s[keep].to(Q.device)
    return up.to(dtype), Q.T.contiguous().to(dtype)


def apply_dense(W: torch.Tensor, d: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """W (I - lambda d d^T) [d_out, d_in], for checks and pure-torch models; never for hosts."""
    up, down = refusal_factors(W, d, torch.float32)
    return (W.float() + lam * up @ down).to(W.dtype)


def edited_state_dict(
    state: dict[str, torch.Tensor], directions: dict[str, torch.Tensor], lam: float = 1.0
) -> dict[str, torch.Tensor]:
    """A new state dict with every '<name>.weight' in `directions` edited; the input is untouched."""
    out = dict(state)
    for name, d in directions.items():
        key = f"{name}.weight"
        if key not in state:
            raise KeyError(f"no weight '{key}' in the model")
        out[key] = apply_dense(state[key], d, lam)
    return out


def residual(W_edited: torch.Tensor, W: torch.Tensor, d: torch.Tensor) -> float:
    """||W' d|| / ||W||: 0 when the edited layer no longer reads d (lambda = 1)."""
    return float((W_edited.float() @ d.float().to(W_edited.device)).norm() / W.float().norm().clamp_min(1e-30))
