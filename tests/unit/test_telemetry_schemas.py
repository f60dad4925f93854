"""The declared event types (`telemetry.schemas`, `telemetry.fields`): the exact reasons a
client reads, which one of several problems it reads, numbers kept exact, the request and
answer models of POST /events, and Pydantic loaded only when an event is first validated."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest

from chalicelib.telemetry import batch, model, schemas
from chalicelib.telemetry.model import Invalid, validate_event
from infra.paths import PROJECT_DIR
from tests.unit.test_telemetry_support import (
    NOW,
    ListStream,
    activity,
    machine,
    make_ingest,
    metric,
    transaction,
    ts,
    user,
)

ID_RULE = "must be 1-128 characters: letters, digits and . _ : @ / + = -"
SLUG_RULE = "must be a slug: 1-64 lower-case letters, digits, _ . -"
STAMPED = {"submitted_by": "user-1", "submitted_as": "user"}


def reason(event: Any, stamped: bool = False) -> str:
    with pytest.raises(Invalid) as refused:
        validate_event(event, NOW, new_id=lambda: "made", stamped=stamped)
    return str(refused.value)


#: Every reason, word for word (clients show them), with the event that gets it.
REASONS = [
    (7, "an event must be a JSON object"),
    ({"event_type": None, "timestamp": ts()}, "event_type is required"),
    (
        {**activity(1), "event_type": ["user_activity"]},
        "unknown event_type; expected one of user_activity, system_metric, transaction",
    ),
    ({**metric(1), "b": None, "a": 1}, "unknown field(s) for system_metric: a, b"),
    ({**activity(1), "\udc80x": 1}, "unknown field(s) for user_activity: \\udc80x"),
    (
        {**activity(1), "details": {"k": "\ud800"}},
        "details must be valid Unicode text (no lone surrogates)",
    ),
    (
        {
            **activity(1),
            "details": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        },
        "details is nested too deeply (at most 32 levels)",
    ),
    ({**activity(1), "event_id": "a#b"}, f"event_id {ID_RULE}"),
    ({**activity(1), "timestamp": None}, "timestamp must be an ISO-8601 string with a time zone"),
    (
        {**activity(1), "timestamp": "2026-11-26T12:00:00"},
        "timestamp must have a time zone (e.g. Z or +00:00)",
    ),
    ({**activity(1), "timestamp": ts(301)}, "timestamp is more than 5 minutes in the future"),
    ({**activity(1), "timestamp": ts(-7 * 86400 - 1)}, "timestamp is more than 7 days old"),
    ({**activity(1), "user_id": None}, "user_id is required"),
    ({**activity(1), "user_id": "x" * 129}, f"user_id {ID_RULE}"),
    ({**activity(1), "activity_type": "Page"}, f"activity_type {SLUG_RULE}"),
    ({**activity(1), "session_id": 5}, f"session_id {ID_RULE}"),
    ({**activity(1), "ip_address": "1.2.3"}, "ip_address must be a valid IPv4 or IPv6 address"),
    ({**activity(1), "details": "{}"}, "details must be an object"),
    (
        {**activity(1), "details": {"x": math.inf}},
        "details must be plain JSON (no NaN or Infinity)",
    ),
    ({**activity(1), "details": {"x": "y" * 4090}}, "details must be at most 4096 bytes as JSON"),
    ({**metric(1), "source": None}, "source is required"),
    (metric(1, value="1"), "value must be a number"),
    (metric(1, value=False), "value must be a number"),
    (metric(1, value=-math.inf), "value must be finite"),
    (metric(1, value=10**38 + 1), "value must have at most 38 significant digits"),
    (metric(1, value=10**120 + 1), "value must have at most 38 significant digits"),  # not "range"
    (metric(1, value=-0.5), "value must be >= 0"),
    (metric(1, value=1e-101), "value is out of range (0 or 1e-100 to 1e100)"),
    (metric(1, value=10**101), "value is out of range (0 or 1e-100 to 1e100)"),
    (
        {**metric(1), "tags": {"k": "v" * 257}},
        "tags must be an object of at most 20 strings (keys 1-128, values up to 256 characters)",
    ),
    ({**transaction(1), "transaction_id": None}, "transaction_id is required"),
    ({**transaction(1), "amount": None}, "amount is required"),
    (transaction(1, amount=math.nan), "amount must be finite"),
    (transaction(1, amount=-1), "amount must be > 0 and at most 1e9"),
    (transaction(1, amount=10**9 + 1), "amount must be > 0 and at most 1e9"),
    (transaction(1, amount=1e-101), "amount is out of range (1e-100 to 1e9)"),
    ({**transaction(1), "currency": None}, "currency must be 3 upper-case letters (ISO 4217)"),
    (
        {**transaction(1), "merchant": "x" * 257},
        "merchant must be a non-empty string of at most 256 characters",
    ),
    (
        {**transaction(1), "category": "\t"},
        "category must be a non-empty string of at most 256 characters",
    ),
    ({**transaction(1), "status": "done"}, "status must be one of pending, completed, failed"),
]


@pytest.mark.parametrize(("event", "expected"), REASONS)
def test_each_refusal_reads_word_for_word(event: Any, expected: str) -> None:
    assert reason(event) == expected


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ({}, "submitted_by is missing or not an id: not stamped by the ingest"),
        (
            {"submitted_by": "a#b"},
            "submitted_by is missing or not an id: not stamped by the ingest",
        ),
        ({"submitted_as": "root"}, "submitted_as is missing or unknown: not stamped by the ingest"),
        (
            {"submitted_by": "user-2"},
            "not allowed for its sender: user_id must be the caller's own (only admins send "
            "events for other users)",
        ),
    ],
)
def test_a_records_stamp_is_checked_last(stamp: dict[str, Any], expected: str) -> None:
    event = {**activity(1, user_id="user-1"), **STAMPED, **stamp}
    if not stamp:
        del event["submitted_by"]
    assert reason(event, stamped=True) == expected
    assert reason({**event, "timestamp": "no"}, stamped=True).startswith("timestamp")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # an unknown field first, even before a string that cannot be stored
        (
            {**activity(1), "zz": 1, "details": {"a": "\ud800"}},
            "unknown field(s) for user_activity: zz",
        ),
        # then the whole event (Unicode, depth) before any field, whatever their order
        (
            {**activity(1), "event_id": "#", "details": {"a": "\ud800"}},
            "details must be valid Unicode",
        ),
        (
            {**activity(1), "timestamp": "no", **STAMPED, "correlation_id": ["\ud800"]},
            "correlation_id must be valid Unicode text (no lone surrogates)",
        ),
        # then the fields in their declared order
        ({**transaction(1), "currency": "x", "event_id": "#"}, "event_id must be"),
        ({**transaction(1), "status": "x", "timestamp": "x", "amount": 0}, "timestamp must be"),
        ({**transaction(1), "status": "x", "amount": 0}, "amount must be > 0"),
    ],
)
def test_of_several_problems_the_client_reads_the_first(event: Any, expected: str) -> None:
    assert reason(event, stamped="submitted_by" in event).startswith(expected)


def test_valid_events_come_back_as_plain_dicts_in_a_fixed_order() -> None:
    sent = {
        "user_id": "u-1",
        "activity_type": "view",
        "timestamp": "2026-11-26T13:00:00+01:00",
        "ip_address": "2001:0db8::0001",
        "event_type": "user_activity",
        "session_id": None,
    }
    event = validate_event(sent, NOW, new_id=lambda: "made")
    assert type(event) is dict
    assert list(event.items()) == [
        ("event_type", "user_activity"),
        ("event_id", "made"),
        ("timestamp", "2026-11-26T12:00:00.000000Z"),
        ("user_id", "u-1"),
        ("activity_type", "view"),
        ("ip_address", "2001:db8::1"),
    ]
    stamped = validate_event(
        {**metric(1), "submitted_by": "p", "submitted_as": "machine", "correlation_id": "req-1"},
        NOW,
        stamped=True,
    )
    assert list(stamped)[-2:] == ["submitted_by", "submitted_as"]
    assert "correlation_id" not in stamped


def test_numbers_stay_exact_ints_or_floats() -> None:
    assert validate_event(metric(1, value=10**40), NOW)["value"] == 10**40
    assert type(validate_event(metric(1, value=7), NOW)["value"]) is int
    assert type(validate_event(transaction(1, amount=12.5), NOW)["amount"]) is float
    # an int just past the bound, that a float would round down to 1e100: refused, not rounded
    just_past = 10000000000000001 * 10**84
    assert float(just_past) == model.MAX_VALUE
    assert reason(metric(1, value=just_past)) == "value is out of range (0 or 1e-100 to 1e100)"


def test_the_declared_fields_are_the_documented_ones() -> None:
    assert set(schemas.FIELDS) == set(model.EVENT_TYPES)
    for event_type, names in schemas.FIELDS.items():
        assert schemas.STAMPED_FIELDS[event_type] == names | set(model.STAMP_FIELDS)
        assert {"event_type", "event_id", "timestamp"} <= names
    assert set(schemas._REASONS) == {
        name for names in schemas.STAMPED_FIELDS.values() for name in names
    } - {"event_type", "correlation_id"}


def test_the_request_schema_documents_the_union_and_the_limits() -> None:
    document = batch.EventBatch.model_json_schema()
    events = document["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, model.MAX_EVENTS)
    union = events["items"]
    assert union["discriminator"]["propertyName"] == "event_type"
    assert set(union["discriminator"]["mapping"]) == set(model.EVENT_TYPES)
    metric_schema = document["$defs"]["SystemMetric"]
    assert metric_schema["additionalProperties"] is False
    assert metric_schema["required"] == [
        "event_type",
        "timestamp",
        "source",
        "metric_name",
        "value",
    ]
    assert metric_schema["properties"]["value"]["maximum"] == model.MAX_VALUE
    assert metric_schema["properties"]["metric_name"]["pattern"].startswith("^[a-z0-9]")
    activity_schema = document["$defs"]["UserActivity"]
    assert "user_id" not in activity_schema["required"]  # (the ingest fills in a caller's own)
    assert "user_id" in document["$defs"]["Transaction"]["properties"]
    assert activity_schema["properties"]["timestamp"]["format"] == "date-time"
    assert all(schema.get("description") for schema in document["$defs"].values())
    answer = batch.EventsAccepted.model_json_schema()
    assert set(answer["required"]) == {"accepted", "rejected", "results"}
    assert answer["$defs"]["EventResult"]["required"] == ["index", "accepted", "event_id"]


def test_the_request_models_example_is_accepted_by_the_ingest() -> None:
    [example] = batch.EventBatch.model_config["json_schema_extra"]["examples"]  # type: ignore[index]
    answer = make_ingest(ListStream()).ingest(example, user("user-42"))
    assert answer["accepted"] == len(example["events"]) == 2


def test_the_answer_model_describes_what_the_ingest_answers() -> None:
    stream = ListStream(fail=lambda position: position == 1)
    body = {
        "events": [
            activity(1, user_id="user-1"),
            activity(2, user_id="user-1"),
            {**activity(3), "timestamp": "no"},
            {"event_id": 5},
        ]
    }
    answer = make_ingest(stream).ingest(body, user("user-1"))
    parsed = batch.EventsAccepted.model_validate(answer)
    assert [(r.accepted, r.reason is None) for r in parsed.results] == [
        (True, True),
        (False, False),
        (False, False),
        (False, False),
    ]
    assert parsed.model_dump(exclude_none=True)["results"][0] == answer["results"][0]
    metrics = make_ingest(ListStream()).ingest({"events": [metric(1)]}, machine())
    assert batch.EventsAccepted.model_validate(metrics).accepted == 1


def test_the_telemetry_modules_load_pydantic_only_to_validate() -> None:
    """Cold start: importing the ingest and the processor does not import Pydantic; the first
    event validated does."""
    code = (
        "import sys\n"
        "from chalicelib.telemetry import ingest, processor, model\n"
        "assert 'pydantic' not in sys.modules, 'imported too early'\n"
        "from tests.unit.test_telemetry_support import NOW, metric\n"
        "model.validate_event(metric(1), NOW)\n"
        "assert 'pydantic' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
