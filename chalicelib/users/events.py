"""User domain events out to SNS and onboarding tasks out to SQS.

Messages carry an `event_id` so that consumers, which see every message at least once, can
drop duplicates; `event_type` is also a message attribute so subscriptions can filter on it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.core import aws
from chalicelib.core.settings import Settings
from chalicelib.users.model import public_view

ONBOARDING_TASK = "setup_user_profile"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _envelope(event_type: str, **payload: Any) -> tuple[str, dict[str, Any]]:
    event_id = str(uuid.uuid4())
    body = {"event_type": event_type, "event_id": event_id, "occurred_at": _now(), **payload}
    attributes = {"event_type": {"DataType": "String", "StringValue": event_type}}
    return json.dumps(body, separators=(",", ":")), attributes


class AwsUserEventPublisher:
    def __init__(self, settings: Settings, client: Callable[[str], Any] = aws.client) -> None:
        self._settings = settings
        self._client = client

    def user_created(self, user: dict[str, Any]) -> None:
        self._publish(
            self._settings.user_created_topic_name, "user-created", user=public_view(user)
        )

    def user_updated(self, user: dict[str, Any], changed_fields: list[str]) -> None:
        self._publish(
            self._settings.user_updated_topic_name,
            "user-updated",
            user=public_view(user),
            changed_fields=changed_fields,
        )

    def onboarding_requested(self, user: dict[str, Any]) -> None:
        body, attributes = _envelope(
            ONBOARDING_TASK, task=ONBOARDING_TASK, user_id=user["user_id"], email=user["email"]
        )
        self._client("sqs").send_message(
            QueueUrl=aws.queue_url(self._settings.onboarding_queue_name),
            MessageBody=body,
            MessageAttributes=attributes,
        )

    def _publish(self, topic_name: str, event_type: str, **payload: Any) -> None:
        body, attributes = _envelope(event_type, **payload)
        self._client("sns").publish(
            TopicArn=aws.topic_arn(topic_name), Message=body, MessageAttributes=attributes
        )
