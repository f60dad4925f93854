"""Ranking order, resuming after a rank key, and the search cursor (tampering is a 400)."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.core.errors import BadRequest
from chalicelib.search.ranking import (
    Hit,
    decode_cursor,
    encode_cursor,
    hit_of,
    rank,
    start_after,
)

QUERY = ["alice", "smith"]


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def at(second: int) -> str:
    return f"2026-11-26T00:00:{second:02d}.000000Z"


def test_rank_puts_worst_tier_first_then_tier_sum_then_newest() -> None:
    exact_old = hit_of([0, 0], at(1), uid(1))
    exact_new = hit_of([0, 0], at(9), uid(2))
    one_prefix = hit_of([0, 1], at(30), uid(3))
    two_prefixes = hit_of([1, 1], at(40), uid(4))
    one_typo = hit_of([0, 2], at(50), uid(5))
    same_time_low = hit_of([0, 0], at(5), uid(6))
    same_time_high = hit_of([0, 0], at(5), uid(7))
    hits = [one_typo, exact_old, two_prefixes, same_time_low, one_prefix, exact_new]
    hits.append(same_time_high)
    random.Random(1).shuffle(hits)
    assert rank(hits) == [
        exact_new,
        same_time_high,  # same created_at: user_id descending, as the postings' sort key
        same_time_low,
        exact_old,
        one_prefix,
        two_prefixes,
        one_typo,
    ]


_hits = st.builds(
    hit_of,
    st.lists(st.integers(0, 2), min_size=1, max_size=3),
    st.integers(0, 59).map(at),
    st.integers(0, 5).map(uid),
)


@given(st.lists(_hits, unique_by=lambda h: h.user_id, max_size=12), st.integers(1, 5))
def test_paging_by_rank_key_has_no_gap_or_repeat(hits: list[Hit], limit: int) -> None:
    ranked = rank(hits)
    seen: list[Hit] = []
    after = None
    while True:
        start = start_after(ranked, after)
        page = ranked[start : start + limit]
        if not page:
            break
        seen += page
        after = page[-1]
    assert seen == ranked


def test_start_after_a_key_no_longer_present() -> None:
    ranked = rank([hit_of([0], at(s), uid(s)) for s in (50, 40, 30)])
    gone = hit_of([0], at(45), uid(45))
    assert start_after(ranked, gone) == 1
    assert start_after(ranked, hit_of([2], at(0), uid(0))) == 3
    assert start_after(ranked, None) == 0


def test_cursor_round_trips_and_ignores_word_order() -> None:
    hit = hit_of([1, 2], at(7), uid(42))
    cursor = encode_cursor(hit, QUERY)
    assert "=" not in cursor
    assert decode_cursor(cursor, QUERY) == hit
    assert decode_cursor(cursor, list(reversed(QUERY))) == hit


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


GOOD = encode_cursor(hit_of([1, 2], at(7), uid(42)), QUERY)
GOOD_TEXT = base64.urlsafe_b64decode(GOOD + "=" * (-len(GOOD) % 4)).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        GOOD[:-3],
        GOOD + "AAAA",
        "A" * 500,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _raw(GOOD_TEXT.replace("2.3.", "0.0.", 1)),  # a better rank, checksum kept
        _raw(GOOD_TEXT.replace(uid(42), uid(43))),
        _raw(GOOD_TEXT[:-1] + ("0" if GOOD_TEXT[-1] != "0" else "1")),
        _raw("2026-11-26T00:00:07.000000Z#" + uid(42)),  # a users-list cursor
    ],
)
def test_tampered_cursor_is_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor, QUERY)


def test_cursor_of_another_query_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        decode_cursor(GOOD, ["alice"])


@pytest.mark.parametrize(
    ("tier_sum", "created_at"),
    [
        ("\u0663", at(7)),  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
        ("3", at(7).replace("7", "\uff17")),  # FULLWIDTH DIGIT SEVEN
        ("3", at(7).replace("2026", "\u0968\u0966\u0968\u096c")),  # DEVANAGARI digits
    ],
)
def test_cursor_with_non_ascii_digits_is_bad_request(tier_sum: str, created_at: str) -> None:
    """Digits are ASCII only: a cursor with other Unicode digits, even with a valid
    checksum (the checksum is not a secret), is refused."""
    from chalicelib.search.ranking import _check

    payload = f"1.{tier_sum}.{created_at}.{uid(42)}"
    normalized = f"1.{int(tier_sum)}.{created_at}.{uid(42)}"
    for checked in {payload, normalized}:
        with pytest.raises(BadRequest):
            decode_cursor(_raw(f"{payload}.{_check(checked, QUERY)}"), QUERY)
