"""The console's actions and figures against moto provisioned like the real stack: test
events reach the app's own sources with a correlation id, a dead-letter queue is redriven,
refusals come before anything is sent, and every kind of resource is counted."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from local.console import actions, figures
from ops.session import Target

PREFIX = "serverless-app-dev-"


@pytest.fixture
def target(aws: dict[str, str]) -> Target:
    return Target("dev")


@pytest.fixture
def sources() -> list[actions.Source]:
    from app import app

    return actions.test_sources(app)


def test_the_sources_are_the_apps_queues_topics_streams_and_buckets(
    sources: list[actions.Source],
) -> None:
    kinds = {s.handler: s.kind for s in sources}
    assert kinds["onboard_users"] == "sqs" and kinds["welcome_new_user"] == "sns"
    assert kinds["process_telemetry"] == "kinesis"
    assert "index_users_for_search" not in kinds  # a table stream: written by the table only
    assert "run_daily_analytics" not in kinds  # a schedule: fired instead
    for source in sources:
        json.loads(source.example())


def test_a_test_message_reaches_the_queue_with_its_correlation_id(
    target: Target, sources: list[actions.Source]
) -> None:
    sent = actions.send_test_event(target, sources, "onboard_users", '{"hello": 1}')
    assert sent["correlation_id"].startswith("console-")
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=f"{PREFIX}onboarding")["QueueUrl"]
    [message] = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(message["Body"]) == {"hello": 1}
    attribute = message["MessageAttributes"]["correlation_id"]["StringValue"]
    assert attribute == sent["correlation_id"]


def test_a_test_record_reaches_the_stream_carrying_its_correlation_id(
    target: Target, sources: list[actions.Source]
) -> None:
    sent = actions.send_test_event(target, sources, "process_telemetry", '{"event_type": "x"}')
    kinesis = boto3.client("kinesis")
    stream = f"{PREFIX}telemetry"
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records += kinesis.get_records(ShardIterator=iterator)["Records"]
    assert [json.loads(r["Data"]) for r in records] == [
        {"event_type": "x", "correlation_id": sent["correlation_id"]}
    ]


@pytest.mark.parametrize(
    ("handler", "body", "why"),
    [
        ("nobody", "{}", "no event source of a handler named 'nobody'"),
        ("onboard_users", "{nope", "not JSON"),
        ("onboard_users", json.dumps({"x": "y" * actions.MAX_BODY_BYTES}), "over 256 KB"),
    ],
)
def test_bad_test_events_are_refused_before_anything_is_sent(
    target: Target, sources: list[actions.Source], handler: str, body: str, why: str
) -> None:
    with pytest.raises(actions.Refused, match=why):
        actions.send_test_event(target, sources, handler, body)
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=f"{PREFIX}onboarding")["QueueUrl"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_a_dead_letter_queue_is_redriven_to_its_source(target: Target) -> None:
    sqs = boto3.client("sqs")
    dlq = sqs.get_queue_url(QueueName=f"{PREFIX}onboarding-dlq")["QueueUrl"]
    source = sqs.get_queue_url(QueueName=f"{PREFIX}onboarding")["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"n": n}))
    done = actions.redrive_queue(target, "onboarding-dlq")
    assert done["ok"] and "3 moved back" in done["summary"], done
    bodies: list[Any] = []
    while batch := sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10).get("Messages"):
        bodies += [json.loads(m["Body"])["n"] for m in batch]
        sqs.delete_message_batch(
            QueueUrl=source,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    assert sorted(bodies) == [0, 1, 2]
    with pytest.raises(actions.Refused, match="no dead-letter or failure queue 'users'"):
        actions.redrive_queue(target, "users")


def test_the_figures_cover_every_kind_and_mark_a_dead_letter_queue_that_holds_messages(
    target: Target,
) -> None:
    sqs = boto3.client("sqs")
    dlq = sqs.get_queue_url(QueueName=f"{PREFIX}welcome-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody="{}")
    boto3.client("s3").put_object(Bucket=f"{PREFIX}uploads", Key="a/b.jpg", Body=b"12345")
    kinds = {k.title: k for k in figures.stack_figures(target, PREFIX)}
    # (in-process moto answers DescribeStream of a table's stream "Not yet implemented"; the
    # emulator's server answers it: tests/integration/test_console.py reads the panel)
    assert not [k.error for k in kinds.values() if k.error and k.title != "Table streams"]
    queues = {row.name: row for row in kinds["Queues"].rows}
    assert queues["welcome-dlq"].alert and queues["welcome-dlq"].figures["visible"] == 1
    assert queues["onboarding-dlq"].tag == "dead-letter" and not queues["onboarding-dlq"].alert
    assert queues["users-stream-failures"].tag == "failures"
    buckets = {row.name: row.figures for row in kinds["Buckets"].rows}
    assert buckets["uploads"] == {"objects": 1, "bytes": 5}
    tables = {row.name for row in kinds["Tables"].rows}
    assert {"users", "orders", "inventory"} <= tables
    assert [row.name for row in kinds["Kinesis streams"].rows] == ["telemetry"]


def test_stream_records_are_counted_once_each_refresh_reading_only_the_new_ones(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinesis = boto3.client("kinesis")
    stream = f"{PREFIX}telemetry"
    for n in range(3):
        kinesis.put_record(StreamName=stream, Data=json.dumps({"n": n}).encode(), PartitionKey="a")
    read: list[int] = []
    client = target.client("kinesis")  # the console's (one per service)
    get_records = client.get_records

    def counted(**kwargs: Any) -> Any:
        answer = get_records(**kwargs)
        read.append(len(answer.get("Records", [])))
        return answer

    monkeypatch.setattr(client, "get_records", counted)
    counts = figures.ShardCounts()

    def telemetry_records() -> Any:
        kinds = {k.title: k for k in figures.stack_figures(target, PREFIX, counts)}
        [row] = kinds["Kinesis streams"].rows
        return row.figures["records"]

    assert telemetry_records() == 3
    assert sum(read) == 3
    assert telemetry_records() == 3  # nothing new: nothing read again
    assert sum(read) == 3
    for n in range(2):
        kinesis.put_record(StreamName=stream, Data=json.dumps({"n": n}).encode(), PartitionKey="b")
    assert telemetry_records() == 5
    assert sum(read) == 5  # only the 2 new records
    monkeypatch.setattr(figures, "MAX_READ_PER_REFRESH", 1)
    for _ in range(3):
        kinesis.put_record(StreamName=stream, Data=b"{}", PartitionKey="c")
    # one GetRecords answer (all 3) reaches the cap: the count may be behind, and says so
    assert telemetry_records() == "≥ 8"
    assert telemetry_records() == 8  # the next refresh finds nothing more
