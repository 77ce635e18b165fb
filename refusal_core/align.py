"""A site's rows: the tokens of unsafe and safe prompts paired before differencing, and the rows of one prompt."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

import torch

from .sites import JOINT, TEXT, Site
from .types import EncodedPrompt, RefusalError


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


def _split_joint(a: torch.Tensor, enc: EncodedPrompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint sequence [video tokens, text tokens] -> (video rows, text rows)."""
    if enc.text_len is None or enc.text_len > a.shape[0]:
        raise RefusalError("this edit site mixes video and text tokens, but the prompt's text length is unknown")
    n_video = a.shape[0] - enc.text_len
    return a[:n_video], a[n_video:]


def aligned_pair_rows(
    site: Site, a_u: torch.Tensor, a_s: torch.Tensor, enc_u: EncodedPrompt, enc_s: EncodedPrompt
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(difference rows [n, d], and at text sites the aligned rows a(u)_i and a(s)_j [n, d] they are the difference of,
    else None and None): the closed-form map is solved from the aligned rows themselves."""
    if site.tokens == TEXT:
        u, s = aligned_text_rows(a_u, a_s, enc_u.token_ids, enc_s.token_ids)
        return u - s, u, s
    if site.tokens == JOINT:
        (v_u, t_u), (v_s, t_s) = _split_joint(a_u, enc_u), _split_joint(a_s, enc_s)
        if v_u.shape != v_s.shape:
            raise RefusalError(f"video tokens do not line up at {site.name}: '{enc_u.text[:40]}' / '{enc_s.text[:40]}'")
        return torch.cat([v_u - v_s, aligned_text_diffs(t_u, t_s, enc_u.token_ids, enc_s.token_ids)]), None, None
    if a_u.shape != a_s.shape:
        raise RefusalError(
            f"tokens do not line up at {site.name} for the pair '{enc_u.text[:40]}' / '{enc_s.text[:40]}'"
        )
    return a_u - a_s, None, None


def prompt_rows(site: Site, a: torch.Tensor, enc: EncodedPrompt) -> torch.Tensor:
    """The rows of one prompt's input that hold real tokens (no text padding) [m, d]."""
    if site.tokens == TEXT:
        return text_rows(a, enc.token_ids)
    if site.tokens == JOINT:
        video, text = _split_joint(a, enc)
        return torch.cat([video, text_rows(text, enc.token_ids)])
    return a


def pair_rows(
    site: Site, a_u: torch.Tensor, a_s: torch.Tensor, enc_u: EncodedPrompt, enc_s: EncodedPrompt
) -> torch.Tensor:
    """Difference rows a(u) - a(s) [n, d] at one layer, tokens paired as the site's token space requires."""
    return aligned_pair_rows(site, a_u, a_s, enc_u, enc_s)[0]


def pairs_by_position(site: Site, enc_u: EncodedPrompt, enc_s: EncodedPrompt) -> bool:
    """Whether this pair's text rows can only be paired by position (a prompt without token ids): the
    concept's tokens may then be compared with other words, which the report must say."""
    return site.tokens in (TEXT, JOINT) and (enc_u.token_ids is None or enc_s.token_ids is None)
