"""Per-layer statistics of activation rows, bounded by the layer width.

The factorization (solvers/rank_one.py) needs, of the difference rows D [n, d] and of the neutral rows
E [m, d], only their count, sum and second moment X^T X. Rows are kept while there are at most d
of them (a [n <= d, d] block costs no more than a d x d matrix, and the span solver is fastest on
few rows); beyond d a layer holds the moments instead. Both forms are exact inputs to the
factorization, so memory per layer is bounded by d x d whatever the number of prompts, tokens
and noise levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of rows X [count, d]: total = X.sum(0) [d], gram = X^T X [d, d].

    float64, so that centering (gram - count * mean mean^T) loses nothing to cancellation.
    `shape` and `ndim` read like those of the rows they stand for ([count, d], 2), so code
    that only asks how many rows of which width works on either form.
    """

    count: int
    total: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, X: torch.Tensor) -> Moments:
        """The moments of rows X [n, d]."""
        Xd = X.detach().double()
        return cls(int(X.shape[0]), Xd.sum(0), Xd.T @ Xd)

    @classmethod
    def zeros(cls, d: int) -> Moments:
        return cls(0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.count, self.dim))

    @property
    def ndim(self) -> int:
        return 2

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total, self.gram + other.gram)

    def mean(self) -> torch.Tensor:
        """[d] float64 mean row (zeros for no rows)."""
        return self.total / max(self.count, 1)

    def second_moment(self, centered: bool) -> torch.Tensor:
        """[d, d] float64: X^T X / n, or (X - mean)^T (X - mean) / n when centered."""
        S = self.gram / max(self.count, 1)
        if centered:
            mu = self.mean()
            S = S - torch.outer(mu, mu)
        return S


# What a LayerVector holds for D and for E: the rows [n, d] themselves, or their Moments.
Rows = torch.Tensor | Moments


def as_moments(X: Rows) -> Moments:
    return X if isinstance(X, Moments) else Moments.of(X)


def n_rows(X: Rows) -> int:
    return int(X.shape[0])


def row_mean(X: Rows) -> torch.Tensor:
    """[d] float32 mean row, as X.mean(0) of the rows would give it."""
    return X.mean().float() if isinstance(X, Moments) else X.mean(0)


class RowAccumulator:
    """Rows streamed in chunk by chunk: kept as rows up to `limit` (default: the width d), moments beyond.

    add(rows [k, d]) takes a chunk and keeps no reference to it once it has switched to moments,
    so the caller's activations are free as soon as it drops them. result() is rows [n, d] (the
    chunks concatenated in order, exactly as torch.cat would) or Moments.
    """

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.chunks: list[torch.Tensor] = []
        self.n = 0
        self.moments: Moments | None = None
        self.dim: int | None = None

    def add(self, rows: torch.Tensor) -> None:
        if self.dim is None:
            self.dim = int(rows.shape[1])
        limit = self.limit if self.limit is not None else self.dim
        if self.moments is None and self.n + rows.shape[0] <= limit:
            # a view (e.g. the real-token rows of a padded context) would keep its whole base alive
            self.chunks.append(rows.clone() if rows._base is not None else rows)
            self.n += int(rows.shape[0])
            return
        if self.moments is None:  # the switch: the rows kept so far become moments, once
            self.moments = Moments.of(torch.cat(self.chunks)) if self.chunks else Moments.zeros(self.dim)
            self.chunks = []
        self.moments = self.moments + Moments.of(rows)
        self.n += int(rows.shape[0])

    def result(self, dim: int | None = None) -> Rows:
        """Rows [n, d] or Moments; `dim` gives the width when no chunk ever came."""
        if self.moments is not None:
            return self.moments
        if not self.chunks:
            return torch.zeros((0, self.dim if self.dim is not None else int(dim or 0)))
        return torch.cat(self.chunks) if len(self.chunks) > 1 else self.chunks[0]


class RowBudget:
    """Keeps at most `per_chunk` rows of each chunk, chosen by a seeded generator."""

    def __init__(self, per_chunk: int, seed: int):
        self.per_chunk = max(1, per_chunk)
        self.gen = torch.Generator().manual_seed(seed)

    def pick(self, n: int) -> torch.Tensor | None:
        """The indices of the rows to keep of n (sorted), or None for all of them."""
        if n <= self.per_chunk:
            return None
        return torch.randperm(n, generator=self.gen)[: self.per_chunk].sort().values

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        idx = self.pick(rows.shape[0])
        return rows if idx is None else rows[idx]
