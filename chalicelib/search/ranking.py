"""Ranking and paging of search hits, and the opaque cursor between pages. Pure.

A hit is a user that matches every query word. Its rank: the worst tier among its query words
(so a user matching every word exactly comes before one that needed a prefix for some word,
and that before one that needed a typo), then the sum of the tiers, then newest first
(`created_at`, then `user_id`, both descending: the order of the postings' sort keys).
That order is total, so a page can resume strictly after the rank of the last hit it
returned: the next page recomputes the hits and skips up to there. No result is repeated or
skipped as long as the index does not change between the two requests; if it does, a user
that moved across the cursor may be missed or seen twice, as in any keyset pagination.

A cursor carries that rank key and a checksum over the key and the query's words: edited,
truncated or made-up cursors, and cursors of another query, are a 400. It is an integrity
check, not a secret: forging a valid cursor only moves the start of a page. Its digits are
ASCII only (`re.ASCII`, explicit classes): a Unicode digit class would also take other
scripts' digits, which `int` reads as numbers, so one rank key would have many spellings.

`hashlib` is imported on first use: importing the search package stays cheap (cold start).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Sequence
from functools import cmp_to_key
from typing import NamedTuple

from chalicelib.core.clock import TIMESTAMP_PATTERN
from chalicelib.core.errors import BadRequest
from chalicelib.core.ids import UUID_PATTERN

MAX_CURSOR_LENGTH = 200
_CURSOR = re.compile(
    r"(?P<max>[0-2])\.(?P<sum>[0-9]{1,2})"
    rf"\.(?P<created>{TIMESTAMP_PATTERN})"
    rf"\.(?P<user>{UUID_PATTERN})"
    r"\.(?P<check>[0-9a-f]{12})",
    re.ASCII,
)
BAD_CURSOR = "The cursor is not valid for this query; use next_cursor from the previous page."


class Hit(NamedTuple):
    max_tier: int
    tier_sum: int
    created_at: str
    user_id: str


def compare(a: Hit, b: Hit) -> int:
    """Negative when `a` ranks before `b`, positive after, 0 for the same rank."""
    if (a.max_tier, a.tier_sum) != (b.max_tier, b.tier_sum):
        return -1 if (a.max_tier, a.tier_sum) < (b.max_tier, b.tier_sum) else 1
    newer_a, newer_b = (a.created_at, a.user_id), (b.created_at, b.user_id)
    return (newer_a < newer_b) - (newer_a > newer_b)


_KEY = cmp_to_key(compare)


def rank(hits: list[Hit]) -> list[Hit]:
    return sorted(hits, key=_KEY)


def start_after(ranked: Sequence[Hit], after: Hit | None) -> int:
    """The index of the first hit of `ranked` that ranks strictly after `after`."""
    if after is None:
        return 0
    return bisect.bisect_right(ranked, _KEY(after), key=_KEY)


def hit_of(tiers: Sequence[int], created_at: str, user_id: str) -> Hit:
    return Hit(max(tiers), sum(tiers), created_at, user_id)


def encode_cursor(hit: Hit, query_words: Sequence[str]) -> str:
    payload = _payload(hit)
    text = f"{payload}.{_check(payload, query_words)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, query_words: Sequence[str]) -> Hit:
    """The rank key a cursor of this query stands for, or BadRequest."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadRequest(BAD_CURSOR)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest(BAD_CURSOR) from None
    found = _CURSOR.fullmatch(text)
    if not found:
        raise BadRequest(BAD_CURSOR)
    hit = Hit(int(found["max"]), int(found["sum"]), found["created"], found["user"])
    if found["check"] != _check(_payload(hit), query_words):
        raise BadRequest(BAD_CURSOR)
    return hit


def _payload(hit: Hit) -> str:
    return f"{hit.max_tier}.{hit.tier_sum}.{hit.created_at}.{hit.user_id}"


def _check(payload: str, query_words: Sequence[str]) -> str:
    import hashlib

    text = payload + "|" + " ".join(sorted(query_words))  # word order does not change hits
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
