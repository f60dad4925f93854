"""Telemetry end to end on the local stack: POST /events -> Kinesis -> the processor ->
tables, alerts (SNS), data lake (S3); a malformed record put on the stream is quarantined."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from local.inbox import drain, subscribe_inbox
from tests.integration.test_local_stack import eventually

pytestmark = pytest.mark.integration


def now() -> str:
    return clock.timestamp()


def inbox_for(emulator: Any, topic_arn: str) -> str:
    return subscribe_inbox(emulator("sqs"), emulator("sns"), topic_arn, prefix="it-alerts")


def received(emulator: Any, url: str) -> list[dict[str, Any]]:
    return drain(emulator("sqs"), url)


def test_events_are_stored_checked_alerted_and_archived(
    api: str, stack: dict[str, Any], emulator: Any, token_for: Any
) -> None:
    headers = {"Authorization": f"Bearer {token_for('it-telemetry@example.com')}"}
    alerts_inbox = inbox_for(emulator, stack["resources"]["AnomalyAlertsTopicArn"])
    user, source = f"u-{uuid.uuid4().hex[:8]}", f"host-{uuid.uuid4().hex[:6]}"
    events: list[dict[str, Any]] = [
        {"event_type": "user_activity", "user_id": user, "activity_type": "login",
         "timestamp": now()},
        {"event_type": "system_metric", "source": source, "metric_name": "cpu_usage",
         "value": 97.5, "timestamp": now()},
        {"event_type": "transaction", "transaction_id": uuid.uuid4().hex, "user_id": user,
         "amount": 12_500, "currency": "EUR", "timestamp": now()},
        {"event_type": "transaction", "user_id": user, "amount": -3, "currency": "EUR",
         "timestamp": now()},
    ]  # fmt: skip
    response = requests.post(f"{api}/events", json={"events": events}, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert [r["accepted"] for r in body["results"]] == [True, True, True, False]
    assert body["results"][3]["reason"]

    seen: list[dict[str, Any]] = []

    def alerts() -> list[dict[str, Any]]:
        """The fraud alert (amount over 10,000) and the CPU alert (97.5 > 95: critical)."""
        seen.extend(received(emulator, alerts_inbox))
        mine = [a for a in seen if user in json.dumps(a) or source in json.dumps(a)]
        return mine if len(mine) >= 2 else []

    mine = eventually(alerts, timeout=30)
    assert {a["severity"] for a in mine} <= {"high", "critical"}

    s3 = emulator("s3")
    bucket = stack["environment"]["DATA_LAKE_BUCKET_NAME"]

    def archived() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="telemetry/").get("Contents", [])
        hits = []
        for obj in listed:
            data = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if user.encode() in data:
                hits.append(obj["Key"])
        return hits

    [key] = eventually(archived, timeout=30)
    assert key.startswith("telemetry/year=") and "/hour=" in key and key.endswith(".jsonl.gz")


def test_a_malformed_record_on_the_stream_is_quarantined_with_its_reason(
    stack: dict[str, Any], emulator: Any
) -> None:
    marker = uuid.uuid4().hex
    emulator("kinesis").put_record(
        StreamName=stack["environment"]["TELEMETRY_STREAM_NAME"],
        Data=f'{{"event_type": "mystery", "marker": "{marker}"'.encode(),  # broken JSON
        PartitionKey=marker,
    )
    sqs = emulator("sqs")
    url = stack["resources"]["TelemetryQuarantineQueueUrl"]

    def quarantined() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        found = []
        for message in messages:
            text = message["Body"]
            if marker in text or marker in _decoded(text):
                found.append(json.loads(text))
        return found

    [entry] = eventually(quarantined, timeout=30)
    assert "reason" in json.dumps(entry)


def _decoded(body: str) -> str:
    try:
        data = json.loads(body)
        return base64.b64decode(str(data.get("data", ""))).decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return ""
