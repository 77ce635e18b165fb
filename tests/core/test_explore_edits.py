"""scripts/explore_edits.py: its generic vocabulary names no concept, and an edit it cannot read is refused."""

import pytest

from refusal_core.ordinary import ordinary_text
from scripts.explore_edits import GENERIC, Part, generic_vocabulary, parse
from tests.core.test_ordinary_text import assert_names_nothing


def test_the_generic_vocabulary_is_ordinary_text():
    """Kept off an edit, the vocabulary must not hold what an edit erases or must keep (as the shipped ordinary text,
    its first 64 phrases)."""
    assert len(set(GENERIC)) == len(GENERIC) == 300
    assert_names_nothing(list(GENERIC))
    assert ordinary_text() == list(GENERIC[:64])  # the pack ships the first 64


def test_an_edit_spec_reads_as_its_parts_and_a_wrong_option_is_refused():
    assert parse("text_kv,vocab=4,strength=1.3,rank=2,context=3+cross_out,map") == (
        Part("text_kv", vocab=4, strength=1.3, rank=2, context=3),
        Part("cross_out", map=True),
    )
    with pytest.raises(SystemExit, match="unknown option 'alpha=2'"):
        parse("text_kv,alpha=2")
    with pytest.raises(SystemExit, match="rank=M is for the projections"):
        parse("text_kv,map,rank=2")


def test_a_vocabulary_larger_than_its_word_lists_allow_is_refused_not_drawn_forever():

    assert generic_vocabulary(300, 31) == list(GENERIC)
    with pytest.raises(SystemExit, match="holds 1 to 20000 phrases"):
        generic_vocabulary(20001)
