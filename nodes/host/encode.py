"""Prompts encoded exactly as core CLIPTextEncode does, with the token ids that align a pair's rows."""

from __future__ import annotations

from typing import Any

from ...refusal_core.prompts import check_prompt_length
from ...refusal_core.types import EncodedPrompt, RefusalError


def _id_lists(tokens: Any) -> list[list[int]]:
    """Every text encoder's token ids (all batches flattened; -1 for embedding tokens)."""
    if not isinstance(tokens, dict):
        return []
    out = []
    for batches in tokens.values():
        try:
            out.append([int(t[0]) if isinstance(t[0], int) else -1 for batch in batches for t in batch])
        except (TypeError, IndexError):
            continue
    return out


def _strip_padding(ids: list[int]) -> tuple[int, ...]:
    """Without the trailing run of one repeated id (padding), keeping one of it (the end token)."""
    end = len(ids)
    while end > 1 and ids[end - 1] == ids[end - 2]:
        end -= 1
    return tuple(ids[:end])


def _zero_tail(rows: Any) -> int:
    """How many trailing rows of a context [L, d] are exactly zero: the padding of an encoder that zeroes
    its masked rows (Wan's umt5), whose pad id follows an end token of another id."""
    nonzero = rows.ne(0).any(-1).nonzero()
    return int(rows.shape[0]) - (int(nonzero[-1]) + 1 if len(nonzero) else 0)


def _token_ids(tokens: Any, n_rows: int, zero_tail: int = 0) -> tuple[int, ...] | None:
    """The ids of the encoder whose tokens are the conditioning's rows (same count), without padding:
    neither the repeated pad id nor rows the encoder zeroed (zero_tail of them at the end).

    Models with two encoders (HunyuanVideo: CLIP-L for the pooled vector, an LLM for the rows, its
    template cropped) may have none that lines up; rows are then paired by position.
    """
    for ids in _id_lists(tokens):
        if len(ids) == n_rows:
            return _strip_padding(ids)[: max(1, n_rows - zero_tail)]
    return None


def encode_prompt(clip: Any, text: str) -> EncodedPrompt:
    """Exactly as CLIPTextEncode: clip.tokenize then clip.encode_from_tokens_scheduled.

    Prompts longer than the model's text window are refused before they reach the encoder.
    """
    if clip is None:
        raise RefusalError("no CLIP connected: connect the text encoder that the model uses (for Wan: umt5, type wan)")
    check_prompt_length(text)
    tokens = clip.tokenize(text)
    lengths = [len(_strip_padding(ids)) for ids in _id_lists(tokens) if ids]
    check_prompt_length(text, max(lengths) if lengths else None)
    cond = clip.encode_from_tokens_scheduled(tokens)
    context = cond[0][0][0]
    rows = int(context.shape[0])
    return EncodedPrompt(
        text=text, token_ids=_token_ids(tokens, rows, _zero_tail(context)), conditioning=cond, text_len=rows
    )
