"""Words and typos: how text becomes index words, and which words are one typo apart. Pure.

- A word is a run of letters or digits after case folding and Unicode NFKD with the accents
  removed, so "Zoë", "ZOE" and "zoe" are one word, and "alice.smith@example.com" is alice,
  smith, example and com. Words are cut to MAX_WORD_LENGTH characters, the same way in the
  index and in queries (two words equal on their first 32 characters are one word).
- Words of one character are not indexed (initials, the "a" of a sentence: they would match
  nearly everyone). In a query they are ignored, so "J. Smith" searches for "smith"; a query
  with nothing else is refused.
- A typo is one edit of the optimal string alignment (restricted Damerau-Levenshtein)
  distance: a character inserted, deleted, replaced, or two neighbours swapped. A query word
  tolerates one typo from FUZZY_MIN_LENGTH characters on (Elasticsearch's AUTO fuzziness
  allows none below 3 either: "al" is one edit away from hundreds of words).
- Typos are found without comparing against every word (SymSpell): the index lists each word
  under itself and under every string made by deleting one of its characters; a query looks
  up itself and its own one-deletion strings. Two words one edit apart always share one of
  these strings (`index_variants` / `query_variants`), and the distance is then checked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MIN_WORD_LENGTH = 2
MAX_WORD_LENGTH = 32
FUZZY_MIN_LENGTH = 3

EXACT, PREFIX, FUZZY = 0, 1, 2

_WORD = re.compile(r"[^\W_]+")


def normalize(text: str) -> str:
    """Case folded, compatibility-decomposed, accents dropped: the form words are compared in."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """The indexable words of `text`, in order, with repeats."""
    return [
        word[:MAX_WORD_LENGTH]
        for word in _WORD.findall(normalize(text))
        if len(word) >= MIN_WORD_LENGTH
    ]


def distinct_words(texts: Iterable[str | None], limit: int) -> list[str]:
    """The distinct words of several texts, first occurrence first, at most `limit`."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in words(text or ""):
            seen.setdefault(word)
            if len(seen) == limit:
                return list(seen)
    return list(seen)


def deletes(word: str) -> set[str]:
    """Every string made by deleting one character of `word`."""
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def index_variants(word: str) -> set[str]:
    """The neighbourhood keys under which the index lists `word`.

    Deletions only from FUZZY_MIN_LENGTH characters on, so that no key is a single character
    (such a key would list most of the vocabulary). Nothing is lost: a query word is at least
    FUZZY_MIN_LENGTH long, so a 2-character word can only be one edit from it by an
    insertion in the query, found through the query's deletions and the word itself."""
    if len(word) < FUZZY_MIN_LENGTH:
        return {word}
    return {word} | deletes(word)


def query_variants(word: str) -> set[str]:
    """The neighbourhood keys a query word looks up to find its one-typo words."""
    return {word} | deletes(word)


def osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of
    adjacent characters, each substring edited once."""
    if a == b:
        return 0
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def tier(query_word: str, word: str) -> int | None:
    """How `word` matches `query_word`: EXACT, PREFIX (query word starts it), FUZZY (one
    typo, for query words long enough), or None."""
    if word == query_word:
        return EXACT
    if word.startswith(query_word):
        return PREFIX
    if (
        len(query_word) >= FUZZY_MIN_LENGTH
        and abs(len(word) - len(query_word)) <= 1
        and osa_distance(query_word, word) == 1
    ):
        return FUZZY
    return None
