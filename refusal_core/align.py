"""Row alignment of unsafe / safe activations before differencing."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

import torch


def token_pairs(ids_u: Sequence[int], ids_s: Sequence[int]) -> list[tuple[int, int]]:
    """Index pairs (i in u, j in s) of tokens that correspond.

    Equal runs pair one to one; replaced runs pair position by position (extra
    tokens pair with the run's last token); tokens only in u (the concept words)
    pair with the safe token that follows the insertion point (in English, the
    word they modify: "nude" with "woman"). Tokens only in s are dropped.
    """
    pairs: list[tuple[int, int]] = []
    if not ids_u or not ids_s:
        return pairs
    ops = SequenceMatcher(None, list(ids_u), list(ids_s), autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            pairs.extend(zip(range(i1, i2), range(j1, j2)))
        elif tag == "replace":
            pairs.extend((i, min(j1 + (i - i1), j2 - 1)) for i in range(i1, i2))
        elif tag == "delete":
            anchor = min(j1, len(ids_s) - 1)
            pairs.extend((i, anchor) for i in range(i1, i2))
    return pairs


def aligned_text_rows(
    a_u: torch.Tensor, a_s: torch.Tensor, ids_u: Sequence[int] | None, ids_s: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a(u)_i and a(s)_j [n, d] of aligned tokens (token_pairs), in pair order.

    a_u: [L_u, d], a_s: [L_s, d] (context rows; padding beyond the ids is ignored).
    Without token ids, rows pair by position up to the shorter prompt.
    """
    if ids_u is None or ids_s is None:
        n = min(a_u.shape[0], a_s.shape[0])
        return a_u[:n], a_s[:n]
    pairs = [(i, j) for i, j in token_pairs(ids_u, ids_s) if i < a_u.shape[0] and j < a_s.shape[0]]
    if not pairs:
        return a_u.new_zeros((0, a_u.shape[1])), a_s.new_zeros((0, a_s.shape[1]))
    iu = torch.tensor([p[0] for p in pairs])
    js = torch.tensor([p[1] for p in pairs])
    return a_u[iu], a_s[js]


def aligned_text_diffs(
    a_u: torch.Tensor, a_s: torch.Tensor, ids_u: Sequence[int] | None, ids_s: Sequence[int] | None
) -> torch.Tensor:
    """Per-token differences a(u)_i - a(s)_j [n, d] for aligned tokens (aligned_text_rows)."""
    u, s = aligned_text_rows(a_u, a_s, ids_u, ids_s)
    return u - s


def text_rows(a: torch.Tensor, ids: Sequence[int] | None) -> torch.Tensor:
    """The rows of a context [L, d] that hold real tokens (not padding)."""
    if ids is None:
        return a
    return a[: min(len(ids), a.shape[0])]
