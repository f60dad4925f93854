"""What a user profile is and which input is acceptable: pure functions, no AWS.

Validation collects every problem at once, so a client fixes its request in one round trip.
The request bodies' rules are declared as Pydantic models in `schemas` (which the OpenAPI
document is generated from); the `validate_*` functions import them on first use, so that
`import app` never loads Pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.core.errors import ValidationFailed
from chalicelib.core.ids import is_uuid

# A pragmatic address check (RFC 5322 is far wider than what mail systems accept): one "@",
# a dot-atom local part, a domain of labels with a TLD of two or more letters. The patterns
# are also the declared models' (`schemas`), matched whole.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
PREFERENCE_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
_EMAIL = re.compile(EMAIL_PATTERN)

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
    """A registration's profile fields checked and normalised (`schemas.Signup`), or
    ValidationFailed listing every problem. The password is not taken here: it comes with
    the code, from whoever reads the address's mail (`registration`)."""
    from chalicelib.core.validation import validate
    from chalicelib.users.schemas import PASSWORD_ISSUE, Signup

    refused = {"password": PASSWORD_ISSUE}
    signup = validate(Signup, body, "The registration is not valid.", refused)
    return {**signup.model_dump(exclude_unset=True), "preferences": signup.preferences}


def validate_confirmation(body: Mapping[str, Any]) -> tuple[str, str, str]:
    """A `POST /register/confirm` body (`schemas.SignupConfirmation`): the email, the code
    (spaces removed) and the password, or ValidationFailed listing every problem."""
    from chalicelib.core.validation import validate
    from chalicelib.users.schemas import SignupConfirmation

    confirmation = validate(SignupConfirmation, body, "The confirmation is not valid.")
    return confirmation.email, confirmation.code, confirmation.password


def validate_email_confirmation(body: Mapping[str, Any]) -> str:
    """The code of a `POST /users/{id}/email/confirm` body (`schemas.EmailChangeConfirmation`),
    spaces removed, or ValidationFailed."""
    from chalicelib.core.validation import validate
    from chalicelib.users.schemas import EmailChangeConfirmation

    try:
        return validate(EmailChangeConfirmation, body, "The confirmation is not valid.").code
    except ValidationFailed as failed:
        if all(problem["field"] == "code" for problem in failed.details):
            raise ValidationFailed("The code is not valid.", failed.details) from None
        raise


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
    """A partial update checked and normalised (`schemas.ProfileChanges`); null clears
    phone or bio."""
    from chalicelib.core.validation import validate
    from chalicelib.users.schemas import ProfileChanges

    message = (
        "The changes are not valid."
        if body
        else "Send at least one of: " + ", ".join(EDITABLE_FIELDS) + "."
    )
    return validate(ProfileChanges, body, message).model_dump(exclude_unset=True)


def public_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """The user as the API shows it: stored bookkeeping attributes left out."""
    return {name: item[name] for name in PUBLIC_FIELDS if item.get(name) is not None}


def _check_email(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    email = value.strip()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        return None, "must be a valid email address"
    return email, None
