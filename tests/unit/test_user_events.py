"""User events come from the users table's stream: what was stored, never beside the write."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.users.events import USER_CREATED, USER_DELETED, USER_UPDATED, events_from_stream
from local.inbox import drain, subscribe_inbox
from tests.unit.streams import stream_record, user_item

ADA = {
    "user_id": "4f0c6a56-2a8e-4d0b-9c53-0d9d6f1e2a11",
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "created_at": "2026-11-26T00:00:01.000000Z",
    "updated_at": "2026-11-26T00:00:01.000000Z",
    "version": 1,
}
CLAIM = {"pk": "EMAIL#ada@example.com", "user_id": ADA["user_id"], "status": "active"}


def test_a_stored_user_is_announced_once_as_created() -> None:
    records = [stream_record("INSERT", new=CLAIM), stream_record("INSERT", new=user_item(ADA))]
    [event] = events_from_stream(records)
    assert event.event_type == USER_CREATED
    assert event.event_id == f"user-created:{ADA['user_id']}"
    assert event.payload == {"user": {k: v for k, v in ADA.items() if k != "version"}}
    body = json.loads(event.body())
    assert body["event_type"] == "user-created" and body["user"]["email"] == ADA["email"]
    assert "pk" not in json.dumps(body) and "password" not in json.dumps(body)


def test_the_same_record_twice_gives_the_same_event_id() -> None:
    record = stream_record("INSERT", new=user_item(ADA))
    assert events_from_stream([record]) == events_from_stream([record])


def test_a_change_of_public_fields_is_announced_with_what_changed() -> None:
    old = user_item(ADA)
    new = user_item(
        {
            **ADA,
            "bio": "Analyst",
            "name": "Ada L.",
            "version": 2,
            "updated_at": "2026-11-26T00:00:02.000000Z",
        }
    )
    [event] = events_from_stream([stream_record("MODIFY", new=new, old=old)])
    assert event.event_type == USER_UPDATED
    assert event.payload["changed_fields"] == ["bio", "name"]
    assert event.event_id == f"user-updated:{ADA['user_id']}:2"


@pytest.mark.parametrize(
    "record",
    [
        stream_record(
            "MODIFY", new=user_item({**ADA, "version": 2, "updated_at": "x"}), old=user_item(ADA)
        ),
        stream_record("REMOVE", old=CLAIM),
        stream_record("MODIFY", new={**CLAIM, "status": "pending"}, old=CLAIM),
    ],
)
def test_bookkeeping_and_claims_announce_nothing(record: dict[str, Any]) -> None:
    assert events_from_stream([record]) == []


def test_a_removed_user_is_announced_as_deleted_with_its_id_only() -> None:
    [event] = events_from_stream([stream_record("REMOVE", old=user_item(ADA))])
    assert event.event_type == USER_DELETED
    assert event.event_id == f"user-deleted:{ADA['user_id']}"
    assert event.payload == {"user_id": ADA["user_id"], "deleted_at": event.occurred_at}
    assert event.occurred_at == "2026-09-21T14:13:20.000000Z"  # the stream's stamp
    assert ADA["email"] not in event.body() and ADA["name"] not in event.body()


def _inbox(topic_arn: str) -> str:
    return subscribe_inbox(boto3.client("sqs"), boto3.client("sns"), topic_arn)


def _drain(url: str) -> list[dict[str, Any]]:
    return drain(boto3.client("sqs"), url)


def test_the_stream_handler_publishes_every_event_in_batches_of_ten(
    client: Any, aws: dict[str, str]
) -> None:
    created, updated = _inbox(aws["UserCreatedTopicArn"]), _inbox(aws["UserUpdatedTopicArn"])
    users = [{**ADA, "user_id": f"4f0c6a56-2a8e-4d0b-9c53-{i:012d}"} for i in range(23)]
    records = [stream_record("INSERT", new=user_item(u)) for u in users]
    records.append(
        stream_record(
            "MODIFY", old=user_item(users[0]), new=user_item({**users[0], "bio": "x", "version": 2})
        )
    )
    response = client.lambda_.invoke("publish_user_events", {"Records": records})
    assert response.payload is None, response.payload
    got = _drain(created)
    assert sorted(e["user"]["user_id"] for e in got) == sorted(u["user_id"] for u in users)
    [change] = _drain(updated)
    assert change["changed_fields"] == ["bio"] and change["event_type"] == "user-updated"


def test_a_removed_user_reaches_the_erasure_queue(client: Any, aws: dict[str, str]) -> None:
    """user-deleted goes to its own topic, which the erasure queue is subscribed to."""
    records = [stream_record("REMOVE", old=user_item(ADA))]
    response = client.lambda_.invoke("publish_user_events", {"Records": records})
    assert response.payload is None, response.payload
    [event] = _drain(aws["UserErasureQueueUrl"])
    assert event["event_type"] == "user-deleted" and event["user_id"] == ADA["user_id"]


def test_a_refused_publish_fails_the_batch_so_it_is_retried(
    client: Any, aws: dict[str, str]
) -> None:
    boto3.client("sns").delete_topic(TopicArn=aws["UserCreatedTopicArn"])
    with pytest.raises(ClientError, match="NotFound"):  # Lambda retries the batch: none skipped
        client.lambda_.invoke(
            "publish_user_events", {"Records": [stream_record("INSERT", new=user_item(ADA))]}
        )
