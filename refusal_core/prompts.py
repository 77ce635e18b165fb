"""Parsing of prompt pairs ("unsafe | safe" lines, .txt / .csv / .json files) and neutral prompts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from . import defaults
from .types import PromptPair, PromptPairs, RefusalError

MAX_PAIRS_FILE_BYTES = 1 << 20
MIN_PAIRS = 2
MAX_PROMPT_CHARS = 2000
# Wan's text length (text_len): longer prompts are not what the model was trained on, and a pair
# that needs more words than this does not differ "only by the concept".
MAX_PROMPT_TOKENS = 512


def parse_pair_lines(text: str) -> list[PromptPair]:
    """One pair per line, 'unsafe prompt | safe prompt'; blank lines and '#' comments are skipped."""
    pairs = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "|" not in line:
            raise RefusalError(f"pair at line {n} has no '|': write 'unsafe prompt | safe prompt' (got '{line[:60]}')")
        unsafe, _, safe = line.partition("|")
        pairs.append(_pair(unsafe, safe, f"line {n}"))
    return pairs


def parse_prompt_lines(text: str) -> list[str]:
    """One prompt per line (neutral or keep prompts); blank lines and lines starting with # are skipped."""
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


def _pair(unsafe: object, safe: object, where: str) -> PromptPair:
    if not isinstance(unsafe, str) or not isinstance(safe, str):
        raise RefusalError(f"pair at {where} must be two texts")
    u, s = unsafe.strip(), safe.strip()
    if not u:
        raise RefusalError(f"pair at {where} has no unsafe prompt: write 'unsafe prompt | safe prompt'")
    if not s:
        raise RefusalError(f"pair at {where} has no safe prompt: write 'unsafe prompt | safe prompt'")
    if "|" in s:
        raise RefusalError(f"pair at {where} has more than one '|': write exactly 'unsafe prompt | safe prompt'")
    if u == s:
        raise RefusalError(f"pair at {where} has the same prompt on both sides: the safe side must lack the concept")
    return PromptPair(u, s)


def read_pairs_file(path: str | Path) -> tuple[list[PromptPair], list[str]]:
    """Pairs (and, for JSON, optional neutral prompts) from a .txt, .csv or .json file.

    .txt: 'unsafe | safe' lines. .csv: two columns unsafe,safe (a header row named
    so is skipped). .json: [["unsafe", "safe"], ...], [{"unsafe": .., "safe": ..}],
    or {"pairs": [...], "neutral": [...]}.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".csv", ".json"):
        raise RefusalError(f"pairs file '{path.name}' must end in .txt, .csv or .json")
    if path.stat().st_size > MAX_PAIRS_FILE_BYTES:
        raise RefusalError(f"pairs file '{path.name}' is larger than 1 MiB: that is not a list of prompt pairs")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RefusalError(f"pairs file '{path.name}' is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    return parse_pairs_text(text, suffix, path.name)


def parse_pairs_text(text: str, suffix: str, name: str = "pairs") -> tuple[list[PromptPair], list[str]]:
    if suffix == ".txt":
        return parse_pair_lines(text), []
    if suffix == ".csv":
        pairs = []
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as e:
            raise RefusalError(f"'{name}' is not valid CSV: {e}") from None
        for n, row in enumerate(rows, start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) != 2:
                raise RefusalError(f"'{name}' row {n} has {len(cells)} columns: each row must be 'unsafe,safe'")
            if n == 1 and [c.lower() for c in cells] == ["unsafe", "safe"]:
                continue
            pairs.append(_pair(cells[0], cells[1], f"'{name}' row {n}"))
        return pairs, []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RefusalError(
            f"'{name}' is not valid JSON ({e.msg}, line {e.lineno} column {e.colno}): is it truncated?"
        ) from None
    except RecursionError:
        raise RefusalError(f"'{name}' nests too deeply to be a list of prompt pairs") from None
    neutral: list[str] = []
    if isinstance(data, dict):
        raw_neutral = data.get("neutral", [])
        if not isinstance(raw_neutral, list) or not all(isinstance(x, str) for x in raw_neutral):
            raise RefusalError(f"'{name}': 'neutral' must be a list of texts")
        neutral = [x.strip() for x in raw_neutral if x.strip()]
        data = data.get("pairs")
    if not isinstance(data, list):
        raise RefusalError(f'\'{name}\' must hold a list of pairs: [["unsafe", "safe"], ...] or {{"pairs": [...]}}')
    pairs = []
    for n, item in enumerate(data, start=1):
        if isinstance(item, dict):
            pairs.append(_pair(item.get("unsafe"), item.get("safe"), f"'{name}' item {n}"))
        elif isinstance(item, list) and len(item) == 2:
            pairs.append(_pair(item[0], item[1], f"'{name}' item {n}"))
        else:
            raise RefusalError(f'\'{name}\' item {n} must be ["unsafe", "safe"] or {{"unsafe": .., "safe": ..}}')
    return pairs, neutral


def check_prompt_length(text: str, n_tokens: int | None = None) -> None:
    """Refuse prompts longer than the text encoder window the model was trained with."""
    if len(text) > MAX_PROMPT_CHARS:
        raise RefusalError(
            f"the prompt '{text[:40]}...' has {len(text)} characters: keep pair and neutral prompts to one "
            f"sentence (at most {MAX_PROMPT_CHARS} characters)"
        )
    if n_tokens is not None and n_tokens > MAX_PROMPT_TOKENS:
        raise RefusalError(
            f"the prompt '{text[:40]}...' is {n_tokens} tokens long, more than the {MAX_PROMPT_TOKENS} tokens "
            "Wan reads: shorten it to one sentence"
        )


def validate_pairs(pairs: list[PromptPair], neutral: list[str], keep: list[str] = ()) -> None:
    if len(pairs) < MIN_PAIRS:
        raise RefusalError(
            f"{len(pairs)} prompt pair(s) given: give at least {MIN_PAIRS} (5 is the paper's number), one per line 'unsafe | safe'"
        )
    seen = set()
    for p in pairs:
        if (p.unsafe, p.safe) in seen:
            raise RefusalError(f"the pair '{p.unsafe} | {p.safe}' is given twice: remove the duplicate")
        seen.add((p.unsafe, p.safe))
    if len(neutral) < 2:
        raise RefusalError(
            "give at least 2 neutral prompts (unrelated scenes, one per line): cPCA contrasts against them"
        )
    for text in [t for p in pairs for t in (p.unsafe, p.safe)] + list(neutral) + list(keep):
        check_prompt_length(text)
    unsafe = {p.unsafe for p in pairs}
    for text in keep:
        if text in unsafe:
            raise RefusalError(
                f"the keep prompt '{text[:60]}' is also an unsafe prompt of a pair: keep prompts show "
                "look-alikes without the concept (e.g. 'a cartoon mouse'); remove it from one of the lists"
            )


def parse_sigmas(text: str) -> list[float]:
    """Noise levels as users write them (defaults.SIGMAS_TEXT): numbers in (0, 1] separated by commas."""
    try:
        sigmas = [float(s) for s in text.replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise RefusalError(
            f"noise levels '{text}' must be numbers separated by commas, e.g. '{defaults.SIGMAS_TEXT}'"
        ) from None
    if not sigmas or any(not (0.0 < s <= 1.0) for s in sigmas):
        raise RefusalError(f"noise levels '{text}' must be between 0 (exclusive) and 1, e.g. '{defaults.SIGMAS_TEXT}'")
    return sigmas


def pairs_digest(prompts: PromptPairs) -> str:
    """sha256 of every prompt's text, in order: which prompts an edit was made from."""
    h = hashlib.sha256()
    for u, s in prompts.pairs:
        h.update(f"{u.text}\x1f{s.text}\x1e".encode())
    for n in prompts.neutral:
        h.update(f"{n.text}\x1d".encode())
    for n in prompts.keep:  # after the rest, so that statistics without keep prompts keep their digest
        h.update(f"{n.text}\x1c".encode())
    for n in prompts.ordinary:  # likewise for statistics without the ordinary text
        h.update(f"{n.text}\x1b".encode())
    return h.hexdigest()
