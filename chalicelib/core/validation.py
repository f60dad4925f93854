"""Request bodies checked by declared Pydantic models, their problems in the API's shape.

A body model declares the rules (types, lengths, patterns, required and unknown fields), so
`Model.model_json_schema()` documents exactly what is checked. This module turns Pydantic's
errors into the project's `ValidationFailed` problems, `{"field": "lines[0].sku", "issue":
"..."}`, every one at once and in the order a person fixes them: within each object its
unknown fields, then its missing ones, then the others in the fields' declared order.

`Issue` gives a field the sentences clients read instead of Pydantic's own messages.

Pydantic is imported by the domain modules' `validate_*` functions on first use, never by
`import app`: this module imports it at its top, so import it lazily too.
"""

from __future__ import annotations

import typing
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, Field, GetJsonSchemaHandler, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from chalicelib.core.errors import ValidationFailed

Model = TypeVar("Model", bound=BaseModel)
Problem = dict[str, str]

REQUIRED = "is required"
UNKNOWN = "is not a known field"


@dataclass(frozen=True)
class Issue:
    """What a client reads when a field's value is refused: `default`, or the sentence for
    one of Pydantic's error types (`string_type`, `too_long`, ...) in `by_type`; `missing`
    replaces "is required" when the field is absent. Problems of a nested object's fields
    or of list items keep their own issues, and `refuse`d ones their sentence."""

    default: str
    by_type: Mapping[str, str] = field(default_factory=dict)
    missing: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: Callable[[Any], core_schema.CoreSchema]
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._reword, handler(source))

    def __hash__(self) -> int:
        return hash((self.default, tuple(self.by_type.items()), self.missing))

    def _reword(self, value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            # The value itself refused (not a list, too long, ...): that alone is its problem.
            own = [e["type"] for e in exc.errors() if not e["loc"] and e["type"] in _PYDANTIC]
            if not own:
                raise
            raise PydanticCustomError(own[0], self.by_type.get(own[0], self.default)) from None


_PYDANTIC = frozenset(typing.get_args(core_schema.ErrorType))


def whole_number(value: Any) -> Any:
    """A float with no fraction as the int it is, for a strict model's int field (as
    `BeforeValidator(whole_number)`): JSON has one kind of number, and JSON Schema's
    `integer`, the document's type, takes 2.0. Anything else (2.5, true, "2", NaN) is left
    for the field to refuse."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def refuse(kind: str, issue: str) -> PydanticCustomError:
    """The error a validator raises with the client's sentence itself (`kind` is none of
    Pydantic's error types, so no `Issue` rewords it)."""
    assert kind not in _PYDANTIC, kind
    return PydanticCustomError(kind, issue)


@dataclass(frozen=True)
class NoControlCharacters:
    """A text annotation: no control characters (`has_control_characters`) but `allowed`;
    the JSON schema says so with a pattern (lone surrogates, which JSON Schema's regexes
    cannot name, are refused all the same)."""

    allowed: str = ""
    issue: str = "must not contain control characters"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: Callable[[Any], core_schema.CoreSchema]
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["pattern"] = f"^[^{self._class()}]*$"
        return json_schema

    def _class(self) -> str:
        """The control characters (Unicode's Cc) refused, as a regex class's ranges."""
        codes = [c for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in self.allowed]
        ranges: list[list[int]] = []
        for code in codes:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
        return "".join(
            f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}"
            for low, high in ranges
        )

    def _check(self, text: str) -> str:
        kept = text
        for ch in self.allowed:
            kept = kept.replace(ch, "")
        if has_control_characters(kept):
            raise refuse("control_characters", self.issue)
        return text


@dataclass(frozen=True)
class JsonSchema:
    """Keywords added to a field's JSON schema, for rules checked by a validator rather
    than a constraint (`JsonSchema(minLength=8)`)."""

    keywords: tuple[tuple[str, Any], ...]

    def __init__(self, **keywords: Any) -> None:
        object.__setattr__(self, "keywords", tuple(keywords.items()))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {**handler(schema), **dict(self.keywords)}


def absent(**documented: Any) -> Any:
    """A field that may be left out but is never null: no default in the JSON schema (the
    value, None, only marks it as not sent; dump with `exclude_unset`)."""
    return Field(None, json_schema_extra=_no_default, **documented)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def validate(
    model: type[Model],
    body: Mapping[str, Any],
    message: str,
    refused: Mapping[str, str] | None = None,
) -> Model:
    """`body` as a `model`, or ValidationFailed(message) listing every problem. `refused`
    names top-level fields that are not unknown but not taken here, with their issue."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(message, problems(exc, model, refused)) from None


def problems(
    error: ValidationError, model: type[BaseModel], refused: Mapping[str, str] | None = None
) -> list[Problem]:
    """Pydantic's errors as the API's problems, in the order the module docstring says."""
    ranked = []
    for found in error.errors():
        loc = tuple(found["loc"])
        issue = _issue(found, model, loc, refused or {})
        # A missing field with a declared sentence is reported among the fields, in order.
        plain_missing = found["type"] == "missing" and _declared_missing(model, loc) is None
        rank = 0 if found["type"] == "extra_forbidden" else 1 if plain_missing else 2
        ranked.append((loc, rank, {"field": field_path(loc), "issue": issue}))
    return _in_order(ranked, 0)


def field_path(loc: Iterable[int | str]) -> str:
    """`("lines", 0, "sku")` as `lines[0].sku`: how the API names a field."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def has_control_characters(text: str) -> bool:
    """Control characters, and lone surrogates (JSON's "\\ud800"), which no AWS service
    can store: refused as the client's mistake, not met later as a server error."""
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _issue(
    found: Mapping[str, Any],
    model: type[BaseModel],
    loc: tuple[int | str, ...],
    refused: Mapping[str, str],
) -> str:
    """An `Issue`'s sentence was put in the error's message where the error arose; only
    unknown and missing fields are named here."""
    if found["type"] == "extra_forbidden":
        return refused.get(str(loc[-1]), UNKNOWN) if len(loc) == 1 else UNKNOWN
    if found["type"] == "missing":
        return _declared_missing(model, loc) or REQUIRED
    return str(found["msg"])


def _declared_missing(model: type[BaseModel], loc: tuple[int | str, ...]) -> str | None:
    declared = _declared_issue(model, loc)
    return declared.missing if declared else None


def _declared_issue(model: type[BaseModel], loc: tuple[int | str, ...]) -> Issue | None:
    """The `Issue` declared on the field at `loc` (through nested models and list items)."""
    annotation: Any = model
    metadata: list[Any] = []
    for part in loc:
        annotation, metadata = _unwrap(annotation, metadata)
        if isinstance(part, int):
            item = typing.get_args(annotation)
            if not item:
                return None
            annotation, metadata = item[0], []
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(part)
            if info is None:
                return None
            annotation, metadata = info.annotation, list(info.metadata)
        else:
            return None
    annotation, metadata = _unwrap(annotation, metadata)
    return next((m for m in reversed(metadata) if isinstance(m, Issue)), None)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """`Annotated[X, ...]` and `X | None` down to X, collecting the metadata on the way."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata = [*extra, *metadata]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if type(None) in typing.get_args(annotation) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation, metadata


def _in_order(ranked: list[tuple[tuple[Any, ...], int, Problem]], depth: int) -> list[Problem]:
    """At one level of nesting: unknown fields, missing ones, then each field's problems
    (nested ones ordered the same way), fields in the order Pydantic met them."""
    here = [r for r in ranked if len(r[0]) == depth + 1 and r[1] < 2]
    first = [p for rank in (0, 1) for loc, r, p in here if r == rank]
    groups: dict[Any, list[tuple[tuple[Any, ...], int, Problem]]] = {}
    for entry in ranked:
        loc, rank, _ = entry
        if len(loc) == depth + 1 and rank < 2:
            continue
        groups.setdefault(loc[depth] if len(loc) > depth else None, []).append(entry)
    rest: list[Problem] = []
    for key, entries in groups.items():
        if key is None:
            rest += [p for _, _, p in entries]
        else:
            rest += _in_order(entries, depth + 1)
    return first + rest
