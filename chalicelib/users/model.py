"""What a user profile is and which input is acceptable: pure functions, no AWS.

Validation collects every problem at once, so a client fixes its request in one round trip.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from chalicelib.core.errors import ValidationFailed
from chalicelib.core.ids import is_uuid

# A pragmatic address check (RFC 5322 is far wider than what mail systems accept): one "@",
# a dot-atom local part, a domain of labels with a TLD of two or more letters.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_PREFERENCE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 100
MAX_BIO_LENGTH = 1000
MAX_PREFERENCES = 50

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
EDITABLE_FIELDS = ("email", "name", "phone", "bio", "preferences")
#: Optional fields a PUT may clear with null.
CLEARABLE_FIELDS = ("phone", "bio")
PUBLIC_FIELDS = (
    "user_id",
    "email",
    "name",
    "phone",
    "bio",
    "preferences",
    "created_at",
    "updated_at",
    "onboarded_at",
)


def email_key(email: str) -> str:
    """The form under which an address is unique: case does not make a new address."""
    return email.casefold()


def is_email(value: str) -> bool:
    """An address registration and email changes accept."""
    return _check_email(value)[1] is None


def is_user_id(value: str) -> bool:
    """User ids are the Cognito `sub`s, UUIDs."""
    return is_uuid(value)


def validate_signup(body: Mapping[str, Any]) -> dict[str, Any]:
    """A registration's profile fields checked and normalised, or ValidationFailed listing
    every problem. The password is not taken here: it comes with the code, from whoever
    reads the address's mail (`registration`)."""
    problems = [
        {"field": "password", "issue": "is set with the code, at POST /register/confirm"}
        if name == "password"
        else {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in EDITABLE_FIELDS
    ]
    problems += [
        {"field": name, "issue": "is required"} for name in ("email", "name") if name not in body
    ]
    clean, field_problems = _check_fields({k: v for k, v in body.items() if k in EDITABLE_FIELDS})
    problems += field_problems
    if problems:
        raise ValidationFailed("The registration is not valid.", problems)
    clean.setdefault("preferences", {})
    return clean


def password_problem(password: Any) -> str | None:
    """The pool's password policy, checked before Cognito so that the client hears every
    problem at once: 8+ characters with upper and lower case, a digit and a symbol."""
    if not isinstance(password, str):
        return "must be a string"
    checks = [
        (MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH,
         f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"),
        (any(c.isupper() for c in password), "an upper-case letter"),
        (any(c.islower() for c in password), "a lower-case letter"),
        (any(c.isdigit() for c in password), "a digit"),
        (any(not c.isalnum() and not c.isspace() for c in password), "a symbol"),
    ]  # fmt: skip
    missing = [what for ok, what in checks if not ok]
    return "must have " + ", ".join(missing) if missing else None


def validate_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """A partial update checked and normalised; null clears phone or bio."""
    if not body:
        raise ValidationFailed(
            "Send at least one of: " + ", ".join(EDITABLE_FIELDS) + ".",
            [{"field": "", "issue": "no fields to update"}],
        )
    problems = _unknown_fields(body)
    present = {k: v for k, v in body.items() if k in EDITABLE_FIELDS}
    clean, field_problems = _check_fields(
        {k: v for k, v in present.items() if not (v is None and k in CLEARABLE_FIELDS)}
    )
    problems += field_problems
    if problems:
        raise ValidationFailed("The changes are not valid.", problems)
    clean.update({k: None for k, v in present.items() if v is None and k in CLEARABLE_FIELDS})
    return clean


def public_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """The user as the API shows it: stored bookkeeping attributes left out."""
    return {name: item[name] for name in PUBLIC_FIELDS if item.get(name) is not None}


def _unknown_fields(
    body: Mapping[str, Any], allowed: tuple[str, ...] = EDITABLE_FIELDS
) -> list[dict[str, str]]:
    return [
        {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in allowed
    ]


def _check_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    clean: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    for name, value in fields.items():
        checked, issue = _CHECKS[name](value)
        if issue:
            problems.append({"field": name, "issue": issue})
        else:
            clean[name] = checked
    return clean, problems


def _check_email(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    email = value.strip()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        return None, "must be a valid email address"
    return email, None


def _check_name(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    name = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        return None, f"must be 1 to {MAX_NAME_LENGTH} characters"
    if _has_control_characters(name):
        return None, "must not contain control characters"
    return name, None


def _check_phone(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str) or not _E164.fullmatch(value):
        return None, "must be an E.164 number such as +14155550123"
    return value, None


def _check_bio(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    bio = unicodedata.normalize("NFC", value)
    if len(bio) > MAX_BIO_LENGTH:
        return None, f"must be at most {MAX_BIO_LENGTH} characters"
    if _has_control_characters(bio.replace("\n", "").replace("\t", "")):
        return None, "must not contain control characters"
    return bio, None


def _check_preferences(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, dict):
        return None, "must be an object of booleans"
    if len(value) > MAX_PREFERENCES:
        return None, f"must have at most {MAX_PREFERENCES} entries"
    for key, flag in value.items():
        if not _PREFERENCE_KEY.fullmatch(key):
            return None, f"key {key[:70]!r} must be a letter then letters, digits or _ (max 64)"
        if not isinstance(flag, bool):
            return None, f"value of {key!r} must be true or false"
    return dict(value), None


def _has_control_characters(text: str) -> bool:
    """Control characters, and lone surrogates (JSON's "\\ud800"), which no AWS service
    can store: refused here as the client's mistake, not met later as a server error."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


_CHECKS = {
    "email": _check_email,
    "name": _check_name,
    "phone": _check_phone,
    "bio": _check_bio,
    "preferences": _check_preferences,
}
