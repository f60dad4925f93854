"""The id checks every domain shares (`core.ids`) and the domains' own names for them."""

from __future__ import annotations

import re
import uuid

from chalicelib.core.ids import UUID_PATTERN, digest, is_pseudonym, is_uuid, new_pseudonym
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


def test_pseudonyms_are_32_lower_case_hex_digits_and_random() -> None:
    made = new_pseudonym()
    assert is_pseudonym(made) and made != new_pseudonym()
    for other in (made.upper(), made + "\n", made[:-1], made + "0", "g" * 32, "", None, 7):
        assert not is_pseudonym(other), other


def test_digest_is_the_full_sha256_hex_stored_keys_rely_on() -> None:
    # Stored keys (pseudonyms table, images markers, quota counters) are made from it.
    assert digest("u") == "0bfe935e70c321c7ca3afc75ce0d0ca2f98b5422e008bb31c00c6d7f1f1c0ad6"
    assert len(digest(str(uuid.uuid4()))) == 64
