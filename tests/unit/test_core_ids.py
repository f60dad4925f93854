"""The id checks every domain shares (`core.ids`) and the domains' own names for them."""

from __future__ import annotations

import re
import uuid

from chalicelib.core.ids import UUID_PATTERN, is_uuid
from chalicelib.images.model import is_image_id
from chalicelib.users.model import is_user_id


def test_lower_case_uuids_only() -> None:
    made = str(uuid.uuid4())
    assert is_uuid(made) and is_user_id(made) and is_image_id(made)
    for other in (made.upper(), made + "\n", made[:-1], made.replace("-", ""), "", f"x{made}"):
        assert not is_uuid(other), other
        assert not is_user_id(other) and not is_image_id(other)


def test_the_pattern_fits_inside_larger_patterns() -> None:
    made = str(uuid.uuid4())
    assert re.fullmatch(rf"USER#({UUID_PATTERN})", f"USER#{made}")[1] == made  # type: ignore[index]
