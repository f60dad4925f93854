"""The local event runtime on its own, with a fixture app and moto in process: batching,
the Lambda event shape, partial batch failures, redelivery and the dead-letter queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.events import EventRuntime, Invocation, failed_message_ids, lambda_record
from tests.fixtures import event_app

REGION = "us-east-1"


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
        event_app.reset()
        yield {"main": main, "dlq": dlq}


@pytest.fixture
def runtime(queues: dict[str, str]) -> Iterator[tuple[EventRuntime, list[Invocation]]]:
    seen: list[Invocation] = []
    events = EventRuntime(
        event_app.app,
        lambda service: boto3.client(service, region_name=REGION),
        REGION,
        on_invocation=seen.append,
        idle_wait_seconds=0,
    )
    events.start()
    yield events, seen
    events.stop()


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
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
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


def test_every_invocation_is_logged_and_unsupported_sources_are_named(
    runtime: tuple[EventRuntime, list[Invocation]], queues: dict[str, str]
) -> None:
    events, seen = runtime
    send(queues["main"], "logged")
    wait_for(lambda: bool(seen))
    line = json.loads(seen[0].as_log_line())
    assert {"handler", "source", "batch_size", "duration_ms", "outcome"} <= set(line)
    assert (line["handler"], line["source"], line["batch_size"]) == ("handle_tasks", "aws:sqs", 1)
    assert events.unsupported == ["handle_topic (SNSEventConfig)"]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}, {"m1", "m2"}),
        ({"batchItemFailures": []}, set()),
        (None, set()),
        ("ok", set()),
        ({"batchItemFailures": [{"nope": 1}, "junk"]}, set()),
    ],
)
def test_failed_message_ids(result: Any, expected: set[str]) -> None:
    assert failed_message_ids(result) == expected


def test_lambda_record_of_a_bare_message() -> None:
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}"}
    record = lambda_record(message, "arn:aws:sqs:us-east-1:1:q", REGION)
    assert record["attributes"] == {} and record["messageAttributes"] == {}
