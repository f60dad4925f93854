"""Telemetry events: validation, normalisation, items, archive objects (no AWS)."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.telemetry import encoding
from chalicelib.telemetry.model import Invalid, partition_key, validate_event
from tests.unit.test_telemetry_support import NOW, activity, metric, transaction, ts


def check(event: Any) -> dict[str, Any]:
    return validate_event(event, NOW, new_id=lambda: "generated")


VALID = [
    activity(1),
    activity(2, session_id="s-1", ip_address="2001:db8::1"),
    metric(1),
    metric(2, value=0),
    metric(3, value=10**6),
    transaction(1),
    transaction(2, merchant="Shop", category="books", status="completed"),
    {**transaction(3), "timestamp": "2026-11-26T13:00:00+01:00"},
]

INVALID = [
    ("not an object", ["x"], "must be a JSON object"),
    ("no type", {"timestamp": ts()}, "event_type is required"),
    ("unknown type", {**activity(1), "event_type": "click"}, "unknown event_type"),
    ("unknown field", {**activity(1), "color": "red"}, "unknown field(s) for user_activity: color"),
    ("no timestamp", {k: v for k, v in activity(1).items() if k != "timestamp"}, "timestamp"),
    ("naive timestamp", {**activity(1), "timestamp": "2026-11-26T12:00:00"}, "time zone"),
    ("bad timestamp", {**activity(1), "timestamp": "yesterday at noon"}, "ISO-8601"),
    ("future", {**activity(1), "timestamp": ts(301)}, "5 minutes in the future"),
    ("too old", {**activity(1), "timestamp": ts(-7 * 86400 - 1)}, "7 days old"),
    ("bad event_id", {**activity(1), "event_id": "a#b"}, "event_id must be"),
    ("empty event_id", {**activity(1), "event_id": ""}, "event_id must be"),
    ("no user", {**activity(1), "user_id": None}, "user_id is required"),
    ("bad activity", {**activity(1), "activity_type": "Page View"}, "activity_type must be a slug"),
    ("bad ip", {**activity(1), "ip_address": "999.1.1.1"}, "ip_address"),
    ("details list", {**activity(1), "details": [1]}, "details must be an object"),
    ("details big", {**activity(1), "details": {"x": "y" * 5000}}, "at most 4096 bytes"),
    ("details nan", {**activity(1), "details": {"x": math.nan}}, "no NaN"),
    ("no source", {**metric(1), "source": None}, "source is required"),
    ("bad metric", {**metric(1), "metric_name": "CPU"}, "metric_name must be a slug"),
    ("string value", metric(1, value="90"), "value must be a number"),
    ("bool value", metric(1, value=True), "value must be a number"),
    ("negative value", metric(1, value=-1), "value must be >= 0"),
    ("inf value", metric(1, value=math.inf), "value must be finite"),
    ("huge value", metric(1, value=1e200), "out of range"),
    ("bad tags", {**metric(1), "tags": {"a": 1}}, "tags must be"),
    ("zero amount", transaction(1, amount=0), "amount must be > 0"),
    ("huge amount", transaction(1, amount=2e9), "at most 1e9"),
    ("nan amount", transaction(1, amount=math.nan), "amount must be finite"),
    ("bad currency", {**transaction(1), "currency": "eur"}, "currency"),
    ("no transaction id", {**transaction(1), "transaction_id": None}, "transaction_id"),
    ("bad status", {**transaction(1), "status": "done"}, "status must be one of"),
    ("empty merchant", {**transaction(1), "merchant": " "}, "merchant must be"),
]


@pytest.mark.parametrize("event", VALID)
def test_valid_events_are_normalised(event: dict[str, Any]) -> None:
    clean = check(event)
    assert clean["event_id"] == event["event_id"]
    assert clean["timestamp"].endswith("Z") and len(clean["timestamp"]) == 27
    assert set(clean) <= set(event) | {"event_id"}


@pytest.mark.parametrize(("case", "event", "reason"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_events_say_why(case: str, event: Any, reason: str) -> None:
    with pytest.raises(Invalid, match=None) as raised:
        check(event)
    assert reason in str(raised.value), case


def test_event_id_is_generated_and_timestamp_converted_to_utc() -> None:
    event = {k: v for k, v in transaction(3).items() if k != "event_id"}
    event["timestamp"] = "2026-11-26T13:00:00+01:00"
    clean = check(event)
    assert clean["event_id"] == "generated"
    assert clean["timestamp"] == "2026-11-26T12:00:00.000000Z"


def test_partition_keys() -> None:
    assert partition_key(check(activity(1))) == "user-1"
    assert partition_key(check(metric(1))) == "host-1"
    assert partition_key(check(transaction(1))) == "user-1"


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=8)))
def test_validation_never_crashes(raw: dict[str, Any]) -> None:
    with contextlib.suppress(Invalid):
        check(raw)


def test_items_have_idempotent_keys_and_decimal_numbers() -> None:
    table, item = encoding.table_and_item(check(activity(3)))
    assert table == "activities"
    assert item["pk"] == {"S": "USER#user-3"}
    assert item["sk"]["S"].endswith("#act-3")
    expected_ttl = int(NOW.timestamp()) - 3 + 90 * 86400
    assert item["expires_at"] == {"N": str(expected_ttl)}
    assert json.loads(item["details"]["S"]) == {"path": "/p/3", "ms": 12.5}

    table, item = encoding.table_and_item(check(metric(4, value=91.25)))
    assert (table, item["pk"]["S"]) == ("metrics", "host-4#cpu_usage")
    assert item["tags"] == {"M": {"az": {"S": "a"}}}

    table, item = encoding.table_and_item(check(transaction(5, amount=0.1)))
    assert (table, item["pk"]["S"], "sk" in item) == ("transactions", "TXN#t-5", False)
    assert item["occurred_at"]["S"] == item["timestamp"]["S"]
    assert item["status"] == {"S": "pending"}


@pytest.mark.parametrize("value", [0, 1, 0.1, 12.5, 1e-7, 123456789.123, 1e20, 10**15])
def test_numbers_serialise_like_typeserializer(value: float) -> None:
    expected = TypeSerializer().serialize(
        Decimal(repr(value)) if isinstance(value, float) else value
    )
    assert encoding.number(value) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [("!!!", "base64"), (encoding.base64.b64encode(b"{nope").decode(), "JSON")],
)
def test_payload_decoding_errors(data: str, reason: str) -> None:
    with pytest.raises(encoding.Malformed, match=reason):
        encoding.decode_payload(data)


def test_archive_key_and_body() -> None:
    key = encoding.archive_key(
        "shardId-000000000001", "100", "200", NOW.timestamp() + 3600 * 5 + 59
    )
    assert key == (
        "telemetry/year=2026/month=11/day=26/hour=17/shardId-000000000001-100-200.jsonl.gz"
    )
    events = [check(activity(1)), check(metric(2))]
    body = encoding.archive_body(events)
    lines = gzip.decompress(body).decode().splitlines()
    assert [json.loads(line) for line in lines] == events
    assert encoding.archive_body(events) == body  # deterministic: same batch, same object
