"""What waits for a mailed code, in the users table: sign-ups (`SIGNUP#<email>`) and email
changes (`EMAILCHANGE#<user_id>`).

Each item holds the code's salted digest, when it expires (also the table's TTL attribute,
so DynamoDB removes what nobody confirmed) and the attempts so far. An attempt is counted
before the code is compared, in one conditional update, and only against the code it was
made on: a new code resets the count, an old attempt cannot use up a newer code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib.core import aws
from chalicelib.core.dynamo import from_item, to_item
from chalicelib.users.model import email_key
from chalicelib.users.verification import CodeRecords

SIGNUP_PREFIX = "SIGNUP#"
EMAIL_CHANGE_PREFIX = "EMAILCHANGE#"


def signup_key(email: str) -> str:
    return f"{SIGNUP_PREFIX}{email_key(email)}"


def email_change_key(user_id: str) -> str:
    return f"{EMAIL_CHANGE_PREFIX}{user_id}"


class PendingRecords(CodeRecords, Protocol):
    """What waits for a code: read and tried (`verification.CodeRecords`), stored, removed."""

    def put(self, key: str, record: dict[str, Any]) -> None: ...
    def delete(self, key: str, code_digest: str | None = None) -> None: ...


class DynamoPendingRecords:
    def __init__(self, table_name: str, client: Callable[[], Any] | None = None) -> None:
        self._table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))

    def get(self, key: str) -> dict[str, Any] | None:
        item = (
            self._client()
            .get_item(TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True)
            .get("Item")
        )
        return from_item(item) if item else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store (or replace: a new code voids the old one) what waits for a code."""
        self._client().put_item(
            TableName=self._table, Item=to_item({**record, "pk": key, "attempts": 0})
        )

    def use_attempt(self, key: str, code_digest: str, max_attempts: int, now: int) -> bool:
        """Count one attempt at the code `code_digest`, if it is still the record's code,
        unexpired at `now` (epoch seconds) and with attempts left; whether it was counted."""
        db = self._client()
        try:
            db.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression="ADD attempts :one",
                ConditionExpression=(
                    "code_digest = :digest AND attempts < :max AND expires_at > :now"
                ),
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":digest": {"S": code_digest},
                    ":max": {"N": str(max_attempts)},
                    ":now": {"N": str(now)},
                },
            )
        except db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def delete(self, key: str, code_digest: str | None = None) -> None:
        """Remove the record (only if it still holds `code_digest`, when given: a newer
        code asked for meanwhile stays)."""
        request: dict[str, Any] = {"TableName": self._table, "Key": {"pk": {"S": key}}}
        if code_digest is not None:
            request["ConditionExpression"] = "code_digest = :digest"
            request["ExpressionAttributeValues"] = {":digest": {"S": code_digest}}
        db = self._client()
        with contextlib.suppress(db.exceptions.ConditionalCheckFailedException):
            db.delete_item(**request)
