"""Declared models' errors as the API's problems (`core.validation`): names, sentences, order."""

from __future__ import annotations

import re
from typing import Annotated, Any

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chalicelib.core.errors import ValidationFailed
from chalicelib.core.validation import (
    Issue,
    JsonSchema,
    NoControlCharacters,
    absent,
    field_path,
    refuse,
    validate,
)

STRICT = ConfigDict(extra="forbid", strict=True)


def _not_zero(value: int) -> int:
    if value == 0:
        raise refuse("zero", "must not be zero")
    return value


Count = Annotated[
    int,
    Field(ge=0, le=9),
    AfterValidator(_not_zero),
    Issue("must be 0 to 9", {"int_type": "must be a whole number"}),
]


class Item(BaseModel):
    model_config = STRICT

    label: Annotated[str, Field(min_length=1), NoControlCharacters(), Issue("must be text")]
    count: Count


class Body(BaseModel):
    model_config = STRICT

    title: Annotated[str, Field(max_length=5), Issue("must be 1 to 5 characters")]
    items: Annotated[list[Annotated[Item, Issue("must be an object")]], Issue("must be a list")]
    note: Annotated[str, Issue("must be a string", missing="must be given, even empty")]
    extra: Annotated[str, NoControlCharacters(allowed="\n")] = absent(description="optional")
    secret: Annotated[str, JsonSchema(minLength=8)] = absent()


def problems(body: dict[str, Any], refused: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as failed:
        validate(Body, body, "The body is not valid.", refused)
    assert failed.value.message == "The body is not valid." and failed.value.status_code == 400
    return [(p["field"], p["issue"]) for p in failed.value.details]


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("title",), "title"),
        (("items", 0, "count"), "items[0].count"),
        (("a", "b", 2, 3), "a.b[2][3]"),
        ((), ""),
    ],
)
def test_a_field_is_named_as_the_api_names_it(loc: tuple[Any, ...], path: str) -> None:
    assert field_path(loc) == path


def test_unknown_then_missing_then_the_fields_in_their_declared_order() -> None:
    body = {
        "items": [{"label": "a", "count": 10, "colour": "red"}, {"count": "2", "size": 1}, 3],
        "title": "far too long",
        "zzz": 1,
    }
    assert problems(body) == [
        ("zzz", "is not a known field"),
        ("title", "must be 1 to 5 characters"),
        ("items[0].colour", "is not a known field"),
        ("items[0].count", "must be 0 to 9"),
        ("items[1].size", "is not a known field"),
        ("items[1].label", "is required"),
        ("items[1].count", "must be a whole number"),
        ("items[2]", "must be an object"),
        # A declared sentence for a missing field is reported in the field's place.
        ("note", "must be given, even empty"),
    ]


def test_a_refused_sentence_is_kept_and_the_value_itself_is_reworded() -> None:
    body = {"title": "t", "items": [{"label": "a\x00", "count": 0}], "note": ""}
    assert problems(body) == [
        ("items[0].label", "must not contain control characters"),
        ("items[0].count", "must not be zero"),
    ]
    assert problems({"title": "t", "items": "no", "note": 1}) == [
        ("items", "must be a list"),
        ("note", "must be a string"),
    ]


def test_fields_refused_for_a_reason_say_it() -> None:
    body = {"title": "t", "items": [], "note": "", "password": "x"}
    assert problems(body, {"password": "is set elsewhere"}) == [("password", "is set elsewhere")]


def test_control_characters_may_be_allowed_and_lone_surrogates_are_refused() -> None:
    good = {"title": "t", "items": [], "note": "", "extra": "one\ntwo"}
    assert validate(Body, good, "x").extra == "one\ntwo"
    assert problems({**good, "extra": "tab\there"}) == [
        ("extra", "must not contain control characters")
    ]
    assert problems({**good, "items": [{"label": "\ud800", "count": 1}]}) == [
        ("items[0].label", "must be text")
    ]


def test_the_json_schema_states_the_rules_the_validators_check() -> None:
    schema = Body.model_json_schema()
    properties = schema["properties"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["title", "items", "note"]
    assert "default" not in properties["extra"] and "extra" not in schema["required"]
    assert properties["secret"]["minLength"] == 8
    label_pattern = schema["$defs"]["Item"]["properties"]["label"]["pattern"]
    extra_pattern = properties["extra"]["pattern"]
    # JSON Schema's \\uXXXX escapes read the same in Python's re.
    assert re.search(label_pattern, "plain text") and not re.search(label_pattern, "a\x7fb")
    assert not re.search(label_pattern, "a\nb") and re.search(extra_pattern, "a\nb")
    assert not re.search(extra_pattern, "a\tb") and not re.search(extra_pattern, "\x85")


def test_a_refusal_cannot_take_the_name_of_a_pydantic_error() -> None:
    with pytest.raises(AssertionError):
        refuse("string_type", "must be a string")
