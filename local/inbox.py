"""A queue subscribed to a topic, to read what the app published (tests, `make load`)."""

from __future__ import annotations

import json
import uuid
from typing import Any


def subscribe_inbox(sqs: Any, sns: Any, topic_arn: str, prefix: str = "inbox") -> str:
    """A new queue receiving the topic's messages as published (raw delivery); its URL."""
    url = str(sqs.create_queue(QueueName=f"{prefix}-{uuid.uuid4().hex[:8]}")["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=arn["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    return url


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message waiting in the queue, as JSON, deleted once read."""
    found: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        found += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return found
