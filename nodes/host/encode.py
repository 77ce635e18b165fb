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


def _token_ids(tokens: Any, n_rows: int) -> tuple[int, ...] | None:
    """The ids of the encoder whose tokens are the conditioning's rows (same count), without padding.

    Models with two encoders (HunyuanVideo: CLIP-L for the pooled vector, an LLM for the rows, its
    template cropped) may have none that lines up; rows are then paired by position.
    """
    for ids in _id_lists(tokens):
        if len(ids) == n_rows:
            return _strip_padding(ids)
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
    rows = int(cond[0][0].shape[1])
    return EncodedPrompt(text=text, token_ids=_token_ids(tokens, rows), conditioning=cond, text_len=rows)
