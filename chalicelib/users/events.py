"""User domain events, published from what the users table stored (its stream), never beside
the write: a crash between the write and the publish cannot lose an event, and a registration
that was undone never announced anything.

Each event carries a deterministic `event_id` (`user-created:<user_id>`,
`user-updated:<user_id>:<version>`, `user-deleted:<user_id>`), so the copies that
at-least-once delivery produces (a stream batch retried, SNS delivering twice) are
recognisably the same event to consumers.
`event_type` is also a message attribute, for subscription filter policies, and so is
`correlation_id`: the id of the write that caused the event (the item's `correlation_id`,
stamped by the repository; see `core.correlation`).

`user-deleted` (the user's item removed: `DELETE /users/{id}`) carries the user's id and
when it was removed, and nothing else: no address or name travels through the topic and the
erasure queue (and its dead-letter queue) that it feeds (`erasure.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.core import aws, clock, correlation
from chalicelib.users.model import PUBLIC_FIELDS, public_view
from chalicelib.users.repository import USER_KEY_PREFIX, item_from_image

USER_CREATED = "user-created"
USER_UPDATED = "user-updated"
USER_DELETED = "user-deleted"
#: Fields whose change is bookkeeping, not news.
_NOT_NEWS = {"updated_at"}
#: SNS PublishBatch takes at most 10 messages.
SNS_BATCH = 10


@dataclass(frozen=True)
class UserEvent:
    event_type: str
    event_id: str
    occurred_at: str
    payload: dict[str, Any]
    correlation_id: str | None = None

    def body(self) -> str:
        message = {
            "event_type": self.event_type,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            **self.payload,
        }
        return json.dumps(message, separators=(",", ":"), sort_keys=True)


def events_from_stream(records: Iterable[Mapping[str, Any]]) -> list[UserEvent]:
    """The domain events a batch of users-table stream records stands for, in stream order.

    INSERT of a user → user-created; MODIFY of a user that changed a public field →
    user-updated with the changed fields; REMOVE of a user → user-deleted (its id only).
    Email claims and other items announce nothing.
    """
    events = []
    for record in records:
        caused_by = correlation.of_stream_record(record)
        change = record.get("dynamodb") or {}
        key = (change.get("Keys") or {}).get("pk", {}).get("S", "")
        if not key.startswith(USER_KEY_PREFIX):
            continue
        if record.get("eventName") == "INSERT" and "NewImage" in change:
            user = item_from_image(change["NewImage"])
            events.append(
                UserEvent(
                    USER_CREATED,
                    f"{USER_CREATED}:{user['user_id']}",
                    str(user["created_at"]),
                    {"user": public_view(user)},
                    caused_by,
                )
            )
        elif record.get("eventName") == "MODIFY" and "NewImage" in change:
            old = item_from_image(change.get("OldImage") or {})
            new = item_from_image(change["NewImage"])
            changed = sorted(
                f for f in PUBLIC_FIELDS if f not in _NOT_NEWS and old.get(f) != new.get(f)
            )
            if changed:
                events.append(
                    UserEvent(
                        USER_UPDATED,
                        f"{USER_UPDATED}:{new['user_id']}:{new.get('version')}",
                        str(new.get("updated_at") or ""),
                        {"user": public_view(new), "changed_fields": changed},
                        caused_by,
                    )
                )
        elif record.get("eventName") == "REMOVE":
            events.append(_deleted(key[len(USER_KEY_PREFIX) :], change, caused_by))
    return events


def _deleted(user_id: str, change: Mapping[str, Any], caused_by: str | None) -> UserEvent:
    """user-deleted, stamped with when the stream saw the removal."""
    seen = change.get("ApproximateCreationDateTime")
    when = clock.from_epoch(float(seen)) if seen is not None else clock.now()
    at = clock.timestamp(when)
    return UserEvent(
        USER_DELETED,
        f"{USER_DELETED}:{user_id}",
        at,
        {"user_id": user_id, "deleted_at": at},
        caused_by,
    )


class SnsUserEventPublisher:
    """Publishes user events to their topics, 10 to a call; raises if any is refused, so the
    stream batch is retried (consumers drop the duplicates by `event_id`)."""

    def __init__(self, topics: dict[str, str], client: Callable[[str], Any] = aws.client) -> None:
        self._topics = topics  # event type -> topic name
        self._client = client

    def publish(self, events: list[UserEvent]) -> None:
        by_topic: dict[str, list[UserEvent]] = {}
        for event in events:
            by_topic.setdefault(self._topics[event.event_type], []).append(event)
        for topic, topic_events in by_topic.items():
            for start in range(0, len(topic_events), SNS_BATCH):
                self._publish_batch(topic, topic_events[start : start + SNS_BATCH])

    def _publish_batch(self, topic: str, events: list[UserEvent]) -> None:
        entries = [
            {
                "Id": str(i),
                "Message": event.body(),
                "MessageAttributes": {
                    "event_type": {"DataType": "String", "StringValue": event.event_type},
                    **correlation.message_attributes(event.correlation_id),
                },
            }
            for i, event in enumerate(events)
        ]
        answer = self._client("sns").publish_batch(
            TopicArn=aws.topic_arn(topic), PublishBatchRequestEntries=entries
        )
        failed = answer.get("Failed") or []
        if failed:
            reasons = sorted({f"{f.get('Code')}: {f.get('Message')}" for f in failed})
            raise RuntimeError(f"{len(failed)} of {len(events)} events refused by SNS: {reasons}")
