"""What other domains may use of the users domain: the public profiles of users by id, and
which user an item of the users table (as its stream records carry it) is about.

The users table's key layout and the profile's public fields stay here: a domain that needs
profiles (search's result pages) is given a `DynamoPublicProfiles` by its factory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.core import aws
from chalicelib.core.backoff import MAX_ATTEMPTS, Backoff
from chalicelib.core.dynamo import batch_get, from_item
from chalicelib.users.model import PUBLIC_FIELDS, is_user_id, public_view
from chalicelib.users.repository import USER_KEY_PREFIX, user_key


def user_id_of_key(key: str) -> str | None:
    """The user whose item has the partition key `key`, or None for any other item of the
    table (email claims)."""
    if not key.startswith(USER_KEY_PREFIX):
        return None
    user_id = key[len(USER_KEY_PREFIX) :]
    return user_id if is_user_id(user_id) else None


class DynamoPublicProfiles:
    """The users table, read by key only: the public view of the users that exist among
    some ids (the profiles of one search result page)."""

    def __init__(
        self,
        table_name: str,
        client: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))
        self._backoff = Backoff(sleep, max_attempts)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The public views of the users that exist among `user_ids`, by id; one
        BatchGetItem per 100 ids, reading the public fields only."""
        if not user_ids:
            return {}
        names = {f"#f{i}": name for i, name in enumerate(PUBLIC_FIELDS)}
        found = batch_get(
            self._client(),
            self._table,
            [{"pk": {"S": user_key(user_id)}} for user_id in dict.fromkeys(user_ids)],
            self._backoff,
            ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names,
        )
        users = [public_view(from_item(item)) for item in found]
        return {user["user_id"]: user for user in users if "user_id" in user}
