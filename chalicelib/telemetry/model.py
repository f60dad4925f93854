"""Telemetry events: the three types, checked strictly and normalised (pure, no AWS).

An event is a JSON object with `event_type`, an optional `event_id` and a `timestamp`
(ISO-8601 with a time zone), plus the fields of its type:

- `user_activity`: `user_id`, `activity_type` (slug), `session_id?`, `ip_address?` (an IPv4
  or IPv6 address), `details?` (an object, at most 4 KB as compact JSON);
- `system_metric`: `source` (slug), `metric_name` (slug), `value` (finite number >= 0),
  `tags?` (an object of strings);
- `transaction`: `transaction_id`, `user_id`, `amount` (finite, > 0, <= 1e9), `currency`
  (3 upper-case letters), `merchant?`, `category?`, `status?` (pending|completed|failed).

Every string (keys included, at any depth) must be valid Unicode: a lone surrogate cannot be
encoded as UTF-8, so DynamoDB, SQS and S3 could never take it. Nothing may be nested more
than `MAX_DEPTH` levels (the archive's and the processor's JSON must not hit Python's
recursion limit). Numbers must be storable by DynamoDB: at most 38 significant digits, and 0
or a magnitude from 1e-100 to 1e100 (DynamoDB's own range is 1e-130 to below 1e126).
Unknown fields are refused. `validate_event` returns the normalised event (timestamp in UTC
as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so that strings sort as times; an `event_id` always set)
or the reason it is refused. The `event_id` is what makes every downstream write idempotent.
Identifiers never contain `#`, which separates the parts of the tables' keys.

Who sent an event: the ingest stamps the verified caller into every event it puts on the
stream (`stamp`): `submitted_by` (the caller's id) and `submitted_as` (`user`, `admin` or
`machine`). A client cannot send them (unknown fields); the processor requires them
(`validate_event(..., stamped=True)`) and refuses a record whose stamp does not allow it
(`submitter_problem`): a user's own activity and transactions, anyone's for an admin, system
metrics from a machine identity or an admin only. So a record on the stream is never taken
on the word of its body.

The ingest also stamps the request's `correlation_id` (`core.correlation`), so the processor
logs each batch with the ids of the requests that sent it. Like the sender's stamp it is
never stored: `validate_event` accepts it on a stamped record and leaves it out of the event.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from chalicelib.core import clock

USER_ACTIVITY = "user_activity"
SYSTEM_METRIC = "system_metric"
TRANSACTION = "transaction"
EVENT_TYPES = (USER_ACTIVITY, SYSTEM_METRIC, TRANSACTION)

MAX_EVENTS = 500
MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)
MAX_DETAILS_BYTES = 4096
MAX_AMOUNT = 1e9
#: DynamoDB numbers go from 1e-130 to 1e126; a metric outside this range is refused rather
#: than left to fail every write of its batch.
MAX_VALUE = 1e100
MIN_POSITIVE_VALUE = 1e-100
MAX_DIGITS = 38  # DynamoDB's precision
MAX_DEPTH = 32  # containers within containers, the event itself included
_HUGE = 10 ** (4 * MAX_DIGITS)  # ints from here on are not worth converting to count digits
MAX_TAGS = 20
STATUSES = ("pending", "completed", "failed")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_TEXT_MAX = 256

_COMMON = ("event_type", "event_id", "timestamp")
FIELDS: dict[str, frozenset[str]] = {
    USER_ACTIVITY: frozenset(
        (*_COMMON, "user_id", "activity_type", "session_id", "ip_address", "details")
    ),
    SYSTEM_METRIC: frozenset((*_COMMON, "source", "metric_name", "value", "tags")),
    TRANSACTION: frozenset(
        (
            *_COMMON,
            *("transaction_id", "user_id", "amount", "currency"),
            *("merchant", "category", "status"),
        )
    ),
}


SUBMITTED_BY = "submitted_by"
SUBMITTED_AS = "submitted_as"
#: Optional: the id of the request that sent the event (`core.correlation`).
CORRELATION_ID = "correlation_id"
STAMP_FIELDS = (SUBMITTED_BY, SUBMITTED_AS, CORRELATION_ID)
#: The fields of a record read from the stream: the event's and its sender's stamp.
STAMPED_FIELDS: dict[str, frozenset[str]] = {
    event_type: fields | frozenset(STAMP_FIELDS) for event_type, fields in FIELDS.items()
}
AS_USER, AS_ADMIN, AS_MACHINE = "user", "admin", "machine"
SUBMITTER_KINDS = (AS_USER, AS_ADMIN, AS_MACHINE)
#: The OAuth scope a machine identity needs to send system metrics.
METRICS_WRITE_SCOPE = "telemetry/metrics.write"
#: The events that belong to a user (`user_id`).
USER_EVENTS = (USER_ACTIVITY, TRANSACTION)


class Invalid(ValueError):
    """The event is refused; the message says why (it goes back to the client)."""


def submitter_problem(event: dict[str, Any], submitted_by: str, submitted_as: str) -> str | None:
    """Why a caller (`submitted_by`, acting `submitted_as`) may not send `event` (a
    validated one), or None if it may: the rules of who sends what, for the ingest and again
    for the processor."""
    if event["event_type"] == SYSTEM_METRIC:
        if submitted_as in (AS_MACHINE, AS_ADMIN):
            return None
        return (
            "system metrics are taken only from a trusted producer (a machine identity "
            f"with the {METRICS_WRITE_SCOPE} scope) or an admin"
        )
    if submitted_as == AS_MACHINE:
        return "a machine identity sends system metrics only"
    if submitted_as == AS_USER and event.get("user_id") != submitted_by:
        return "user_id must be the caller's own (only admins send events for other users)"
    return None


def stamp(
    event: dict[str, Any], submitted_by: str, submitted_as: str, correlation_id: str | None = None
) -> dict[str, Any]:
    """`event` with its sender (and the request's correlation id) stamped in (the ingest,
    after authorising it)."""
    stamped = {**event, SUBMITTED_BY: submitted_by, SUBMITTED_AS: submitted_as}
    if correlation_id:
        stamped[CORRELATION_ID] = correlation_id
    return stamped


def _check_stamp(raw: dict[str, Any], clean: dict[str, Any]) -> None:
    by, kind = raw.get(SUBMITTED_BY), raw.get(SUBMITTED_AS)
    if not isinstance(by, str) or not _ID.fullmatch(by):
        raise Invalid("submitted_by is missing or not an id: not stamped by the ingest")
    if kind not in SUBMITTER_KINDS:
        raise Invalid("submitted_as is missing or unknown: not stamped by the ingest")
    problem = submitter_problem(clean, by, kind)
    if problem is not None:
        raise Invalid(f"not allowed for its sender: {problem}")
    clean[SUBMITTED_BY], clean[SUBMITTED_AS] = by, kind


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise Invalid("timestamp must be an ISO-8601 string with a time zone")
    try:
        moment = clock.parse(value)
    except ValueError:
        raise Invalid("timestamp must be an ISO-8601 string with a time zone") from None
    if moment.tzinfo is None:
        raise Invalid("timestamp must have a time zone (e.g. Z or +00:00)")
    return moment


def _id(event: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = event.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise Invalid(
            f"{name} must be 1-128 characters: letters, digits and . _ : @ / + = -"
            if value is not None
            else f"{name} is required"
        )
    return value


def _slug(event: dict[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise Invalid(
            f"{name} is required"
            if value is None
            else f"{name} must be a slug: 1-64 lower-case letters, digits, _ . -"
        )
    return value


def _number(event: dict[str, Any], name: str) -> float | int:
    value = event.get(name)
    if value is None:
        raise Invalid(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{name} must be finite")
    # (an int past _HUGE is out of every field's range: refused by the caller's range check)
    if isinstance(value, int) and abs(value) < _HUGE and significant_digits(value) > MAX_DIGITS:
        raise Invalid(f"{name} must have at most {MAX_DIGITS} significant digits")
    return value


def significant_digits(value: int | float) -> int:
    """The significant digits of `value` as DynamoDB counts them (leading and trailing zeros
    are not significant)."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return len("".join(map(str, exact.as_tuple().digits)).strip("0"))


def _check_tree(name: str, value: Any) -> None:
    """Every string in `value` (keys too) encodes as UTF-8, and no container is nested more
    than `MAX_DEPTH` deep: walked without recursion, so any depth is refused, not a crash."""
    stack: list[tuple[Any, int]] = [(value, 2)]  # the event is level 1
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
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


def _printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode escaped (a reason must reach the client)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(event: dict[str, Any], name: str) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT_MAX:
        raise Invalid(f"{name} must be a non-empty string of at most {_TEXT_MAX} characters")
    return value


def validate_event(
    raw: Any,
    now: datetime,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    stamped: bool = False,
) -> dict[str, Any]:
    """The event checked and normalised, or `Invalid` with the first reason found. `now`
    bounds the timestamp (5 minutes ahead, 7 days back). `stamped` (a record read from the
    stream): the sender's stamp is required, checked against the event, and kept."""
    if not isinstance(raw, dict):
        raise Invalid("an event must be a JSON object")
    event_type = raw.get("event_type")
    if not isinstance(event_type, str) or event_type not in FIELDS:
        raise Invalid(
            "event_type is required"
            if event_type is None
            else f"unknown event_type; expected one of {', '.join(EVENT_TYPES)}"
        )
    allowed = (STAMPED_FIELDS if stamped else FIELDS)[event_type]
    unknown = sorted(_printable(str(k)) for k in raw if k not in allowed)
    if unknown:
        raise Invalid(f"unknown field(s) for {event_type}: {', '.join(unknown)}")
    for name, value in raw.items():
        _check_tree(name, value)
    event_id = _id(raw, "event_id", required=False) or new_id()
    moment = parse_timestamp(raw.get("timestamp"))
    if moment > now + MAX_FUTURE:
        raise Invalid("timestamp is more than 5 minutes in the future")
    if moment < now - MAX_AGE:
        raise Invalid("timestamp is more than 7 days old")
    clean: dict[str, Any] = {
        "event_type": event_type,
        "event_id": event_id,
        "timestamp": clock.timestamp(moment),
    }
    if event_type == USER_ACTIVITY:
        clean["user_id"] = _id(raw, "user_id")
        clean["activity_type"] = _slug(raw, "activity_type")
        session = _id(raw, "session_id", required=False)
        if session is not None:
            clean["session_id"] = session
        ip = raw.get("ip_address")
        if ip is not None:
            if not isinstance(ip, str):
                raise Invalid("ip_address must be a valid IPv4 or IPv6 address")
            try:
                clean["ip_address"] = str(ipaddress.ip_address(ip))
            except ValueError:
                raise Invalid("ip_address must be a valid IPv4 or IPv6 address") from None
        details = raw.get("details")
        if details is not None:
            if not isinstance(details, dict):
                raise Invalid("details must be an object")
            try:
                size = len(json.dumps(details, separators=(",", ":"), allow_nan=False).encode())
            except ValueError:
                raise Invalid("details must be plain JSON (no NaN or Infinity)") from None
            if size > MAX_DETAILS_BYTES:
                raise Invalid(f"details must be at most {MAX_DETAILS_BYTES} bytes as JSON")
            clean["details"] = details
    elif event_type == SYSTEM_METRIC:
        clean["source"] = _slug(raw, "source")
        clean["metric_name"] = _slug(raw, "metric_name")
        value = _number(raw, "value")
        if value < 0:
            raise Invalid("value must be >= 0")
        if value > MAX_VALUE or 0 < value < MIN_POSITIVE_VALUE:
            raise Invalid("value is out of range (0 or 1e-100 to 1e100)")
        clean["value"] = value
        tags = raw.get("tags")
        if tags is not None:
            if (
                not isinstance(tags, dict)
                or len(tags) > MAX_TAGS
                or not all(
                    isinstance(k, str)
                    and isinstance(v, str)
                    and 0 < len(k) <= 128
                    and len(v) <= _TEXT_MAX
                    for k, v in tags.items()
                )
            ):
                raise Invalid(
                    f"tags must be an object of at most {MAX_TAGS} strings "
                    f"(keys 1-128, values up to {_TEXT_MAX} characters)"
                )
            clean["tags"] = tags
    else:
        clean["transaction_id"] = _id(raw, "transaction_id")
        clean["user_id"] = _id(raw, "user_id")
        amount = _number(raw, "amount")
        if not 0 < amount <= MAX_AMOUNT:
            raise Invalid("amount must be > 0 and at most 1e9")
        if amount < MIN_POSITIVE_VALUE:
            raise Invalid("amount is out of range (1e-100 to 1e9)")
        clean["amount"] = amount
        currency = raw.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise Invalid("currency must be 3 upper-case letters (ISO 4217)")
        clean["currency"] = currency
        for name in ("merchant", "category"):
            text = _text(raw, name)
            if text is not None:
                clean[name] = text
        status = raw.get("status")
        if status is not None:
            if status not in STATUSES:
                raise Invalid(f"status must be one of {', '.join(STATUSES)}")
            clean["status"] = status
    if stamped:
        _check_stamp(raw, clean)
    return clean


def partition_key(event: dict[str, Any]) -> str:
    """The Kinesis partition key: the user for activities and transactions (a user's events
    stay in order on one shard), the source for metrics."""
    return event["source"] if event["event_type"] == SYSTEM_METRIC else event["user_id"]
