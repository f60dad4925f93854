"""Opaque list cursors: the sort key of the last item on a page, base64url-encoded.

A cursor decodes to one exact shape; anything else (edited, truncated, made up) is a 400,
never a DynamoDB error. Forging a well-formed cursor only moves the page start, which any
client may do anyway.
"""

from __future__ import annotations

import base64
import binascii
import re

from chalicelib.core.clock import TIMESTAMP_PATTERN
from chalicelib.core.errors import BadRequest
from chalicelib.core.ids import UUID_PATTERN

_SORT_KEY = re.compile(rf"^{TIMESTAMP_PATTERN}#{UUID_PATTERN}$")
MAX_CURSOR_LENGTH = 200


BAD_CURSOR = "The cursor is not valid; use next_cursor from a previous page."


def encode_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor stands for, or BadRequest."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadRequest(BAD_CURSOR)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sort_key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        sort_key = ""
    if not _SORT_KEY.fullmatch(sort_key):
        raise BadRequest(BAD_CURSOR)
    return sort_key


def parse_limit(raw: str | None, default: int = 20, maximum: int = 100) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be a whole number from 1 to {maximum}.")
    return int(raw)
