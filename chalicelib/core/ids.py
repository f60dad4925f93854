"""Identifiers more than one domain uses: the app's ids are lower-case UUIDs (user ids are
Cognito `sub`s, image ids are made with `uuid4`), checked as text before any lookup."""

from __future__ import annotations

import re

#: A lower-case UUID, for use inside larger patterns (keys, cursors).
UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(UUID_PATTERN)


def is_uuid(value: str) -> bool:
    """`value` is a lower-case UUID, and nothing else."""
    return bool(_UUID.fullmatch(value))


#: A pseudonym: 32 lower-case hex digits (128 random bits), for use inside larger patterns.
PSEUDONYM_PATTERN = r"[0-9a-f]{32}"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)


def is_pseudonym(value: object) -> bool:
    """`value` is a pseudonym (a str of 32 lower-case hex digits), and nothing else."""
    return isinstance(value, str) and bool(_PSEUDONYM.fullmatch(value))


def new_pseudonym() -> str:
    """A random pseudonym (`PSEUDONYM_PATTERN`): derived from nothing, so nobody holding an
    id can find what stands for it."""
    import secrets  # not at module top: cold start

    return secrets.token_hex(16)


def digest(value: str) -> str:
    """The SHA-256 digest (64 lower-case hex digits) of `value`: how logs and tables name a
    user without the id. Stored keys depend on it: never change it."""
    import hashlib  # not at module top: cold start

    return hashlib.sha256(value.encode()).hexdigest()
