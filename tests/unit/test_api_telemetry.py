"""Telemetry through the app's own entry points: `POST /events` (Chalice's test client, the
authorizer included) and the Kinesis handler, against moto provisioned like the real stack."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest

from tests.unit.test_telemetry_support import activity, metric, records, transaction


def test_events_need_a_signed_in_caller(api: Any) -> None:
    response = api.as_(None).post("/events", {"events": [activity(1)]})
    assert response.status_code == 401


def test_post_events_answers_per_event_and_puts_the_valid_ones_on_the_stream(
    api: Any, aws: dict[str, str]
) -> None:
    bad = {**metric(2), "value": "high"}
    response = api.post("/events", {"events": [activity(1), bad, transaction(3)]})
    assert response.status_code == 202, response.body
    body = response.json_body
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["accepted"] for r in body["results"]] == [True, False, True]
    assert "value" in body["results"][1]["reason"]
    kinesis = boto3.client("kinesis")
    stream = aws["TelemetryStreamName"]
    put = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        put += [
            json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator)["Records"]
        ]
    assert sorted(e["event_id"] for e in put) == sorted(
        r["event_id"] for r in body["results"] if r["accepted"]
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"events": []}, 400),
        ({"events": [{}] * 501}, 400),
        ([], 400),
        ({"events": [{"x": 1}]}, 400),
    ],
)
def test_bad_batches_are_4xx(api: Any, body: Any, status: int) -> None:
    response = api.post("/events", body)
    assert response.status_code == status, response.body
    assert response.json_body["error"]["code"] in ("bad_request", "validation_failed")


def test_a_batch_of_500_events_fits_the_body_limit_and_is_held_to_the_bytes_quota(
    api: Any,
) -> None:
    """500 events, each with details close to their 4 KiB limit: about 2 MB. The body limit
    (4 MiB on /events) takes it; the ingest refuses it whole (413: four times a caller's
    bytes a minute on dev), nothing put or counted. 500 ordinary events are taken."""
    events = [activity(n, details={"page": "/products/" + "x" * 3900}) for n in range(500)]
    assert len(json.dumps({"events": events})) > 1_900_000
    response = api.post("/events", {"events": events})
    assert response.status_code == 413, response.body
    assert response.json_body["error"]["code"] == "payload_too_large"
    [detail] = response.json_body["error"]["details"]
    assert detail["issue"].startswith("event-bytes: ")
    quotas = boto3.client("dynamodb").scan(TableName=os.environ["QUOTAS_TABLE_NAME"])["Items"]
    assert not [q for q in quotas if "#event" in q["id"]["S"]]
    response = api.post("/events", {"events": [activity(n) for n in range(500)]})
    assert response.status_code == 202, response.body
    assert response.json_body["accepted"] == 500


def test_the_kinesis_handler_stores_and_archives_a_batch(client: Any, aws: dict[str, str]) -> None:
    batch = records([activity(1), metric(2), transaction(3)])
    for record in batch:
        record["eventSourceARN"] = aws["TelemetryStreamArn"]
    answer = client.lambda_.invoke("process_telemetry", {"Records": batch}).payload
    assert answer == {"batchItemFailures": []}
    listed = boto3.client("s3").list_objects_v2(Bucket="serverless-app-dev-data-lake")
    [archive] = listed["Contents"]
    assert archive["Key"].startswith("telemetry/year=")


# --- who may send what, and how much ------------------------------------------------------


def on_stream(aws: dict[str, str]) -> list[dict[str, Any]]:
    kinesis = boto3.client("kinesis")
    stream = aws["TelemetryStreamName"]
    found = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found += [json.loads(r["Data"]) for r in page["Records"]]
            iterator = page["NextShardIterator"] if page["Records"] else None
    return found


@pytest.fixture
def two_users(accounts: Any) -> tuple[Any, Any, str, str]:
    victim, victim_token = accounts.register(email="victim@example.com")
    attacker, attacker_token = accounts.register(email="attacker@example.com")
    return victim_token, attacker_token, victim["user_id"], attacker["user_id"]


def test_a_user_cannot_send_events_as_another_user(
    api: Any, aws: dict[str, str], two_users: tuple[Any, Any, str, str]
) -> None:
    _, attacker_token, victim_id, _ = two_users
    attacker = api.as_(attacker_token)
    response = attacker.post("/events", {"events": [transaction(1, user=victim_id, amount=50_000)]})
    assert response.status_code == 403, response.body
    error = response.json_body["error"]
    assert error["code"] == "forbidden" and error["details"][0]["field"] == "events[0].user_id"
    response = attacker.post("/events", {"events": [metric(2, value=99.0)]})  # page a critical
    assert response.status_code == 403, response.body
    assert on_stream(aws) == []


def test_a_users_events_default_to_the_caller_and_are_stamped(
    api: Any, aws: dict[str, str], two_users: tuple[Any, Any, str, str]
) -> None:
    _, attacker_token, _, attacker_id = two_users
    event = {k: v for k, v in activity(1).items() if k != "user_id"}
    response = api.as_(attacker_token).post("/events", {"events": [event]})
    assert response.status_code == 202, response.body
    [sent] = on_stream(aws)
    assert sent["user_id"] == sent["submitted_by"] == attacker_id
    assert sent["submitted_as"] == "user"


def test_system_metrics_come_from_the_machine_identity(api: Any, aws: dict[str, str]) -> None:
    from tests.unit.machine_tokens import machine_token

    producer = api.as_(machine_token(aws))
    response = producer.post("/events", {"events": [metric(1), metric(2, value=99.0)]})
    assert response.status_code == 202, response.body
    assert {(e["submitted_by"], e["submitted_as"]) for e in on_stream(aws)} == {
        (aws["TelemetryMachineClientId"], "machine")
    }
    # nobody's user: no activity, no transaction, not even under its own id
    own = activity(3, user_id=aws["TelemetryMachineClientId"])
    assert producer.post("/events", {"events": [own]}).status_code == 403


def test_the_same_transaction_id_of_two_users_stays_two_transactions(
    api: Any, client: Any, aws: dict[str, str], two_users: tuple[Any, Any, str, str]
) -> None:
    """The attack: overwriting another user's transaction by sending its id (as yourself)."""
    victim_token, attacker_token, victim_id, attacker_id = two_users
    shared = {"transaction_id": "order-1001"}
    victims = {**transaction(1, user=victim_id, amount=20), **shared}
    attackers = {**transaction(2, user=attacker_id, amount=9_999), **shared}
    assert api.as_(victim_token).post("/events", {"events": [victims]}).status_code == 202
    assert api.as_(attacker_token).post("/events", {"events": [attackers]}).status_code == 202
    batch = records(on_stream(aws))  # as the ingest stamped them (`records` keeps a stamp)
    for r in batch:
        r["eventSourceARN"] = aws["TelemetryStreamArn"]
    answer = client.lambda_.invoke("process_telemetry", {"Records": batch}).payload
    assert answer == {"batchItemFailures": []}
    items = boto3.client("dynamodb").scan(TableName="serverless-app-dev-transactions")["Items"]
    assert {(i["pk"]["S"], i["amount"]["N"]) for i in items} == {
        (f"TXN#{victim_id}#order-1001", "20"),
        (f"TXN#{attacker_id}#order-1001", "9999"),
    }


def test_a_users_events_per_minute_reach_the_quota_then_the_next_minute_works(
    api: Any, aws: dict[str, str], two_users: tuple[Any, Any, str, str], app_clock: Any
) -> None:
    """TelemetryEventsPerMinute is 600 on dev: the fourth batch of 200 in a minute is a 429
    in the API's error shape, with Retry-After, and puts nothing on the stream."""
    _, token, _, user_id = two_users
    sender = api.as_(token)
    app_clock.advance(seconds=60 - app_clock().second - 45)  # 45 s left in the minute
    batch = {"events": [activity(n, user_id=user_id, event_id=f"q-{n}") for n in range(200)]}
    statuses = [sender.post("/events", batch).status_code for _ in range(4)]
    assert statuses == [202] * 3 + [429]
    refused = sender.post("/events", batch)
    assert refused.status_code == 429
    assert refused.json_body["error"]["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 45
    assert len(on_stream(aws)) == 600
    app_clock.advance(minutes=1)
    assert sender.post("/events", batch).status_code == 202
    assert len(on_stream(aws)) == 800


def test_a_throttled_quotas_table_is_a_503_to_retry_and_puts_nothing(
    api: Any, aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters cannot be taken (DynamoDB throttles): the events are not put, and the
    client hears a 503 with Retry-After (`core.http.busy_aws_as_503`), not a 500."""
    from botocore.exceptions import ClientError

    from chalicelib.telemetry import telemetry_ingest

    class Throttled:
        def __init__(self) -> None:
            self._real = boto3.client("dynamodb")

        def transact_write_items(self, **kwargs: Any) -> Any:
            error = {"Code": "ThrottlingException", "Message": "slow down"}
            raise ClientError({"Error": error}, "TransactWriteItems")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    monkeypatch.setattr(telemetry_ingest()._quotas, "_client", Throttled)
    response = api.post("/events", {"events": [activity(1)]})
    assert response.status_code == 503, response.body
    assert response.json_body["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert on_stream(aws) == []
