"""DynamoDB stream records as Lambda delivers them, built from plain items (Chalice's test
client has no generator for them)."""

from __future__ import annotations

import itertools
from typing import Any

from boto3.dynamodb.types import TypeSerializer

_sequence = itertools.count(1)
STREAM_ARN = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/serverless-app-dev-users"
    "/stream/2026-11-26T00:00:00.000"
)
_SERIALIZER = TypeSerializer()


def image(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _SERIALIZER.serialize(v) for k, v in item.items() if v is not None}


def user_item(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the users table stores it."""
    return {
        **user,
        "pk": f"USER#{user['user_id']}",
        "entity": "USER",
        "created_key": f"{user['created_at']}#{user['user_id']}",
    }


def stream_record(
    event_name: str, new: dict[str, Any] | None = None, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One users-table stream record (NEW_AND_OLD_IMAGES) for `new`/`old` items."""
    key = (new or old or {})["pk"]
    change: dict[str, Any] = {
        "ApproximateCreationDateTime": 1_790_000_000.0,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": f"{next(_sequence):021d}",
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        change["NewImage"] = image(new)
    if old is not None:
        change["OldImage"] = image(old)
    return {
        "eventID": f"event-{change['SequenceNumber']}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": change,
        "eventSourceARN": STREAM_ARN,
    }
