"""The emulator's S3 object writes, raced on threads as the local stack's server runs them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from local.fidelity import serial_s3_object_writes

BUCKET, KEY = "race", "uploads/one.jpg"


@pytest.fixture
def notified_bucket() -> Iterator[Any]:
    """A bucket whose PUTs notify a queue: moto reads the new object's ETag for the event."""
    with mock_aws():
        s3, sqs = boto3.client("s3", region_name="us-east-1"), boto3.client("sqs", "us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        queue = sqs.create_queue(QueueName="uploads")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
        yield s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def delete_during_each_notification(
    monkeypatch: pytest.MonkeyPatch, backend: Any
) -> list[threading.Thread]:
    """The interleaving that failed on the local stack, made certain: while PutObject builds
    its event notification, another thread deletes the key (waited for a moment: with the
    lock it must wait for the PUT instead)."""
    from moto.s3 import models

    send_event = models.notifications.send_event
    deletes: list[threading.Thread] = []

    def with_a_delete_meanwhile(*args: Any, **kwargs: Any) -> Any:
        other = threading.Thread(target=backend.delete_object, args=(BUCKET, KEY))
        deletes.append(other)
        other.start()
        other.join(timeout=0.2)
        return send_event(*args, **kwargs)

    monkeypatch.setattr(models.notifications, "send_event", with_a_delete_meanwhile)
    return deletes


def test_a_put_whose_key_is_deleted_meanwhile_still_succeeds(
    notified_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial_s3_object_writes()
    deletes = delete_during_each_notification(monkeypatch, notified_bucket)
    for n in range(3):
        notified_bucket.put_object(BUCKET, KEY, b"x" * (1024 + n))
    for delete in deletes:
        delete.join()  # each ran once its PUT was done
