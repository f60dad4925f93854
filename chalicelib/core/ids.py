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
