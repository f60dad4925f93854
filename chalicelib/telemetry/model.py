"""Telemetry events: the three types, checked strictly and normalised (pure, no AWS).

The rules are declared as Pydantic types in `schemas` (the events) and `fields` (each field
with the reason a client reads when it is refused); this module holds the limits, who may send
what, and `validate_event`, which loads the schemas on its first call (not at cold start).

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

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from types import ModuleType
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
MAX_TAGS = 20
MAX_TAG_KEY = 128
MAX_TEXT = 256  # merchant, category, a tag's value
STATUSES = ("pending", "completed", "failed")

SUBMITTED_BY = "submitted_by"
SUBMITTED_AS = "submitted_as"
#: Optional: the id of the request that sent the event (`core.correlation`).
CORRELATION_ID = "correlation_id"
STAMP_FIELDS = (SUBMITTED_BY, SUBMITTED_AS, CORRELATION_ID)
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


def parse_timestamp(value: Any) -> datetime:
    """The moment an event's `timestamp` names, or `Invalid` (it must have a time zone)."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise Invalid("timestamp must be an ISO-8601 string with a time zone")
    try:
        moment = clock.parse(value)
    except ValueError:
        raise Invalid("timestamp must be an ISO-8601 string with a time zone") from None
    if moment.tzinfo is None:
        raise Invalid("timestamp must have a time zone (e.g. Z or +00:00)")
    return moment


def significant_digits(value: int | float | Decimal) -> int:
    """The significant digits of `value` as DynamoDB counts them (leading and trailing zeros
    are not significant)."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return len("".join(map(str, exact.as_tuple().digits)).strip("0"))


_schemas: ModuleType | None = None


def validate_event(
    raw: Any,
    now: datetime,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    stamped: bool = False,
) -> dict[str, Any]:
    """The event checked and normalised, or `Invalid` with the first reason found. `now`
    bounds the timestamp (5 minutes ahead, 7 days back). `stamped` (a record read from the
    stream): the sender's stamp is required, checked against the event, and kept.

    The rules are declared in `schemas` (Pydantic), imported on the first call: not at cold
    start, which most invocations of the app's function never need it for."""
    global _schemas
    if _schemas is None:
        from chalicelib.telemetry import schemas

        _schemas = schemas
    return (_schemas.RECORDS if stamped else _schemas.EVENTS).validate(raw, now, new_id)


def partition_key(event: dict[str, Any]) -> str:
    """The Kinesis partition key: the user for activities and transactions (a user's events
    stay in order on one shard), the source for metrics."""
    return event["source"] if event["event_type"] == SYSTEM_METRIC else event["user_id"]
