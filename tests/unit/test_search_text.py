"""Words, typo distance and the deletion neighbourhood that finds typos without a scan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.search.text import (
    EXACT,
    FUZZY,
    MAX_WORD_LENGTH,
    PREFIX,
    deletes,
    distinct_words,
    index_variants,
    osa_distance,
    query_variants,
    tier,
    words,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice.smith@example.com", ["alice", "smith", "example", "com"]),
        ("Zoë ÅNGSTRÖM", ["zoe", "angstrom"]),
        ("Straße", ["strasse"]),
        ("J. R. R. Tolkien", ["tolkien"]),
        ("snake_case-and  tabs\tnew\nline", ["snake", "case", "and", "tabs", "new", "line"]),
        ("\ufb01ne \uff37\uff49\uff44\uff45 \u00b2\u2075", ["fine", "wide", "25"]),  # NFKD
        ("Δημήτρης Иван 李小龍", ["δημητρησ", "иван", "李小龍"]),  # final sigma folds
        ("x" * 40, ["x" * MAX_WORD_LENGTH]),
        ("", []),
        ("!!! ... @", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_distinct_words_keep_first_occurrence_and_stop_at_the_limit() -> None:
    texts = ["Alice Smith", "alice.smith@example.com", None, "Smith again"]
    assert distinct_words(texts, limit=100) == ["alice", "smith", "example", "com", "again"]
    assert distinct_words(texts, limit=3) == ["alice", "smith", "example"]


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("smith", "smith", 0),
        ("smith", "smyth", 1),  # substitution
        ("smith", "smiths", 1),  # insertion
        ("smith", "smth", 1),  # deletion
        ("smith", "smiht", 1),  # transposition
        ("ca", "abc", 3),  # OSA, not unrestricted Damerau (2)
        ("kitten", "sitting", 3),
        ("", "abc", 3),
    ],
)
def test_osa_distance(a: str, b: str, distance: int) -> None:
    assert osa_distance(a, b) == distance
    assert osa_distance(b, a) == distance


@pytest.mark.parametrize(
    ("query", "word", "expected"),
    [
        ("smith", "smith", EXACT),
        ("smi", "smith", PREFIX),
        ("smith", "smithson", PREFIX),
        ("smiht", "smith", FUZZY),
        ("smth", "smith", FUZZY),
        ("smithh", "smith", FUZZY),
        ("smyth", "smith", FUZZY),
        ("smith", "smythe", None),  # two edits
        ("al", "ab", None),  # 2-character query words never tolerate a typo
        ("ali", "al", FUZZY),  # a 2-character word is one insertion away
        ("smith", "alice", None),
    ],
)
def test_tier(query: str, word: str, expected: int | None) -> None:
    assert tier(query, word) == expected


def test_neighbourhoods() -> None:
    assert deletes("abc") == {"bc", "ac", "ab"}
    assert index_variants("ab") == {"ab"}  # never a 1-character key
    assert index_variants("abc") == {"abc", "bc", "ac", "ab"}
    assert query_variants("anna") == {"anna", "nna", "ana", "ann"}


_letters = st.text(alphabet="abcde", min_size=2, max_size=8)


@st.composite
def one_edit(draw: st.DrawFn) -> tuple[str, str]:
    """A word and the word with one random edit of each kind."""
    word = draw(_letters)
    i = draw(st.integers(0, len(word) - 1))
    kind = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
    ch = draw(st.sampled_from("abcdef"))
    if kind == "insert":
        edited = word[:i] + ch + word[i:]
    elif kind == "delete":
        edited = word[:i] + word[i + 1 :]
    elif kind == "replace":
        edited = word[:i] + ch + word[i + 1 :]
    else:
        j = min(i + 1, len(word) - 1)
        chars = list(word)
        chars[i], chars[j] = chars[j], chars[i]
        edited = "".join(chars)
    return word, edited


@given(one_edit())
def test_one_typo_always_shares_a_neighbourhood_key(pair: tuple[str, str]) -> None:
    """The guarantee the index relies on: a query word (3+ characters) one edit away from an
    indexed word (2+ characters) looks up at least one key the word is listed under."""
    word, query = pair
    if len(query) < 3 or osa_distance(word, query) != 1:
        return
    assert query_variants(query) & index_variants(word)
    assert tier(query, word) in (PREFIX, FUZZY)


@given(_letters, _letters)
def test_distance_is_symmetric_and_bounded(a: str, b: str) -> None:
    d = osa_distance(a, b)
    assert d == osa_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)
