"""The local event runtime on its own, with a fixture app and moto in process: batching,
the Lambda event shape, partial batch failures (honoured only where the mapping reports item
failures, ignored loudly where it does not, as Chalice deploys it), redelivery and the
dead-letter queue."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.events.core import EventRuntime, Invocation, reported_identifiers
from local.events.schedules import ScheduledJob
from local.events.sqs import lambda_record
from tests.fixtures import event_app
from tests.unit.runtime_helpers import IN_PROCESS, REGION


def in_process_client(service: str) -> Any:
    return boto3.client(service, region_name=REGION, config=IN_PROCESS)


@pytest.fixture
def queues(stage_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        dlq = sqs.create_queue(QueueName="fixture-tasks-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        main = sqs.create_queue(
            QueueName="fixture-tasks",
            Attributes={
                "VisibilityTimeout": "2",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 3}
                ),
            },
        )["QueueUrl"]
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="fixture-topic")
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=event_app.BUCKET)
        event_app.create_streams(in_process_client)
        event_app.reset()
        yield {"main": main, "dlq": dlq, "topic": topic["TopicArn"]}


Started = tuple[EventRuntime, list[Invocation]]


@pytest.fixture
def start_runtime(queues: dict[str, str]) -> Iterator[Callable[..., Started]]:
    """Starts the runtime for the fixture app, with `options` for EventRuntime; stops it after
    the test."""
    started: list[EventRuntime] = []

    def start(**options: Any) -> Started:
        seen: list[Invocation] = []
        events = EventRuntime(
            event_app.app,
            in_process_client,
            REGION,
            on_invocation=seen.append,
            idle_wait_seconds=1,
            async_retry_seconds=0,
            **options,
        )
        started.append(events)
        events.start()
        assert events.wait_until_ready()
        return events, seen

    yield start
    for events in started:
        events.stop()


@pytest.fixture
def runtime(start_runtime: Callable[..., Started]) -> Started:
    """The runtime as the local stack starts it: no mapping reports item failures."""
    return start_runtime()


def send(queue_url: str, *tasks: str) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    for task in tasks:
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=json.dumps({"task": task}),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "fixture"}},
        )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Polls a condition: the deadline bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def handled_tasks() -> list[str]:
    return [json.loads(r["body"])["task"] for batch in event_app.batches for r in batch]


def queue_depth(url: str) -> int:
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def test_every_message_is_handled_in_batches_of_at_most_three(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    send(queues["main"], *[f"t{i}" for i in range(7)])
    wait_for(lambda: set(handled_tasks()) == {f"t{i}" for i in range(7)})
    assert all(1 <= len(batch) <= 3 for batch in event_app.batches)
    for batch in event_app.batches:
        assert len({r["messageId"] for r in batch}) == len(batch)
    wait_for(lambda: queue_depth(queues["main"]) == 0)


def test_records_have_lambdas_shape(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    send(queues["main"], "shape")
    wait_for(lambda: bool(event_app.batches))
    [record] = event_app.batches[0]
    assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == REGION
    assert record["eventSourceARN"].endswith(":fixture-tasks")
    assert json.loads(record["body"]) == {"task": "shape"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["kind"]["stringValue"] == "fixture"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert record["messageId"] and record["receiptHandle"] and record["md5OfBody"]


def test_partial_failure_redelivers_only_the_failed_message_then_dead_letters_it(
    start_runtime: Callable[..., Started], queues: dict[str, str]
) -> None:
    """A mapping with ReportBatchItemFailures (named, as a CloudFormation merge could add it)."""
    runtime = start_runtime(report_batch_item_failures=["handle_tasks"])
    event_app.behaviour["fail_bodies"] = {"poison"}
    send(queues["main"], "good-1", "poison", "good-2")
    wait_for(lambda: queue_depth(queues["dlq"]) == 1, timeout=30)
    tasks = handled_tasks()
    assert tasks.count("good-1") == 1 and tasks.count("good-2") == 1
    assert tasks.count("poison") == 3  # maxReceiveCount, then the DLQ
    dead = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=queues["dlq"])
    assert json.loads(dead["Messages"][0]["Body"]) == {"task": "poison"}
    _, seen = runtime
    assert any(inv.outcome.startswith("partial: 1 of") for inv in seen)
    assert not any("ignored" in inv.outcome for inv in seen)


def test_batch_item_failures_are_ignored_without_report_batch_item_failures(
    runtime: Started, queues: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """As in AWS on a mapping Chalice deployed: the answer is a success, the whole batch is
    deleted, and the failed message is lost; the runtime says so."""
    caplog.set_level(logging.WARNING, logger="local.events")
    event_app.behaviour["fail_bodies"] = {"poison"}
    send(queues["main"], "good-1", "poison", "good-2")
    _, seen = runtime
    wait_for(lambda: sorted(handled_tasks()) == ["good-1", "good-2", "poison"])
    # Deleted, not merely hidden: the count includes the messages in flight.
    wait_for(lambda: queue_depth(queues["main"]) == 0)
    [poison_id] = [
        r["messageId"]
        for batch in event_app.batches
        for r in batch
        if json.loads(r["body"])["task"] == "poison"
    ]
    [ignored] = [inv for inv in seen if inv.failed_ids]
    assert ignored.outcome == (
        "ok, but batchItemFailures ignored: 1 message would be lost in AWS "
        "(the mapping has no ReportBatchItemFailures)"
    )
    assert ignored.failed_ids == [poison_id]
    assert not any(inv.outcome.startswith("partial") for inv in seen)
    assert f"handle_tasks returned batchItemFailures ['{poison_id}']" in caplog.text
    assert "in AWS 1 message would be lost" in caplog.text
    assert queue_depth(queues["dlq"]) == 0
    assert handled_tasks().count("poison") == 1  # never delivered again


def test_a_crashing_handler_loses_nothing(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    event_app.behaviour["raise_times"] = 1
    send(queues["main"], "a", "b")
    _, seen = runtime
    # A raising invocation deletes nothing: an empty queue means each message was handled
    # again, successfully, after its visibility timeout.
    wait_for(lambda: len(seen) >= 2 and queue_depth(queues["main"]) == 0)
    crashed = {json.loads(r["body"])["task"] for r in event_app.batches[0]}
    assert crashed and all(handled_tasks().count(task) >= 2 for task in crashed)
    assert seen[0].outcome.startswith("error: RuntimeError")
    assert sorted(seen[0].failed_ids) and seen[-1].outcome == "ok"
    assert queue_depth(queues["dlq"]) == 0


def test_every_invocation_is_logged_and_every_source_is_delivered(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    events, seen = runtime
    send(queues["main"], "logged")
    wait_for(lambda: bool(seen))
    line = json.loads(seen[0].as_log_line())
    assert {"handler", "source", "batch_size", "duration_ms", "outcome"} <= set(line)
    assert (line["handler"], line["source"], line["batch_size"]) == ("handle_tasks", "aws:sqs", 1)
    # The fixture app registers every kind of source Chalice has (S3 and EventBridge too).
    assert events.unsupported == []


def test_which_mappings_report_item_failures() -> None:
    """Chalice never sets ReportBatchItemFailures: none do unless told."""

    def reporting(**options: Any) -> list[bool]:
        app = SimpleNamespace(event_sources=[])
        events = EventRuntime(app, in_process_client, REGION, **options)
        return [events.reports_item_failures(name) for name in ("handle_tasks", "handle_table")]

    assert reporting() == [False, False]
    assert reporting(report_batch_item_failures=False) == [False, False]
    assert reporting(report_batch_item_failures=True) == [True, True]
    assert reporting(report_batch_item_failures=["handle_table"]) == [False, True]
    assert reporting(report_batch_item_failures=("handle_tasks",)) == [True, False]
    assert reporting(report_batch_item_failures="handle_tasks") == [True, False]  # one name
    assert reporting(report_batch_item_failures=[]) == [False, False]


def test_a_reporting_mapping_of_no_batch_handler_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = ["handle_tasks", "handle_topic", "typo"]
    events = EventRuntime(
        event_app.app, in_process_client, REGION, handlers=[], report_batch_item_failures=names
    )
    events.start()
    events.stop()
    assert "report_batch_item_failures names no SQS or stream handler: handle_topic, typo" in (
        caplog.text
    )


def test_an_unknown_kind_of_source_is_named(caplog: pytest.LogCaptureFixture) -> None:
    class NewEventConfig:  # a kind of source a later Chalice might add
        name = "future"

    app = SimpleNamespace(event_sources=[NewEventConfig()])
    events = EventRuntime(app, in_process_client, REGION, on_invocation=lambda inv: None)
    events.start()
    events.stop()
    assert events.unsupported == ["future (NewEventConfig)"]
    assert "not delivered locally yet: future (NewEventConfig)" in caplog.text


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}, ["m1", "m2"]),
        ({"batchItemFailures": []}, []),
        (None, []),
        ("ok", []),
        # No identifier: it names no message of the batch, so Lambda fails the whole batch.
        ({"batchItemFailures": [{"nope": 1}, "junk"]}, ["", ""]),
    ],
)
def test_reported_identifiers(result: Any, expected: list[str]) -> None:
    assert reported_identifiers(result) == expected


def test_lambda_record_of_a_bare_message() -> None:
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}"}
    record = lambda_record(message, "arn:aws:sqs:us-east-1:1:q", REGION)
    assert record["attributes"] == {} and record["messageAttributes"] == {}


# --- SNS ----------------------------------------------------------------------------------


def publish(topic_arn: str, message: str) -> None:
    boto3.client("sns", region_name=REGION).publish(
        TopicArn=topic_arn,
        Message=message,
        Subject="fixture",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "fixture"}},
    )


def subscribed(runtime: tuple[EventRuntime, list[Invocation]], topic_arn: str) -> bool:
    subscriptions = boto3.client("sns", region_name=REGION).list_subscriptions_by_topic(
        TopicArn=topic_arn
    )["Subscriptions"]
    return any(s["Endpoint"].endswith(":local-events-handle_topic") for s in subscriptions)


def test_every_notification_reaches_the_handler_in_lambdas_shape(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    other = sqs.create_queue(QueueName="another-subscriber")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])
    boto3.client("sns", region_name=REGION).subscribe(
        TopicArn=queues["topic"], Protocol="sqs", Endpoint=other_arn["Attributes"]["QueueArn"]
    )
    wait_for(lambda: subscribed(runtime, queues["topic"]))
    publish(queues["topic"], "first")
    publish(queues["topic"], "second")
    wait_for(lambda: len(event_app.notifications) == 2)
    assert all(len(n["Records"]) == 1 for n in event_app.notifications)
    record = event_app.notifications[0]["Records"][0]
    assert record["EventSource"] == "aws:sns" and record["EventSubscriptionArn"]
    sns = record["Sns"]
    assert sns["TopicArn"] == queues["topic"] and sns["Subject"] == "fixture"
    assert sns["MessageAttributes"]["kind"] == {"Type": "String", "Value": "fixture"}
    assert {n["Records"][0]["Sns"]["Message"] for n in event_app.notifications} == {
        "first",
        "second",
    }
    fanned_out = sqs.receive_message(QueueUrl=other, MaxNumberOfMessages=10)["Messages"]
    assert len(fanned_out) == 2  # every subscriber gets every message


def test_a_failing_notification_is_retried_then_kept_not_dropped(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    event_app.behaviour["sns_raise_times"] = 1
    wait_for(lambda: subscribed(runtime, queues["topic"]))
    publish(queues["topic"], "flaky")
    wait_for(lambda: len(event_app.notifications) == 2)  # failed once, then delivered
    _, seen = runtime
    wait_for(lambda: len([i for i in seen if i.source == "aws:sns"]) == 2)
    outcomes = [i.outcome for i in seen if i.source == "aws:sns"]
    assert outcomes[0].startswith("error: RuntimeError") and "retried" in outcomes[0]
    assert outcomes[1] == "ok"

    event_app.behaviour["sns_raise_times"] = 99
    publish(queues["topic"], "poison")
    sqs = boto3.client("sqs", region_name=REGION)
    failed = sqs.get_queue_url(QueueName="local-events-handle_topic-failed")["QueueUrl"]
    wait_for(lambda: queue_depth(failed) == 1, timeout=30)
    kept = json.loads(sqs.receive_message(QueueUrl=failed)["Messages"][0]["Body"])
    assert kept["Message"] == "poison"
    poison_attempts = [
        n for n in event_app.notifications if n["Records"][0]["Sns"]["Message"] == "poison"
    ]
    assert len(poison_attempts) == 3


# --- schedules ----------------------------------------------------------------------------


def test_a_job_fires_now_with_eventbridges_event(
    runtime: tuple[EventRuntime, list[Invocation]],
) -> None:
    events, _ = runtime
    invocation = events.fire("hourly")
    assert invocation.outcome == "ok" and invocation.source == "aws.events"
    [tick] = event_app.ticks
    assert tick["detail-type"] == "Scheduled Event" and tick["source"] == "aws.events"
    assert tick["resources"][0].startswith("arn:aws:events:us-east-1:")
    assert tick["account"] == "123456789012" and tick["detail"] == {}
    with pytest.raises(KeyError, match="hourly"):
        events.fire("no-such-job")


def test_a_failing_job_is_tried_three_times(
    runtime: tuple[EventRuntime, list[Invocation]],
) -> None:
    events, _ = runtime
    event_app.behaviour["tick_raise_times"] = 99
    last = events.fire("hourly", retry_delay=0)
    assert len(event_app.ticks) == 3 and "given up" in last.outcome
    event_app.behaviour["tick_raise_times"] = 1
    assert events.fire("hourly", retry_delay=0).outcome == "ok"


def test_a_job_fires_by_its_expression(queues: dict[str, str]) -> None:
    """rate(1 hour), on a clock that the waits move forward: three runs, an hour apart."""
    start = datetime(2026, 11, 26, 1, 30, tzinfo=UTC)
    now = [start]
    fired: list[datetime] = []
    events = EventRuntime(
        event_app.app,
        lambda service: boto3.client(service, region_name=REGION),
        REGION,
        on_invocation=lambda inv: None,
    )
    original_fire = events.fire

    def fire(name: str, at: datetime | None = None, retry_delay: float = 1.0) -> Invocation:
        fired.append(at)  # type: ignore[arg-type]
        if len(fired) == 3:
            events.stopping.set()
        return original_fire(name, at=at, retry_delay=0)

    def wait(seconds: float) -> bool:
        now[0] += timedelta(seconds=seconds)
        return events.stopping.is_set()

    events.fire = fire  # type: ignore[method-assign]
    source = events.scheduled_jobs()["hourly"]
    ScheduledJob(events, source, clock=lambda: now[0], wait=wait).run()
    assert fired == [start + timedelta(hours=h) for h in (1, 2, 3)]
    assert [t["time"] for t in event_app.ticks] == [
        "2026-11-26T02:30:00Z", "2026-11-26T03:30:00Z", "2026-11-26T04:30:00Z",
    ]  # fmt: skip
