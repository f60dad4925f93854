"""The field types of telemetry events (Pydantic), each with the reason a client reads when it
is refused.

A field's rule is declared on its type (pattern, bounds, validator); its `Reason` says how any
failure of it reads, in the API's words rather than Pydantic's: `text` for any failure,
`missing` when the field is absent (or null), and `by_type` for some of Pydantic's error
types. A validator that has its own words raises `Invalid` with them. Numbers are an `int` or
a finite `float` as sent: an integer stays exact (DynamoDB takes 38 digits), never a float.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)

from chalicelib.core import clock
from chalicelib.telemetry.model import (
    MAX_AGE,
    MAX_AMOUNT,
    MAX_DEPTH,
    MAX_DETAILS_BYTES,
    MAX_DIGITS,
    MAX_FUTURE,
    MAX_TAG_KEY,
    MAX_TAGS,
    MAX_TEXT,
    MAX_VALUE,
    METRICS_WRITE_SCOPE,
    MIN_POSITIVE_VALUE,
    Invalid,
    parse_timestamp,
    significant_digits,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$"
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_HUGE = 10 ** (4 * MAX_DIGITS)  # ints from here on are not worth converting to count digits
_SMALL = 10**MAX_DIGITS  # ints below have at most MAX_DIGITS digits: nothing to count


@dataclass(frozen=True)
class Reason:
    """How a field's refusal reads (`{name}` is the field's name)."""

    text: str
    missing: str = "{name} is required"
    by_type: tuple[tuple[str, str], ...] = ()

    def of(self, name: str, types: set[str]) -> str:
        """The reason for the field's errors of these Pydantic `types`."""
        if "missing" in types:
            return self.missing.format(name=name)
        for error_type, text in self.by_type:
            if error_type in types:
                return text.format(name=name)
        return self.text.format(name=name)


ID_RULE = "{name} must be 1-128 characters: letters, digits and . _ : @ / + = -"
TIMESTAMP_RULE = "timestamp must be an ISO-8601 string with a time zone"
STAMP_RULES = {
    "submitted_by": "submitted_by is missing or not an id: not stamped by the ingest",
    "submitted_as": "submitted_as is missing or unknown: not stamped by the ingest",
}

# --- the whole event -------------------------------------------------------------------------


def check_tree(name: str, value: Any) -> None:
    """Every string in `value` (keys too) encodes as UTF-8, and no container is nested more
    than `MAX_DEPTH` deep: walked without recursion, so any depth is refused, not a crash."""
    if isinstance(value, str):
        if not value.isascii() and not _encodable(value):
            raise Invalid(f"{name} must be valid Unicode text (no lone surrogates)")
        return
    if not isinstance(value, dict | list | tuple):
        return
    stack: list[tuple[Any, int]] = [(value, 2)]  # the event is level 1
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                raise Invalid(f"{name} must be valid Unicode text (no lone surrogates)")
        elif isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise Invalid(f"{name} is nested too deeply (at most {MAX_DEPTH} levels)")
            if isinstance(item, dict):
                for key, inner in item.items():
                    stack.append((key, depth + 1))
                    stack.append((inner, depth + 1))
            else:
                stack.extend((inner, depth + 1) for inner in item)


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode escaped (a reason must reach the client)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- validators ------------------------------------------------------------------------------


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _within_window(value: str, info: ValidationInfo) -> str:
    """The timestamp in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (strings sort as times), if it
    is at most 5 minutes ahead of and 7 days behind `now` (the validation's context)."""
    moment = parse_timestamp(value)
    now = _context(info).get("now") or clock.now()
    if moment > now + MAX_FUTURE:
        raise Invalid("timestamp is more than 5 minutes in the future")
    if moment < now - MAX_AGE:
        raise Invalid("timestamp is more than 7 days old")
    return clock.timestamp(moment)


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _details(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except ValueError:
        raise Invalid("details must be plain JSON (no NaN or Infinity)") from None
    if size > MAX_DETAILS_BYTES:
        raise Invalid(f"details must be at most {MAX_DETAILS_BYTES} bytes as JSON")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("blank")
    return value


def _storable(name: str, value: int | float) -> None:
    """DynamoDB keeps 38 significant digits: an integer with more is refused, not rounded.
    (An int past `_HUGE` is out of every field's range: refused by the bounds, next.)"""
    big = type(value) is int and _SMALL <= abs(value) < _HUGE
    if big and significant_digits(value) > MAX_DIGITS:
        raise Invalid(f"{name} must have at most {MAX_DIGITS} significant digits")


def _metric_value(value: int | float) -> int | float:
    _storable("value", value)
    if value < 0:
        raise Invalid("value must be >= 0")
    if value > MAX_VALUE or 0 < value < MIN_POSITIVE_VALUE:
        raise Invalid("value is out of range (0 or 1e-100 to 1e100)")
    return value


def _amount(value: int | float) -> int | float:
    _storable("amount", value)
    if not 0 < value <= MAX_AMOUNT:
        raise Invalid("amount must be > 0 and at most 1e9")
    if value < MIN_POSITIVE_VALUE:
        raise Invalid("amount is out of range (1e-100 to 1e9)")
    return value


# --- the field types -------------------------------------------------------------------------

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN), Reason(ID_RULE)]
Slug = Annotated[
    str,
    StringConstraints(pattern=SLUG_PATTERN),
    Reason("{name} must be a slug: 1-64 lower-case letters, digits, _ . -"),
]
Timestamp = Annotated[
    str,
    StringConstraints(min_length=10, max_length=40),
    AfterValidator(_within_window),
    Reason(TIMESTAMP_RULE, missing=TIMESTAMP_RULE),
    Field(
        description="When it happened: ISO-8601 with a time zone, at most 5 minutes ahead and "
        "7 days back; stored in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.",
        examples=["2026-11-26T12:00:00Z", "2026-11-26T13:00:00.250+01:00"],
        json_schema_extra={"format": "date-time"},
    ),
]
IpAddress = Annotated[
    str,
    AfterValidator(_ip),
    Reason("ip_address must be a valid IPv4 or IPv6 address"),
    Field(
        description="The client's IPv4 or IPv6 address (stored in its normal form).",
        examples=["203.0.113.7", "2001:db8::1"],
        json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
]
Details = Annotated[
    dict[str, Any],
    AfterValidator(_details),
    Reason("details must be an object"),
    Field(
        description=f"Free-form JSON object, at most {MAX_DETAILS_BYTES} bytes as compact "
        f"JSON and {MAX_DEPTH - 1} levels of objects and arrays (itself included); no NaN or "
        "Infinity.",
        examples=[{"path": "/checkout", "ms": 12.5}],
    ),
]
#: A JSON number: an int stays exact (the union's int member takes it first), a float must be
#: finite; the bounds are checked by the validator, after the digits, and documented by
#: the schema.
Number = int | Annotated[float, Field(allow_inf_nan=False)]
Value = Annotated[
    Number,
    AfterValidator(_metric_value),
    Reason("value must be a number", by_type=(("finite_number", "value must be finite"),)),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_VALUE,
            "description": "0, or from 1e-100 to 1e100 (what DynamoDB stores), at most "
            f"{MAX_DIGITS} significant digits.",
            "examples": [91.25, 0, 1024],
        }
    ),
]
Amount = Annotated[
    Number,
    AfterValidator(_amount),
    Reason("amount must be a number", by_type=(("finite_number", "amount must be finite"),)),
    WithJsonSchema(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_AMOUNT,
            "description": "In the currency's units, from 1e-100 to 1e9, at most "
            f"{MAX_DIGITS} significant digits.",
            "examples": [25.5, 1200],
        }
    ),
]
_CURRENCY_RULE = "currency must be 3 upper-case letters (ISO 4217)"
Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Reason(_CURRENCY_RULE, missing=_CURRENCY_RULE),
    Field(description="ISO 4217 code.", examples=["EUR", "USD"]),
]
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT),
    AfterValidator(_not_blank),
    Reason(f"{{name}} must be a non-empty string of at most {MAX_TEXT} characters"),
]
Status = Annotated[
    Literal["pending", "completed", "failed"],
    Reason("status must be one of pending, completed, failed"),
    Field(description="Where the payment stands (`pending` when left out)."),
]
Tags = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_TAG_KEY)],
        Annotated[str, StringConstraints(max_length=MAX_TEXT)],
    ],
    Field(
        max_length=MAX_TAGS,
        description="Dimensions of the metric, strings only.",
        examples=[{"az": "eu-west-1a"}],
    ),
    Reason(
        f"tags must be an object of at most {MAX_TAGS} strings "
        f"(keys 1-{MAX_TAG_KEY}, values up to {MAX_TEXT} characters)"
    ),
]
SubmittedBy = Annotated[
    str,
    StringConstraints(pattern=ID_PATTERN),
    Reason(STAMP_RULES["submitted_by"], missing=STAMP_RULES["submitted_by"]),
]
SubmittedAs = Annotated[
    Literal["user", "admin", "machine"],
    Reason(STAMP_RULES["submitted_as"], missing=STAMP_RULES["submitted_as"]),
    Field(
        description="How the sender acted: `machine` is a client-credentials identity with the "
        f"{METRICS_WRITE_SCOPE} scope."
    ),
]
