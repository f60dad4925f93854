"""The telemetry events as declared Pydantic types: what clients send and the stream carries.

One `TypedDict` per event type, told apart by `event_type` (a discriminated union), each field
of a type from `fields` (its rule and the reason a client reads when it is refused). TypedDicts
rather than models: validation hands back the plain dict that the stream, the tables and the
archive take, with no model built and dumped per event. The two adapters (`EVENTS`, from
clients; `RECORDS`, read back from the stream with the sender's stamp) are built once, when
this module is first imported: `model.validate_event` imports it on its first call, so that
`import app` does not pay for Pydantic.

Before the fields, three things about the event as a whole, in this order (`_prepared`): its
type and fields must be known (else the union or `extra="forbid"` refuses it), every string
must encode as UTF-8 and nothing may be nested too deep (`fields.check_tree`); then a null field
is an absent one and a missing `event_id` is made. Of several problems the client reads one:
an unknown field first, then the first refused field in the order declared here.

The request and the answer of `POST /events`, built on `Event`, are in `batch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, get_args, get_origin, get_type_hints

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict  # what Pydantic takes before Python 3.12

from chalicelib.telemetry.fields import (
    Amount,
    Currency,
    Details,
    Id,
    IpAddress,
    Reason,
    Slug,
    Status,
    SubmittedAs,
    SubmittedBy,
    Tags,
    Text,
    Timestamp,
    Value,
    check_tree,
    printable,
)
from chalicelib.telemetry.model import (
    CORRELATION_ID,
    EVENT_TYPES,
    SUBMITTED_AS,
    SUBMITTED_BY,
    Invalid,
    submitter_problem,
)

_CONFIG = ConfigDict(extra="forbid", strict=True)
_TYPE = "What the event is; its fields follow from it."


def _user_id_optional(schema: dict[str, Any]) -> None:
    """A user's own events may leave `user_id` out: the ingest fills in the caller before
    validating (a machine identity, nobody's user, must give it). So the API's document says
    optional where the validation, which runs after, requires it."""
    schema["required"] = [name for name in schema["required"] if name != "user_id"]


_USER_EVENT_CONFIG = ConfigDict(extra="forbid", strict=True, json_schema_extra=_user_id_optional)
EventId = Annotated[
    Id,
    Field(
        description="The event's id, which makes every write of it idempotent (a retry is "
        "stored once); made by the API when left out.",
        examples=["3f1c2a9e-8d7b-4c55-9a0e-1b2c3d4e5f60"],
    ),
]
UserId = Annotated[
    Id,
    Field(
        description="Whose event: the caller's own (left out, it is the caller); only admins "
        "send events of other users.",
        examples=["user-42"],
    ),
]


class UserActivity(TypedDict):
    """Something a user did (a page view, a search): kept under the user, in time order."""

    __pydantic_config__ = _USER_EVENT_CONFIG  # type: ignore[misc]
    event_type: Annotated[Literal["user_activity"], Field(description=_TYPE)]
    event_id: NotRequired[EventId]
    timestamp: Timestamp
    user_id: UserId
    activity_type: Annotated[
        Slug, Field(description="What the user did.", examples=["page_view", "search"])
    ]
    session_id: NotRequired[
        Annotated[Id, Field(description="The client's session.", examples=["s-7f3a"])]
    ]
    ip_address: NotRequired[IpAddress]
    details: NotRequired[Details]


class SystemMetric(TypedDict):
    """A measurement from a system (a machine identity with the metrics scope, or an admin):
    kept per source and metric, and checked against the metric's baseline."""

    __pydantic_config__ = _CONFIG  # type: ignore[misc]
    event_type: Annotated[Literal["system_metric"], Field(description=_TYPE)]
    event_id: NotRequired[EventId]
    timestamp: Timestamp
    source: Annotated[Slug, Field(description="What measured it.", examples=["web-1"])]
    metric_name: Annotated[
        Slug, Field(description="What was measured.", examples=["cpu_usage", "latency_ms"])
    ]
    value: Value
    tags: NotRequired[Tags]


class Transaction(TypedDict):
    """A payment by a user: kept per user and transaction id, screened for fraud."""

    __pydantic_config__ = _USER_EVENT_CONFIG  # type: ignore[misc]
    event_type: Annotated[Literal["transaction"], Field(description=_TYPE)]
    event_id: NotRequired[EventId]
    timestamp: Timestamp
    transaction_id: Annotated[
        Id, Field(description="Unique among the user's transactions.", examples=["t-1001"])
    ]
    user_id: UserId
    amount: Amount
    currency: Currency
    merchant: NotRequired[
        Annotated[Text, Field(description="Who was paid.", examples=["Bookshop Ltd"])]
    ]
    category: NotRequired[
        Annotated[Text, Field(description="What for (free text).", examples=["books"])]
    ]
    status: NotRequired[Status]


class _Stamp(TypedDict):
    """What the ingest adds to an event it puts on the stream (`model.stamp`)."""

    submitted_by: SubmittedBy
    submitted_as: SubmittedAs
    correlation_id: NotRequired[Any]  # checked as a tree, then left out of the event


class StampedUserActivity(UserActivity, _Stamp):
    __pydantic_config__ = _USER_EVENT_CONFIG  # type: ignore[misc]


class StampedSystemMetric(SystemMetric, _Stamp):
    __pydantic_config__ = _CONFIG  # type: ignore[misc]


class StampedTransaction(Transaction, _Stamp):
    __pydantic_config__ = _USER_EVENT_CONFIG  # type: ignore[misc]


_KINDS = (UserActivity, SystemMetric, Transaction)
_STAMPED = (StampedUserActivity, StampedSystemMetric, StampedTransaction)


def _fields(kinds: tuple[type, ...]) -> dict[str, frozenset[str]]:
    """Each event type's fields, by its `event_type`."""
    return {
        get_args(get_type_hints(kind)["event_type"])[0]: frozenset(
            kind.__required_keys__ | kind.__optional_keys__  # type: ignore[attr-defined]
        )
        for kind in kinds
    }


def _reasons(kinds: tuple[type, ...]) -> dict[str, Reason]:
    """Each field's `Reason`, from its type (a field has the same type in every event)."""
    found: dict[str, Reason] = {}
    for kind in kinds:
        for name, hint in get_type_hints(kind, include_extras=True).items():
            while get_origin(hint) is NotRequired:
                hint = get_args(hint)[0]
            for extra in getattr(hint, "__metadata__", ()):
                if isinstance(extra, Reason):
                    found[name] = extra
    return found


FIELDS = _fields(_KINDS)
STAMPED_FIELDS = _fields(_STAMPED)
_REASONS = _reasons(_STAMPED)


def _prepared(fields_of: Mapping[str, frozenset[str]]) -> Callable[[Any, ValidationInfo], Any]:
    """The check of the event as a whole, before its fields (see the module's docstring)."""

    def prepare(raw: Any, info: ValidationInfo) -> Any:
        if not isinstance(raw, dict):
            return raw
        event_type = raw.get("event_type")
        known = fields_of.get(event_type) if isinstance(event_type, str) else None
        if known is None or not raw.keys() <= known:
            return raw  # refused by the discriminator or by extra="forbid"
        for name, value in raw.items():
            kind = type(value)  # (the common cases at once: a hot loop)
            if not ((kind is str and value.isascii()) or kind is int or kind is float):
                check_tree(name, value)
        if raw.get("event_id") is not None and None not in raw.values():
            return raw
        event = {name: value for name, value in raw.items() if value is not None}
        if "event_id" not in event:
            context = info.context if isinstance(info.context, dict) else {}
            event["event_id"] = context.get("new_id", _new_id)()
        return event

    return prepare


def _new_id() -> str:
    return str(uuid.uuid4())


def _sender_allowed(event: dict[str, Any]) -> dict[str, Any]:
    """A record's stamp must allow its event (`model.submitter_problem`); the correlation id
    was only for the logs."""
    event.pop(CORRELATION_ID, None)
    problem = submitter_problem(event, event[SUBMITTED_BY], event[SUBMITTED_AS])
    if problem is not None:
        raise Invalid(f"not allowed for its sender: {problem}")
    return event


Event = Annotated[
    UserActivity | SystemMetric | Transaction,
    Field(discriminator="event_type"),
    BeforeValidator(_prepared(FIELDS)),
]
StampedEvent = Annotated[
    StampedUserActivity | StampedSystemMetric | StampedTransaction,
    Field(discriminator="event_type"),
    BeforeValidator(_prepared(STAMPED_FIELDS)),
    AfterValidator(_sender_allowed),
]


class Events:
    """Validation of one kind of event (`Event` or `StampedEvent`), its adapter built once."""

    def __init__(self, kind: Any, fields_of: Mapping[str, frozenset[str]]) -> None:
        self._adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(kind)
        self._fields_of = fields_of

    def validate(self, raw: Any, now: datetime, new_id: Callable[[], str]) -> dict[str, Any]:
        """The event checked and normalised, or `Invalid` with the reason the client reads."""
        try:
            return self._adapter.validate_python(raw, context={"now": now, "new_id": new_id})
        except ValidationError as error:
            problems = error.errors(include_url=False, include_input=False)
            raise Invalid(self.reason(problems, raw)) from None

    def reason(self, errors: list[ErrorDetails], raw: Any) -> str:
        """One reason for all of Pydantic's `errors` about `raw`: an unknown field first, then
        the problem with the event as a whole, then the first field refused."""
        if any(e["type"] == "extra_forbidden" or len(e["loc"]) == 1 for e in errors):
            unknown = self._unknown(raw)  # (a key that is not text fails the whole event)
            if unknown:
                return unknown
        first = errors[0]
        if len(first["loc"]) < 2:
            return _whole_event(first, raw)
        name = first["loc"][1]
        problems = [e for e in errors if e["loc"][1:2] == (name,)]
        for problem in problems:
            raised = (problem.get("ctx") or {}).get("error")
            if isinstance(raised, Invalid):
                return str(raised)
        rule = _REASONS.get(str(name), Reason("{name} is not valid"))
        return rule.of(str(name), {problem["type"] for problem in problems})

    def _unknown(self, raw: dict[str, Any]) -> str | None:
        event_type = raw["event_type"]
        unknown = sorted(printable(str(k)) for k in raw if k not in self._fields_of[event_type])
        return f"unknown field(s) for {event_type}: {', '.join(unknown)}" if unknown else None


def _whole_event(error: ErrorDetails, raw: Any) -> str:
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, Invalid):
        return str(raised)
    if not isinstance(raw, dict):
        return "an event must be a JSON object"
    if raw.get("event_type") is None:
        return "event_type is required"
    return f"unknown event_type; expected one of {', '.join(EVENT_TYPES)}"


EVENTS = Events(Event, FIELDS)
RECORDS = Events(StampedEvent, STAMPED_FIELDS)
