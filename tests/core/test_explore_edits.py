"""scripts/explore_edits.py: its generic vocabulary names no concept, and an edit it cannot read is refused."""

import re

import pytest

from scripts.explore_edits import GENERIC, Part, parse
from testbed.worlds import WORLDS

ARTICLES = {"a", "an", "the", "in", "on", "at", "of", "with", "to", "and", "by", "from"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z'-]+", text.lower()))


def test_the_generic_vocabulary_is_ordinary_text():
    """Kept off an edit, the vocabulary must not hold what an edit erases or must keep: no phrasing of any world's
    concepts, look-alikes, word-senses or characters occurs in it, and no word of an unsafe concept's phrasings."""
    assert len(set(GENERIC)) == len(GENERIC) == 300
    vocabulary = " | ".join(GENERIC).lower()
    used = set().union(*map(words, GENERIC))
    for world in WORLDS.values():
        for mark in world.marks.values():
            for phrasing in mark.phrasings:
                assert phrasing.lower() not in vocabulary, (world.name, phrasing)
                if mark.group == "unsafe":
                    assert not (words(phrasing) - ARTICLES) & used, (world.name, phrasing)


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
    from scripts.explore_edits import generic_vocabulary

    assert generic_vocabulary(300, 31) == list(GENERIC)
    with pytest.raises(SystemExit, match="holds 1 to 20000 phrases"):
        generic_vocabulary(20001)
