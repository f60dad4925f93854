"""Telemetry through the app's own entry points: `POST /events` (Chalice's test client, the
authorizer included) and the Kinesis handler, against moto provisioned like the real stack."""

from __future__ import annotations

import json
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


def test_a_batch_of_500_events_fits_the_body_limit(api: Any) -> None:
    """500 events, each with details close to their 4 KiB limit: about 2 MB."""
    events = [activity(n, details={"page": "/products/" + "x" * 3900}) for n in range(500)]
    assert len(json.dumps({"events": events})) > 1_900_000
    response = api.post("/events", {"events": events})
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
