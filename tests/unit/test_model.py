"""Validation of user input: every rule, and every problem reported at once."""

from __future__ import annotations

import pytest

from chalicelib.core.errors import ValidationFailed
from chalicelib.users import model

VALID = {"email": "ada@example.com", "name": "Ada Lovelace"}


def validate_new_user(body: dict) -> dict:
    return model.validate_signup(body)


def problems(exc: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, str]:
    return {d["field"]: d["issue"] for d in exc.value.details}


def test_minimal_user_is_normalised() -> None:
    user = validate_new_user({**VALID, "email": " Ada@Example.com ", "name": "  Ada "})
    assert user == {"email": "Ada@Example.com", "name": "Ada", "preferences": {}}


def test_full_user_is_accepted() -> None:
    body = {
        **VALID,
        "phone": "+14155550123",
        "bio": "Line one\nLine two\tand a tab",
        "preferences": {"newsletter": True, "dark_mode": False},
    }
    assert validate_new_user(body) == body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "no-at-sign"),
        ("email", "a@b"),
        ("email", "a@@example.com"),
        ("email", "a b@example.com"),
        ("email", ".a@example.com"),
        ("email", "a@-example.com"),
        ("email", 42),
        ("email", "x" * 250 + "@example.com"),
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 101),
        ("name", None),
        ("name", "bad\x00name"),
        ("phone", "4155550123"),
        ("phone", "+0155550123"),
        ("phone", "+1 415 555 0123"),
        ("phone", "+1234567890123456"),
        ("phone", 14155550123),
        ("bio", "x" * 1001),
        ("bio", ["list"]),
        ("bio", "bell\x07"),
        ("preferences", []),
        ("preferences", {"newsletter": "yes"}),
        ("preferences", {"newsletter": 1}),
        ("preferences", {"": True}),
        ("preferences", {f"k{i}": True for i in range(51)}),
    ],
)
def test_invalid_field_is_named(field: str, value: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        model.validate_signup({**VALID, field: value})
    assert field in problems(exc)


def test_limits_are_inclusive() -> None:
    body = {**VALID, "name": "x" * 100, "bio": "y" * 1000, "phone": "+123456789012345"}
    assert validate_new_user(body)["name"] == "x" * 100


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as exc:
        model.validate_signup({"email": "nope", "nickname": "x", "phone": "1"})
    assert problems(exc) == {
        "email": "must be a valid email address",
        "nickname": "is not a known field",
        "phone": "must be an E.164 number such as +14155550123",
        "name": "is required",
    }


def test_a_password_is_not_taken_before_the_address_is_proven() -> None:
    """Attack: registering a victim's address first with one's own password."""
    with pytest.raises(ValidationFailed) as exc:
        model.validate_signup({**VALID, "password": "Corr3ct-Horse!"})
    assert problems(exc) == {"password": "is set with the code, at POST /register/confirm"}


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Sh0rt!", "8 to 256 characters"),
        ("alllower1!", "an upper-case letter"),
        ("ALLUPPER1!", "a lower-case letter"),
        ("NoDigits!!", "a digit"),
        ("NoSymbol12", "a symbol"),
        ("x" * 257, "8 to 256 characters"),
    ],
)
def test_password_policy(password: str, missing: str) -> None:
    issue = model.password_problem(password)
    assert issue is not None and missing in issue


def test_good_password_and_non_string() -> None:
    assert model.password_problem("Corr3ct-Horse!") is None
    assert model.password_problem(12345678) == "must be a string"


def test_changes_reject_empty_and_unknown_fields() -> None:
    with pytest.raises(ValidationFailed):
        model.validate_changes({})
    with pytest.raises(ValidationFailed) as exc:
        model.validate_changes({"user_id": "x"})
    assert "user_id" in problems(exc)


def test_changes_may_clear_phone_and_bio_but_not_name() -> None:
    assert model.validate_changes({"phone": None, "bio": None}) == {"phone": None, "bio": None}
    with pytest.raises(ValidationFailed) as exc:
        model.validate_changes({"name": None})
    assert "name" in problems(exc)


def test_email_key_ignores_case() -> None:
    assert model.email_key("Ada@Example.COM") == model.email_key("ada@example.com")


def test_public_view_hides_bookkeeping() -> None:
    item = {"pk": "USER#1", "entity": "USER", "version": 3, "user_id": "1", "phone": None}
    assert model.public_view(item) == {"user_id": "1"}
