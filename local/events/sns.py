"""SNS topics (`@app.on_sns_message`): the runtime's queue `local-events-<handler>` is
subscribed to the topic; every message published reaches the handler, one record per
invocation, in Lambda's SNS event shape (retries and the failed queue: async_delivery.py).
"""

from __future__ import annotations

import json
from typing import Any

from local.events.async_delivery import AsyncDelivery
from local.events.core import EventRuntime


class SnsSubscription(AsyncDelivery):
    """A topic's messages, through the runtime's queue subscribed to the topic: one record
    per invocation, in Lambda's SNS event shape."""

    SOURCE = "aws:sns"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._sns = runtime.client("sns")
        self._subscription = ""

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        topic = self._source.topic
        if not topic.startswith("arn:"):
            topic = self._sns.create_topic(Name=topic)["TopicArn"]  # finds the existing one
        self._allow(queue_url, queue_arn, "sns.amazonaws.com", topic)
        self._subscription = self._sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True
        )["SubscriptionArn"]

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        envelope = json.loads(message["Body"])
        return [{"Records": [sns_record(envelope, self._subscription)]}]


def sns_record(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """An SNS notification (as SNS delivers it to SQS) as Lambda puts it in an event."""
    keys = ("Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
            "SignatureVersion", "Signature", "SigningCertUrl", "UnsubscribeUrl")  # fmt: skip
    sns = {key: envelope.get(key) for key in keys}
    sns["SigningCertUrl"] = sns["SigningCertUrl"] or envelope.get("SigningCertURL")
    sns["UnsubscribeUrl"] = sns["UnsubscribeUrl"] or envelope.get("UnsubscribeURL")
    sns["MessageAttributes"] = {
        name: {"Type": value.get("Type"), "Value": value.get("Value")}
        for name, value in (envelope.get("MessageAttributes") or {}).items()
    }
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": sns,
    }
