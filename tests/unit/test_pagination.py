"""List cursors round-trip, and anything that is not one of ours is a 400."""

from __future__ import annotations

import base64

import pytest

from chalicelib.core.errors import BadRequest
from chalicelib.core.pagination import decode_cursor, encode_cursor, parse_limit

SORT_KEY = "2026-11-26T01:44:47.946451Z#c22f98bf-7979-4482-9c9f-d9b78e59a644"


def test_cursor_round_trips() -> None:
    cursor = encode_cursor(SORT_KEY)
    assert "=" not in cursor
    assert decode_cursor(cursor) == SORT_KEY


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        encode_cursor(SORT_KEY)[:-3],
        encode_cursor(SORT_KEY) + "AAAA",
        base64.urlsafe_b64encode(b'{"pk": {"S": "USER#x"}}').decode(),
        encode_cursor(SORT_KEY.replace("#", "#USER#")),
        encode_cursor("2026-11-26#c22f98bf-7979-4482-9c9f-d9b78e59a644"),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "A" * 500,
    ],
)
def test_tampered_cursor_is_bad_request(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor)


@pytest.mark.parametrize(("raw", "expected"), [(None, 20), ("1", 1), ("100", 100), ("07", 7)])
def test_limit(raw: str | None, expected: int) -> None:
    assert parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-1", "abc", "", "1.5", "1e2", " 5"])
def test_bad_limit(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_limit(raw)
