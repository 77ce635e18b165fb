import json

import pytest
import torch

from refusal_core.align import aligned_text_diffs, token_pairs
from refusal_core.families import get_site
from refusal_core.presets import default_texts
from refusal_core.prompts import parse_pair_lines, parse_prompt_lines, read_pairs_file, validate_pairs
from refusal_core.sites import check_layer_spec, parse_auto, parse_layers
from refusal_core.types import RefusalError


def test_default_pairs_parse_and_validate():
    pairs_text, neutral_text = default_texts()
    pairs = parse_pair_lines(pairs_text)
    assert len(pairs) == 5 and all(p.unsafe != p.safe for p in pairs)
    validate_pairs(pairs, parse_prompt_lines(neutral_text))


@pytest.mark.parametrize(
    "text,message",
    [
        ("a nude woman", "has no '|'"),
        ("| a woman", "no unsafe prompt"),
        ("a nude woman |   ", "no safe prompt"),
        ("a woman | a woman", "same prompt on both sides"),
        ("a | b | c", "more than one '|'"),
    ],
)
def test_bad_pair_lines_say_what_to_change(text, message):
    with pytest.raises(RefusalError, match=message):
        parse_pair_lines(text)


def test_too_few_and_duplicate_pairs_are_refused():
    neutral = ["a cat", "a dog"]
    with pytest.raises(RefusalError, match="at least 2"):
        validate_pairs(parse_pair_lines("a nude man | a man"), neutral)
    with pytest.raises(RefusalError, match="twice"):
        validate_pairs(parse_pair_lines("a nude man | a man\na nude man | a man"), neutral)
    with pytest.raises(RefusalError, match="neutral"):
        validate_pairs(parse_pair_lines("a nude man | a man\na nude cat | a cat"), ["x"])


def test_pairs_files_in_three_formats(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\na nude man | a man\n\nnaked people | people\n")
    (tmp_path / "p.csv").write_text('unsafe,safe\na nude man,a man\n"naked, tall people","tall people"\n')
    (tmp_path / "p.json").write_text(
        json.dumps(
            {"pairs": [["a nude man", "a man"], {"unsafe": "x nude", "safe": "x"}], "neutral": ["a cat", "a dog"]}
        )
    )
    assert [p.safe for p in read_pairs_file(tmp_path / "p.txt")[0]] == ["a man", "people"]
    assert [p.unsafe for p in read_pairs_file(tmp_path / "p.csv")[0]] == ["a nude man", "naked, tall people"]
    pairs, neutral = read_pairs_file(tmp_path / "p.json")
    assert len(pairs) == 2 and neutral == ["a cat", "a dog"]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.txt", b"\xff\xfe\x00nude | x", "not UTF-8"),
        ("bad.json", b'{"pairs": [["a nude man", "a m', "truncated"),
        ("bad.csv", b"a,b,c\n", "3 columns"),
        ("bad.json", b'{"pairs": [["only one"]]}', "item 1"),
        ("bad.yaml", b"x", "must end in"),
    ],
)
def test_broken_pairs_files_give_clear_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(RefusalError, match=message):
        read_pairs_file(tmp_path / name)


def test_layer_specs():
    blocks = list(range(30))
    assert parse_layers("last2", blocks) == [28, 29]
    assert parse_layers("all", [0, 1, 2]) == [0, 1, 2]
    assert parse_layers("first2", blocks) == [0, 1]
    assert parse_layers("12, 13", blocks) == [12, 13]
    assert parse_layers("10-12,3", blocks) == [3, 10, 11, 12]
    assert parse_layers("last99", [0, 1, 2, 3]) == [0, 1, 2, 3]
    assert parse_layers("last2", [0, 1, 2, 4]) == [2, 4]  # Mochi's last block has no text MLP
    for bad in ("", "middle", "30", "5-3", "last0"):
        with pytest.raises(RefusalError):
            parse_layers(bad, blocks)
    assert parse_auto("auto") == 2 and parse_auto("AUTO4") == 4 and parse_auto("all") is None
    # what validation can say before a model is known: the syntax, not whether the blocks exist
    for good in ("auto", "auto3", "all", "last2", "first3", "12,13", "10-13", "30"):
        check_layer_spec(good)
    for bad in ("", "middle", "5-3", "last0", "auto0"):
        with pytest.raises(RefusalError):
            check_layer_spec(bad)


def test_sites_and_their_blocks():
    names = [
        "blocks.0.ffn.0",
        "blocks.11.cross_attn.k",
        "blocks.3.cross_attn.k",
        "head.head",
        "blocks.2.cross_attn.k_img",
    ]
    site = get_site("wan", "text_kv")
    assert site.blocks(names) == [3, 11]
    assert get_site("wan", "image_kv").blocks(names) == [2]
    assert site.edit_keys(3) == ("blocks.3.cross_attn.k", "blocks.3.cross_attn.v")
    assert get_site("wan", "auto").name == "text_kv"
    assert get_site("hunyuan_video", "auto").name == "joint_in"
    with pytest.raises(RefusalError, match="HunyuanVideo"):
        get_site("flux", "text_kv")
    with pytest.raises(RefusalError, match="choose one of"):
        get_site("wan", "attn_out")


def test_token_alignment_pairs_concept_tokens_with_the_following_safe_token():
    u = [101, 1037, 15287, 2450, 102]  # [CLS] a nude woman [SEP]
    s = [101, 1037, 2450, 102]  # [CLS] a woman [SEP]
    assert token_pairs(u, s) == [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3)]
    # replaced words pair position by position
    assert token_pairs([1, 7, 8, 2], [1, 9, 2]) == [(0, 0), (1, 1), (2, 1), (3, 2)]
    a_u, a_s = torch.randn(5, 4), torch.randn(4, 4)
    D = aligned_text_diffs(a_u, a_s, u, s)
    assert D.shape == (5, 4) and torch.equal(D[2], a_u[2] - a_s[2])
    # without ids: positional, up to the shorter prompt
    assert aligned_text_diffs(a_u, a_s, None, None).shape == (4, 4)
