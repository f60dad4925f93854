"""The users API's request bodies (and the profile it answers with) as declared models.

The rules live here once: `model.validate_*` check bodies with these classes, and the OpenAPI
document is generated from them (`Model.model_json_schema()`), so both say the same. Issues
are the sentences clients have always read (`core.validation.Issue`).

Imported only by the functions that validate (Pydantic is not loaded by `import app`).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import core_schema

from chalicelib.core.ids import UUID_PATTERN
from chalicelib.core.validation import Issue, JsonSchema, NoControlCharacters, absent, refuse
from chalicelib.users import model
from chalicelib.users.verification import CODE_DIGITS

#: Request bodies: unknown fields refused, no type coercion (`"5"` is no number, `true` no
#: 1). Built on first use, not at import: a function builds only the models it validates.
BODY = ConfigDict(extra="forbid", strict=True, defer_build=True)
PASSWORD_ISSUE = "is set with the code, at POST /register/confirm"


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _strip_nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value.strip()) if isinstance(value, str) else value


def _nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _without_spaces(value: Any) -> Any:
    return value.replace(" ", "") if isinstance(value, str) else value


_EMAIL_TEXT = Annotated[
    str,
    Field(max_length=model.MAX_EMAIL_LENGTH, pattern=model.EMAIL_PATTERN),
    BeforeValidator(_strip),
]
Email = Annotated[
    _EMAIL_TEXT, Issue("must be a valid email address", {"string_type": "must be a string"})
]
#: At confirmation the address is only compared, so anything else is "not valid" alike.
ConfirmedEmail = Annotated[
    _EMAIL_TEXT, Issue("must be a valid email address", missing="must be a valid email address")
]
#: A lone surrogate (JSON's "\ud800") is no text Pydantic's constraints can check.
_TEXT_ISSUES = {
    "string_type": "must be a string",
    "string_unicode": "must not contain control characters",
}
Name = Annotated[
    str,
    Field(min_length=1, max_length=model.MAX_NAME_LENGTH),
    BeforeValidator(_strip_nfc),
    NoControlCharacters(),
    Issue(f"must be 1 to {model.MAX_NAME_LENGTH} characters", _TEXT_ISSUES),
]
Phone = Annotated[
    str, Field(pattern=model.E164_PATTERN), Issue("must be an E.164 number such as +14155550123")
]
Bio = Annotated[
    str,
    Field(max_length=model.MAX_BIO_LENGTH),
    BeforeValidator(_nfc),
    NoControlCharacters(allowed="\n\t"),
    Issue(f"must be at most {model.MAX_BIO_LENGTH} characters", _TEXT_ISSUES),
]
PreferenceKey = Annotated[str, Field(pattern=model.PREFERENCE_KEY_PATTERN)]


def _preferences_issue(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    """The first problem of the preferences, in the order they were always checked: the
    type, the count, then each entry's key and value."""
    try:
        return handler(value)
    except ValidationError as exc:
        if not isinstance(value, dict):
            issue = "must be an object of booleans"
        elif len(value) > model.MAX_PREFERENCES:
            issue = f"must have at most {model.MAX_PREFERENCES} entries"
        else:
            loc = exc.errors()[0]["loc"]
            key = str(loc[0])
            issue = (
                f"key {key[:70]!r} must be a letter then letters, digits or _ (max 64)"
                if loc[-1] == "[key]"
                else f"value of {key!r} must be true or false"
            )
        raise refuse("preferences_invalid", issue) from None


Preferences = Annotated[
    dict[PreferenceKey, StrictBool],
    Field(max_length=model.MAX_PREFERENCES),
    JsonSchema(additionalProperties=False),
    WrapValidator(_preferences_issue),
]
Code = Annotated[
    str,
    # Spaces anywhere are allowed ("123 456"): the pattern is the one the client may send.
    Field(pattern=rf"^( *[0-9]){{{CODE_DIGITS}}} *$"),
    BeforeValidator(_without_spaces),
    Issue(f"must be {CODE_DIGITS} digits", missing=f"must be {CODE_DIGITS} digits"),
]


def _password_policy(value: str) -> str:
    issue = model.password_problem(value)
    if issue:
        raise refuse("password_policy", issue)
    return value


Password = Annotated[
    str,
    AfterValidator(_password_policy),
    JsonSchema(minLength=model.MIN_PASSWORD_LENGTH, maxLength=model.MAX_PASSWORD_LENGTH),
    Issue("must be a string", missing="is required"),  # reported in its place, after the code
]

_EMAIL_DOC = "Stripped of surrounding spaces; one account per address whatever its case."
_NAME_DOC = "Stripped and NFC-normalised, then 1 to 100 characters, no control characters."
_PHONE_DOC = "E.164: `+`, the country code and the number, digits only."
_BIO_DOC = "NFC-normalised; at most 1000 characters; newlines and tabs allowed."
_PREFERENCES_DOC = "Up to 50 flags named like identifiers (letter first, max 64)."


class Signup(BaseModel):
    """POST /register: who the account is for. The password is not taken here but with the
    mailed code (`SignupConfirmation`), so whoever reads the mail sets it."""

    model_config = ConfigDict(
        **BODY,
        json_schema_extra={"examples": [{"email": "ada@example.com", "name": "Ada Lovelace"}]},
    )

    email: Email = Field(description=_EMAIL_DOC, examples=["ada@example.com"])
    name: Name = Field(description=_NAME_DOC, examples=["Ada Lovelace"])
    phone: Phone = absent(description=_PHONE_DOC, examples=["+14155550123"])
    bio: Bio = absent(description=_BIO_DOC, examples=["Analyst of engines."])
    preferences: Preferences = Field(
        default_factory=dict, description=_PREFERENCES_DOC, examples=[{"newsletter": True}]
    )


class SignupConfirmation(BaseModel):
    """POST /register/confirm: the mailed code proves the address, and the password the
    account will sign in with (the user pool's policy) comes with it."""

    model_config = ConfigDict(
        **BODY,
        json_schema_extra={
            "examples": [
                {"email": "ada@example.com", "code": "123456", "password": "Corr3ct-Horse!"}
            ]
        },
    )

    email: ConfirmedEmail = Field(description="The address registered.")
    code: Code = Field(description="The 6 digits mailed; spaces ignored.", examples=["123456"])
    password: Password = Field(
        description="8 to 256 characters with an upper-case and a lower-case letter, a digit "
        "and a symbol.",
        examples=["Corr3ct-Horse!"],
    )


class ProfileChanges(BaseModel):
    """PUT /users/{user_id}: the fields to change, at least one. A new email is mailed a code
    and set by `EmailChangeConfirmation`; null clears the phone or the bio."""

    model_config = ConfigDict(
        **BODY,
        json_schema_extra={"minProperties": 1, "examples": [{"bio": None, "name": "Ada King"}]},
    )

    email: Email = absent(description=_EMAIL_DOC, examples=["ada@example.org"])
    name: Name = absent(description=_NAME_DOC, examples=["Ada King"])
    phone: Phone | None = Field(None, description=_PHONE_DOC + " Null clears it.")
    bio: Bio | None = Field(None, description=_BIO_DOC + " Null clears it.")
    preferences: Preferences = absent(
        description=_PREFERENCES_DOC + " Replaces the stored ones.",
        examples=[{"newsletter": False}],
    )

    @model_validator(mode="before")
    @classmethod
    def _something(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise refuse("no_fields", "no fields to update")
        return data


class EmailChangeConfirmation(BaseModel):
    """POST /users/{user_id}/email/confirm: the code mailed to the new address."""

    model_config = ConfigDict(**BODY, json_schema_extra={"examples": [{"code": "123456"}]})

    code: Code = Field(description="The 6 digits mailed; spaces ignored.", examples=["123456"])


class PublicUser(BaseModel):
    """A user as the API shows it (`model.public_view`): absent fields were never set."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    user_id: str = Field(description="The Cognito `sub`, a UUID.", pattern=f"^{UUID_PATTERN}$")
    email: str = Field(examples=["ada@example.com"])
    name: str = Field(examples=["Ada Lovelace"])
    phone: str = absent(pattern=model.E164_PATTERN)
    bio: str = absent()
    preferences: dict[str, bool] = absent()
    created_at: str = Field(examples=["2026-12-07T05:03:42Z"])
    updated_at: str = Field(examples=["2026-12-07T05:03:42Z"])
    onboarded_at: str = absent(description="Set up once the welcome has run.")


class UpdatedUser(PublicUser):
    """PUT /users/{user_id}'s answer: the profile, and the new address waiting for its code."""

    pending_email: str = absent(description="Mailed a code; not yet the email.")
