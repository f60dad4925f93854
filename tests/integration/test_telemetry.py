"""Telemetry end to end on the local stack: POST /events -> Kinesis -> the processor ->
tables, alerts (SNS), data lake (S3); a malformed record put on the stream is quarantined.
A user sends their own events; system metrics come from the producers' machine identity, with
a token from the emulator's OAuth 2.0 endpoint (`make token MACHINE=1`)."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from chalicelib.telemetry.pseudonyms import user_digest
from local.inbox import drain, subscribe_inbox
from tests.integration.test_local_stack import eventually

pytestmark = pytest.mark.integration


def now() -> str:
    return clock.timestamp()


def inbox_for(emulator: Any, topic_arn: str) -> str:
    return subscribe_inbox(emulator("sqs"), emulator("sns"), topic_arn, prefix="it-alerts")


def received(emulator: Any, url: str) -> list[dict[str, Any]]:
    return drain(emulator("sqs"), url)


def machine_token(stack: dict[str, Any]) -> str:
    """`make token MACHINE=1`: the client-credentials grant at the emulator's token endpoint."""
    import subprocess
    import sys

    from infra.paths import PROJECT_DIR

    command = [sys.executable, "-m", "local.token", "--machine"]
    command += ["--state-dir", str(stack["state_dir"])]
    done = subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_events_are_stored_checked_alerted_and_archived(
    api: str, stack: dict[str, Any], emulator: Any, token_for: Any
) -> None:
    headers = {"Authorization": f"Bearer {token_for('it-telemetry@example.com')}"}
    producer = {"Authorization": f"Bearer {machine_token(stack)}"}
    alerts_inbox = inbox_for(emulator, stack["resources"]["AnomalyAlertsTopicArn"])
    source, txn = f"host-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    events: list[dict[str, Any]] = [  # the caller's own: no user_id
        {"event_type": "user_activity", "activity_type": "login", "timestamp": now()},
        {"event_type": "transaction", "transaction_id": txn, "amount": 12_500,
         "currency": "EUR", "timestamp": now()},
        {"event_type": "transaction", "amount": -3, "currency": "EUR", "timestamp": now()},
    ]  # fmt: skip
    response = requests.post(f"{api}/events", json={"events": events}, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["accepted"] for r in body["results"]] == [True, True, False]
    assert body["results"][2]["reason"]

    metric = {"event_type": "system_metric", "source": source, "metric_name": "cpu_usage",
              "value": 97.5, "timestamp": now()}  # fmt: skip
    refused = requests.post(f"{api}/events", json={"events": [metric]}, headers=headers, timeout=10)
    assert refused.status_code == 403, refused.text  # a user's token pages nothing
    response = requests.post(
        f"{api}/events", json={"events": [metric]}, headers=producer, timeout=10
    )
    assert response.status_code == 202, response.text
    on_users_route = requests.get(f"{api}/orders", headers=producer, timeout=10)
    assert on_users_route.status_code == 403, on_users_route.text  # nobody's user
    user = _sub(headers)  # the caller, whose events these are

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

    # The lake names the user by a pseudonym (the pseudonyms table maps it), never by the id.
    def pseudonym() -> str | None:
        item = emulator("dynamodb").get_item(
            TableName=stack["environment"]["TELEMETRY_PSEUDONYMS_TABLE_NAME"],
            Key={"user_digest": {"S": user_digest(user)}},
        )
        return item.get("Item", {}).get("pseudonym", {}).get("S")

    alias = eventually(pseudonym, timeout=30)

    def archived() -> list[tuple[str, bytes]]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="telemetry/").get("Contents", [])
        hits = []
        for obj in listed:
            data = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if alias.encode() in data:
                hits.append((obj["Key"], data))
        return hits

    [(key, data)] = eventually(archived, timeout=30)
    assert key.startswith("telemetry/year=") and "/hour=" in key and key.endswith(".jsonl.gz")
    assert user.encode() not in data and txn.encode() not in data  # id and transaction id
    stored = emulator("dynamodb").get_item(
        TableName=stack["environment"]["TRANSACTIONS_TABLE_NAME"],
        Key={"pk": {"S": f"TXN#{user}#{txn}"}},  # the transaction id within its owner's
    )
    assert stored["Item"]["user_id"] == {"S": user}


def test_one_user_cannot_put_more_than_a_minutes_bytes_on_the_stream(
    api: str, token_for: Any
) -> None:
    """A request of 500 events of 4 KB each (2 MB, all for the user's one shard) is more
    than the user's bytes a minute (`TelemetryEventBytesPerMinute`): 413, nothing put or
    counted, so the user's next, ordinary request is taken."""
    headers = {"Authorization": f"Bearer {token_for('it-flood@example.com')}"}
    details = {"pad": "x" * 4000}
    flood = [{"event_type": "user_activity", "activity_type": "view", "details": details,
              "timestamp": now()} for _ in range(500)]  # fmt: skip
    refused = requests.post(f"{api}/events", json={"events": flood}, headers=headers, timeout=30)
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "payload_too_large"
    one = flood[:1]
    taken = requests.post(f"{api}/events", json={"events": one}, headers=headers, timeout=10)
    assert taken.status_code == 202, taken.text


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


def _sub(headers: dict[str, str]) -> str:
    import jwt

    token = headers["Authorization"].split(" ", 1)[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])
