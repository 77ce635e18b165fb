"""What every solver shares: the round-off rules that keep an edit the same on any CPU, BLAS and thread count,
symmetric eigendecompositions in a fixed order, and the SVD that stores a low-rank map."""

from __future__ import annotations

import torch

# Activations are float32 (exact to 6e-8 of their size), and a forward pass accumulates errors some
# hundred times that, which differ with the BLAS kernels, the CPU and the thread count. Any part of
# the data smaller than ROUND_OFF of its own size is treated as zero, so round-off never picks d.
ROUND_OFF = 1e-5
# Eigenvalues of C closer than this (relative to the largest) are one eigenspace: U_k takes all or none.
TIE = 1e-6
# Singular values of a map below this fraction of the largest are round-off of the solve, not edit.
RANK_CUT = 1e-5


def eigh_desc(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues [q] descending and their eigenvectors [q, q] of a symmetric C."""
    w, V = torch.linalg.eigh(C)
    return w.flip(0), V.flip(1)


def select_k(w: torch.Tensor, k: int, floor: float, slack: float = 0.0) -> int:
    """How many leading eigenvectors U_k takes: k, capped by the clearly positive eigenvalues of C.

    w: eigenvalues [q] descending. An eigenvalue at or below `floor` (round-off of the data, see
    ROUND_OFF) or at zero (outside the data's span, or r's own direction once D is centered) is a tie
    that the BLAS would break; it is never taken. Eigenvalues tied with the k-th (within TIE of the
    largest) are taken with it, so that no kernel decides which of them U_k holds.
    slack: w known only to within this (absolute); then the most that the exact eigenvalues could take.
    """
    if w.numel() == 0:
        return 0
    tol = max((float(w.abs().max()) + slack) * 1e-9, floor) - slack
    n_pos = int((w > tol).sum())
    n = min(k, n_pos)
    while 0 < n < n_pos and float(w[n - 1] - w[n]) <= TIE * (float(w[0]) + slack) + 2 * slack:
        n += 1
    return n


def float32_eigvalsh(C: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(eigenvalues [q] descending, float64; a bound on their error) of a symmetric C [q, q], decomposed in float32
    (two thirds of the float64 cost). The bound is q eps32 ||C||, LAPACK's normwise one with p(q) = q (measured
    errors are ten times below it at q = 1024): decisions taken on these values must hold anywhere within it."""
    w = torch.linalg.eigvalsh(C.float()).flip(0).double()
    return w, C.shape[0] * torch.finfo(torch.float32).eps * float(w.abs().max())


def svd_factors(
    A: torch.Tensor, B: torch.Tensor, cut: float = RANK_CUT
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P [r, d], s [r], Q [r, d]) with A^T B = P^T diag(s) Q, P and Q orthonormal rows, s descending and
    above cut * s[0]. A, B: [n, d] (float64 inside). An all-zero product gives r = 0."""
    A, B = A.double(), B.double()
    Qa, Ra = torch.linalg.qr(A.T)
    Qb, Rb = torch.linalg.qr(B.T)
    U, s, Vh = torch.linalg.svd(Ra @ Rb.T)
    keep = s > cut * float(s[0]) if s.numel() and float(s[0]) > 0 else torch.zeros_like(s, dtype=torch.bool)
    U, s, V = U[:, keep], s[keep], Vh[keep].T
    P, Q = (Qa @ U).T, (Qb @ V).T
    # the sign of each singular pair is arbitrary: fix it so the same edit comes out on any BLAS
    flip = torch.where(Q.gather(1, Q.abs().argmax(1, keepdim=True)).squeeze(1) < 0, -1.0, 1.0).to(Q.dtype)
    return (P * flip[:, None]).contiguous(), s, (Q * flip[:, None]).contiguous()
