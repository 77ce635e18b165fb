"""Fuzzing the parsers and file loaders: any text or bytes give a valid result or the pack's own
RefusalError, never another exception (2,000 examples per target)."""

import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refusal_core.edit import load_refusal_file
from refusal_core.factorize import factorize
from refusal_core.file_format import FORMAT, LEGACY_FORMAT, save_refusal_edit
from refusal_core.prompts import parse_pair_lines, parse_pairs_text, read_pairs_file, validate_pairs
from refusal_core.types import LayerStats, PromptPair, RefusalError, RefusalStats

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TMP = Path(tempfile.mkdtemp(prefix="refusal-fuzz-"))

pair_lines = st.lists(
    st.one_of(
        st.text(max_size=40), st.tuples(st.text(max_size=20), st.text(max_size=20)).map(lambda t: f"{t[0]}|{t[1]}")
    ),
    max_size=8,
).map("\n".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["pairs", "neutral", "unsafe", "safe", "x"]), children, max_size=4)
    ),
    max_leaves=20,
)


def accepts_or_refuses(fn, *args):
    try:
        out = fn(*args)
    except RefusalError:
        return None
    return out


def check_pairs(pairs):
    assert all(isinstance(p, PromptPair) and p.unsafe and p.safe and p.unsafe != p.safe for p in pairs)


@FUZZ
@given(pair_lines)
def test_pair_lines(text):
    pairs = accepts_or_refuses(parse_pair_lines, text)
    if pairs is not None:
        check_pairs(pairs)
        accepts_or_refuses(validate_pairs, pairs, ["a cat", "a dog"])


@FUZZ
@given(
    st.one_of(st.text(max_size=200), json_values.map(json.dumps), pair_lines),
    st.sampled_from([".txt", ".csv", ".json"]),
)
def test_pairs_text_in_every_format(text, suffix):
    out = accepts_or_refuses(parse_pairs_text, text, suffix)
    if out is not None:
        pairs, neutral = out
        check_pairs(pairs)
        assert all(isinstance(n, str) for n in neutral)


def test_deeply_nested_json_is_refused():
    for text in ("[" * 100_000, '{"pairs": ' * 50_000):
        assert accepts_or_refuses(parse_pairs_text, text, ".json") is None


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".txt", ".csv", ".json", ".exe"]))
def test_pairs_files_of_arbitrary_bytes(data, suffix):
    path = TMP / f"pairs{suffix}"
    path.write_bytes(data)
    out = accepts_or_refuses(read_pairs_file, path)
    if out is not None:
        check_pairs(out[0])


def _valid_file() -> bytes:
    """An edit saved with its statistics: every part of the format."""
    g = torch.Generator().manual_seed(0)
    D = torch.randn(4, 8, generator=g) + 2
    stats = RefusalStats(
        (
            LayerStats(
                "blocks.0.cross_attn.k", ("blocks.0.cross_attn.k",), D, torch.randn(3, 8, generator=g), D.mean(0)
            ),
        ),
        {"family": "wan"},
    )
    path = save_refusal_edit(factorize(stats), TMP / "valid.safetensors", include_statistics=True)
    return path.read_bytes()


VALID = _valid_file()


@FUZZ
@given(st.binary(max_size=400))
def test_vector_files_of_arbitrary_bytes(data):
    path = TMP / "arbitrary.safetensors"
    path.write_bytes(data)
    accepts_or_refuses(load_refusal_file, path)


@FUZZ
@given(st.integers(0, len(VALID)), st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4))
def test_truncated_and_bit_flipped_vector_files(cut, flips):
    data = bytearray(VALID[:cut] if cut < len(VALID) else VALID)
    for i, b in flips:
        if i < len(data):
            data[i] = b
    path = TMP / "mutated.safetensors"
    path.write_bytes(bytes(data))
    loaded = accepts_or_refuses(load_refusal_file, path)
    if loaded is not None:
        edit, stats = loaded
        for layer in stats.layers if stats is not None else ():
            assert torch.isfinite(layer.r).all() and layer.diffs.shape[1] == layer.r.shape[0]
        for layer in edit.layers if edit is not None else ():
            assert torch.isfinite(layer.basis).all() and len(layer.strengths) == layer.basis.shape[0]


@FUZZ
@given(
    st.sampled_from([FORMAT, LEGACY_FORMAT]),
    json_values,
    st.one_of(st.none(), json_values),
    st.dictionaries(
        st.sampled_from(
            [
                "0.r",
                "0.diffs",
                "0.neutral",
                "0.direction",
                "0.basis",
                "0.spectrum",
                "1.r",
                "stats.0.r",
                "stats.0.diffs",
                "stats.0.neutral",
            ]
        ),
        st.lists(st.integers(0, 5), min_size=0, max_size=3),
        max_size=6,
    ),
)
def test_well_formed_safetensors_with_foreign_contents(fmt, layers_meta, stats_meta, shapes):
    meta = {"format": fmt, "layers": json.dumps(layers_meta)}
    if stats_meta is not None:
        meta["stats_layers"] = json.dumps(stats_meta)
    header = {"__metadata__": meta}
    blobs, offset = [], 0
    for name, shape in shapes.items():
        n = 4 * int(torch.tensor(shape).prod()) if shape else 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        blobs.append(os.urandom(n))
        offset += n
    head = json.dumps(header).encode()
    path = TMP / "foreign.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    accepts_or_refuses(load_refusal_file, path)
