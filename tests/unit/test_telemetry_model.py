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
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.telemetry import encoding, model
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
    ("list event_type", {**activity(1), "event_type": []}, "unknown event_type"),
    ("object event_type", {**activity(1), "event_type": {"a": 1}}, "unknown event_type"),
    ("bool ip", {**activity(1), "ip_address": True}, "ip_address must be"),
    ("surrogate tag", {**metric(1), "tags": {"a": "\ud800"}}, "tags must be valid Unicode"),
    ("surrogate tag key", {**metric(1), "tags": {"\udfff": "a"}}, "tags must be valid Unicode"),
    ("surrogate merchant", {**transaction(1), "merchant": "x\ud800"}, "merchant must be valid"),
    ("surrogate category", {**transaction(1), "category": "\ud800"}, "category must be valid"),
    ("surrogate detail", {**activity(1), "details": {"a": ["\ud800"]}}, "details must be valid"),
    ("surrogate detail key", {**activity(1), "details": {"\ud800": 1}}, "details must be valid"),
    ("surrogate user", {**activity(1), "user_id": "u\ud800"}, "user_id must be valid"),
    (
        "surrogate field",
        {**activity(1), "\ud800": 1},
        "unknown field(s) for user_activity: \\ud800",
    ),
    (
        "deep details",
        {
            **activity(1),
            "details": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        },
        "nested too deeply",
    ),
    (
        "45-digit value",
        metric(1, value=123456789012345678901234567890123456789012345),
        "38 significant digits",
    ),
    ("tiny amount", transaction(1, amount=1e-200), "amount is out of range"),
    ("tiny value", metric(1, value=1e-120), "out of range"),
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


def test_big_round_integers_are_kept_and_written_in_exponent_form() -> None:
    clean = check(metric(1, value=10**40))
    assert clean["value"] == 10**40
    assert encoding.table_and_item(clean)[1]["value"] == {"N": "1E+40"}
    assert check(metric(1, value=10**37 + 1))["value"] == 10**37 + 1  # 38 digits: fine


def test_computed_numbers_stay_in_dynamodbs_range() -> None:
    assert encoding.computed_number(1e-120) == "0"
    assert encoding.computed_number(-1e-101) == "0"
    assert encoding.computed_number(0.1) == "0.1"
    assert encoding.computed_number(1e100) == "1E+100"
    for bad in (math.inf, math.nan, 1e130):
        with pytest.raises(ValueError):
            encoding.computed_number(bad)


def test_partition_keys() -> None:
    assert partition_key(check(activity(1))) == "user-1"
    assert partition_key(check(metric(1))) == "host-1"
    assert partition_key(check(transaction(1))) == "user-1"


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=8)))
def test_validation_never_crashes(raw: dict[str, Any]) -> None:
    with contextlib.suppress(Invalid):
        check(raw)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(categories=["Cs", "Ll", "Nd", "Zs"]), max_size=6)
    | st.sampled_from(["\ud800", "a\udfff", "", "x" * 300, "1.1.1.1", "EUR", "completed"])
)
_JSONISH = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(st.characters(categories=["Cs", "Ll"]), max_size=3), inner, max_size=3
        )
    ),
    max_leaves=12,
)
_FIELDS = sorted(
    {"event_type", "event_id", "timestamp", "user_id", "activity_type", "session_id",
     "ip_address", "details", "source", "metric_name", "value", "tags", "transaction_id",
     "amount", "currency", "merchant", "category", "status", "x"}
)  # fmt: skip


def _valid_base(kind: int) -> dict[str, Any]:
    return [activity(1), metric(1), transaction(1)][kind]


def _dynamo_numbers(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["N"]] if set(value) == {"N"} else []
        return found + [n for inner in value.values() for n in _dynamo_numbers(inner)]
    return []


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2),
    st.dictionaries(st.sampled_from(_FIELDS), _JSONISH, max_size=4),
    st.sets(st.sampled_from(_FIELDS), max_size=2),
)
def test_fuzzed_events_are_refused_with_a_reason_or_storable(
    kind: int, changes: dict[str, Any], dropped: set[str]
) -> None:
    """Whatever comes in, `validate_event` raises nothing but `Invalid`; what it accepts
    encodes as UTF-8, has an item DynamoDB takes (numbers in range, 38 digits at most) and an
    archive line."""
    raw = {k: v for k, v in {**_valid_base(kind), **changes}.items() if k not in dropped}
    try:
        clean = check(raw)
    except Invalid as problem:
        str(problem).encode("utf-8")  # the reason reaches the client
        return
    _, item = encoding.table_and_item(clean)
    json.dumps(item, ensure_ascii=False).encode("utf-8")
    for text in _dynamo_numbers(item):
        exact = Decimal(text)
        assert exact == 0 or Decimal("1e-130") <= abs(exact) < Decimal("1e126"), text
        assert model.significant_digits(exact) <= 38
    encoding.archive_line(clean).decode("utf-8")


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
    assert (table, item["pk"]["S"], "sk" in item) == ("transactions", "TXN#user-5#t-5", False)
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
