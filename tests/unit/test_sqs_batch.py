"""A failed SQS message comes back after a short backoff, not after the queue's visibility
timeout (chalicelib/core/sqs_batch.py), against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from chalicelib.core.sqs_batch import BatchItemsFailed, process_sqs_messages, retry_delay
from local.events.sqs import lambda_record

REGION = "us-east-1"


@pytest.mark.parametrize(
    ("receives", "visibility", "jitter", "expected"),
    [
        (1, 360, 0.0, 5),  # half the first backoff of 10 s at the least
        (1, 360, 0.999, 9),  # all of it at the most (whole seconds, rounded down)
        (2, 360, 0.0, 15),
        (3, 360, 0.5, 67),  # 90 s: 45 + 22.5
        (4, 360, 0.0, 135),
        (5, 360, 0.999, 359),  # 810 s capped by the queue's 360
        (1, 0, 0.5, 0),  # a queue with no visibility timeout
        (40, 43_200, 0.999, 43_178),  # a queue's longest timeout, 12 hours, at the most
    ],
)
def test_the_wait_grows_with_each_receive_up_to_the_queues_timeout(
    receives: int, visibility: int, jitter: float, expected: int
) -> None:
    assert retry_delay(receives, visibility, jitter) == expected


def _message(sqs: Any, url: str, arn: str) -> dict[str, Any]:
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"])[
        "Messages"
    ]
    return lambda_record(message, arn, REGION)


def _visible_in(queue_name: str, body: str) -> float:
    """Seconds until moto shows the message with `body` again."""
    import time

    queue = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[queue_name]
    [message] = [m for m in queue._messages if m.body == body]
    return message.visible_at / 1000 - time.time()


@pytest.mark.parametrize("queue_visibility", [360, 20])
def test_a_failed_message_comes_back_after_its_backoff_and_a_done_one_is_deleted(
    aws: dict[str, str], queue_visibility: int
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(
        QueueName="batch-test", Attributes={"VisibilityTimeout": str(queue_visibility)}
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for body in ("good", "bad"):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    records = [_message(sqs, url, arn), _message(sqs, url, arn)]

    def handle(body: str, receives: int) -> None:
        if json.loads(body) == "bad":
            raise RuntimeError("S3 SlowDown")

    with pytest.raises(BatchItemsFailed):
        process_sqs_messages({"Records": records}, handle, jitter=lambda: 0.999)

    queue = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues["batch-test"]
    assert [m.body for m in queue._messages] == [json.dumps("bad")]
    # 10 s on the first receive; a queue whose own timeout is shorter keeps it
    assert 8 < _visible_in("batch-test", json.dumps("bad")) <= min(10, queue_visibility)


def test_a_failing_visibility_change_loses_nothing(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="batch-test-2", Attributes={"VisibilityTimeout": "360"})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.send_message(QueueUrl=url, MessageBody="bad")
    record = _message(sqs, url, arn)
    real = boto3.client("sqs", region_name=REGION)

    class NoVisibilityChange:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def change_message_visibility_batch(self, **_: Any) -> Any:
            raise RuntimeError("throttled")

    def fail(body: str, receives: int) -> None:
        raise RuntimeError("S3 SlowDown")

    with pytest.raises(BatchItemsFailed):
        process_sqs_messages({"Records": [record]}, fail, client=lambda _: NoVisibilityChange())
    assert 350 < _visible_in("batch-test-2", "bad") <= 360  # the queue's own timeout
