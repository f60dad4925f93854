"""`POST /events` fed hostile bodies: every one answered 2xx or 4xx, never a 500."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from chalicelib.core import clock


def now() -> str:
    return clock.timestamp()


def base(kind: int) -> dict[str, Any]:
    stamp = now()
    return [
        {"event_type": "user_activity", "timestamp": stamp, "user_id": "u1",
         "activity_type": "click"},
        {"event_type": "system_metric", "timestamp": stamp, "source": "h",
         "metric_name": "cpu_usage", "value": 1},
        {"event_type": "transaction", "timestamp": stamp, "transaction_id": "t1",
         "user_id": "u1", "amount": 5, "currency": "EUR"},
    ][kind]  # fmt: skip


JUNK = [None, True, 0, -1, 1e308, 10**40, 10**45 + 1, "x", "", "\u0000", "\ud800x", "😀",
        [], [[]], {}, {"a": {"b": [1, {"c": None}]}}, {"\ud800": "\udfff"}, 1.5, "1e999",
        "NaN"]  # fmt: skip

_METRIC = b'{"event_type":"system_metric","timestamp":"%s","source":"h","metric_name":"m",'
_ACTIVITY = b'{"event_type":"user_activity","timestamp":"%s","user_id":"u","activity_type":"a",'
_TXN = b'{"event_type":"transaction","timestamp":"%s","transaction_id":"t","user_id":"u",'
RAW = [
    _METRIC + b'"value":NaN}',
    _METRIC + b'"value":Infinity}',
    _METRIC + b'"value":1e999}',
    _METRIC + b'"value":' + b"9" * 5000 + b"}",
    _METRIC + b'"value":123456789012345678901234567890123456789012345}',
    _METRIC + b'"value":1,"tags":{"a":"\\ud800"}}',
    _ACTIVITY + b'"details":{"x":-Infinity}}',
    _ACTIVITY + b'"details":' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}",
    _ACTIVITY + b'"details":{"\\ud800":"\\udfff"}}',
    _ACTIVITY + b'"ip_address":true}',
    _ACTIVITY + b'"ip_address":[1]}',
    b'{"event_type":[],"timestamp":"%s"}',
    b'{"event_type":{"a":1},"timestamp":"%s"}',
    _TXN + b'"amount":5,"currency":"EUR","status":[]}',
    _TXN + b'"amount":5,"currency":"EUR","status":{}}',
    _TXN + b'"amount":1e-200,"currency":"EUR","merchant":"\\udc00"}',
    b'{"event_type":"system_metric","timestamp":"0001-01-01T00:00:00+14:00","source":"h",'
    b'"metric_name":"m","value":1}',
    b'{"event_type":"system_metric","timestamp":"9999-12-31T23:59:59-14:00","source":"h",'
    b'"metric_name":"m","value":1}',
]


def post(api: Any, body: bytes) -> Any:
    return api._client.http.post(
        "/events",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"},
    )


@pytest.mark.parametrize("event", RAW, ids=range(len(RAW)))
def test_hostile_events_are_refused_not_a_500(api: Any, aws: Any, event: bytes) -> None:
    body = b'{"events":[' + event.replace(b"%s", now().encode()) + b"]}"
    response = post(api, body)
    assert response.status_code < 500, (body[:120], response.body[:300])
    if b"ud800" in event or b"udc00" in event:
        assert response.status_code == 400, response.body  # never accepted onto the stream


def test_random_junk_in_events_is_never_a_500(api: Any, aws: Any) -> None:
    rng = random.Random(1)
    fields = ["details", "tags", "ip_address", "status", "merchant", "event_id", "session_id"]
    bad = []
    for i in range(150):
        event = base(i % 3)
        for _ in range(rng.randint(1, 3)):
            event[rng.choice([*event, *fields])] = rng.choice(JUNK)
        response = post(api, json.dumps({"events": [event]}).encode())
        if response.status_code >= 500:
            bad.append((event, response.body[:300]))
    assert not bad, bad[:5]
