"""The users table in DynamoDB, behind the narrow interface the service needs.

One table holds two kinds of item:
- the user, key `USER#<user_id>`, with `entity = "USER"` and `created_key` so that the sparse
  `by-created` index lists users newest first, one Query per page;
- the email claim, key `EMAIL#<casefolded email>`, which makes addresses unique. Registration
  first reserves it (`status = pending`, with a reservation id), then turns it `active` in the
  same transaction that stores the user. A pending claim older than RESERVATION_TTL (left by a
  registration that crashed half-way) may be taken over, so a retry always gets through.

Every write of a user is conditional on the `version` the caller read, so concurrent updates
cannot silently overwrite each other.

Every write of a user also stamps the correlation id of the work that made it (the request,
or the event handler: `core.correlation`) as `correlation_id`, which the table's stream hands
to the user events it publishes. A delete cannot carry data, so `remove` stamps the item
first (one more write) and the removed item's old image carries the delete's id. The
attribute is bookkeeping: never shown (`model.public_view`) nor exported.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from chalicelib.core import aws, clock, correlation
from chalicelib.core.dynamo import from_item, query_page, to_item
from chalicelib.users.model import email_key
from chalicelib.users.pending import email_change_key

USER_ENTITY = "USER"
USER_KEY_PREFIX = "USER#"
LIST_INDEX = "by-created"
RESERVATION_TTL = timedelta(minutes=5)
PENDING, ACTIVE = "pending", "active"
#: Conditional writes tried against concurrent changes before giving up (StaleUser).
WRITE_ATTEMPTS = 5


class EmailTaken(Exception):
    """Another user already holds this address (compared without case)."""


class StaleUser(Exception):
    """The user changed or vanished since it was read."""


#: A stream record's image is an item in the same AttributeValue form.
item_from_image = from_item


def user_key(user_id: str) -> str:
    return f"{USER_KEY_PREFIX}{user_id}"


def email_claim_key(email: str) -> str:
    return f"EMAIL#{email_key(email)}"


def sort_key(user: dict[str, Any]) -> str:
    return f"{user['created_at']}#{user['user_id']}"


class DynamoUserRepository:
    def __init__(self, table_name: str, client: Callable[[], Any] | None = None) -> None:
        self._table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))

    def reserve_email(self, email: str) -> str:
        """Hold `email` for a registration in progress; returns the reservation id. A put
        applied whose answer was lost (a timeout) and retried by botocore meets its own
        reservation (the refused put returns the item): that one is this caller's."""
        reservation = str(uuid.uuid4())
        now = clock.now()
        try:
            self._client().put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "pk": email_claim_key(email),
                        "status": PENDING,
                        "reservation": reservation,
                        "reserved_at": now.isoformat(),
                    }
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (#status = :pending AND reserved_at < :stale)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=to_item(
                    {":pending": PENDING, ":stale": (now - RESERVATION_TTL).isoformat()}
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client().exceptions.ConditionalCheckFailedException as refused:
            held = getattr(refused, "response", {}).get("Item", {}).get("reservation", {})
            if held.get("S") != reservation:
                raise EmailTaken() from None
        return reservation

    def release_email(self, email: str, reservation: str) -> None:
        """Give up a reservation (the registration failed); someone else's claim is untouched."""
        try:
            self._client().delete_item(
                TableName=self._table,
                Key={"pk": {"S": email_claim_key(email)}},
                ConditionExpression="reservation = :reservation",
                ExpressionAttributeValues={":reservation": {"S": reservation}},
            )
        except self._client().exceptions.ConditionalCheckFailedException:
            pass

    def add(self, user: dict[str, Any], reservation: str) -> None:
        """Store a new user and turn its email reservation into the user's claim, atomically."""
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": email_claim_key(user["email"])}},
                        "UpdateExpression": "SET #status = :active, user_id = :user_id "
                        "REMOVE reservation, reserved_at",
                        "ConditionExpression": "reservation = :reservation",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": to_item(
                            {
                                ":active": ACTIVE,
                                ":user_id": user["user_id"],
                                ":reservation": reservation,
                            }
                        ),
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": self._user_item(user),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    def email_owner(self, email: str) -> str | None:
        """The user whose confirmed address `email` is (compared without case), if any; a
        claim still reserved by a registration in progress counts as nobody's yet."""
        item = (
            self._client()
            .get_item(TableName=self._table, Key={"pk": {"S": email_claim_key(email)}})
            .get("Item")
        )
        claim = from_item(item) if item else {}
        return str(claim["user_id"]) if claim.get("status") == ACTIVE else None

    def get(self, user_id: str) -> dict[str, Any] | None:
        response = self._client().get_item(
            TableName=self._table, Key={"pk": {"S": user_key(user_id)}}
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def list_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `limit` users, newest first, after sort key `after`; and the sort key to
        continue from, or None on the last page. One Query: it asks for one item more than
        the page, so the last page is known without a second call."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": LIST_INDEX,
            "KeyConditionExpression": "entity = :entity",
            "ExpressionAttributeValues": {":entity": {"S": USER_ENTITY}},
            "ScanIndexForward": False,
        }
        if after is not None:
            user_id = after.split("#", 1)[1]
            request["ExclusiveStartKey"] = {
                "pk": {"S": user_key(user_id)},
                "entity": {"S": USER_ENTITY},
                "created_key": {"S": after},
            }
        items, next_key = query_page(self._client(), request, limit)
        return [from_item(item) for item in items], next_key

    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        """Write `new` over `current` if nobody changed it meanwhile; move the email claim
        when the address changes."""
        put_user = {
            "Put": {
                "TableName": self._table,
                "Item": self._user_item(new),
                "ConditionExpression": "#version = :version",
                "ExpressionAttributeNames": {"#version": "version"},
                "ExpressionAttributeValues": {":version": {"N": str(current["version"])}},
            }
        }
        if email_key(current["email"]) == email_key(new["email"]):
            self._transact([put_user])
            return
        self._transact(
            [
                {"Put": self._claim(new)},
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": email_claim_key(current["email"])}},
                    }
                },
                put_user,
            ]
        )

    def remove(self, user: dict[str, Any]) -> None:
        """Delete the user, release its email and drop an email change it had waiting for
        its code, if nobody changed the user meanwhile (StaleUser otherwise). The item is
        first stamped with the delete's correlation id (a delete carries no data): its
        stream record's old image then says which request removed it. The stamp is one more
        conditional write (StaleUser if the user changed or is gone; it creates no item),
        and harmless if the delete then fails: it changes only bookkeeping (`version`,
        `correlation_id`: no event, no public field), and the next write restamps."""
        stamp = correlation.current()
        if stamp and user.get(correlation.CORRELATION_ID) != stamp:
            if not self._update_if_unchanged(user, {}):
                raise StaleUser()
            user = {**user, "version": int(user["version"]) + 1}
        self._transact(
            [
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": user_key(user["user_id"])}},
                        "ConditionExpression": "#version = :version",
                        "ExpressionAttributeNames": {"#version": "version"},
                        "ExpressionAttributeValues": {":version": {"N": str(user["version"])}},
                    }
                },
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": email_claim_key(user["email"])}},
                    }
                },
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {"pk": {"S": email_change_key(user["user_id"])}},
                    }
                },
            ]
        )

    def add_missing_preferences(self, user_id: str, defaults: dict[str, Any], now: str) -> bool:
        """Give the user each default preference it has not set; False if the user is gone.

        A conditional write on the version read, retried on a race, so a concurrent update
        is neither overwritten nor lost; the version goes up like any other change. After
        WRITE_ATTEMPTS lost races StaleUser: the event is delivered again later."""
        for _ in range(WRITE_ATTEMPTS):
            user = self.get(user_id)
            if user is None:
                return False
            current = user.get("preferences") or {}
            missing = {k: v for k, v in defaults.items() if k not in current}
            if not missing:
                return True
            if self._update_if_unchanged(
                user, {"preferences": {**current, **missing}, "updated_at": now}
            ):
                return True
        raise StaleUser()

    def mark_onboarded(self, user_id: str, now: str) -> bool:
        """Record that the user's profile is set up (once); False if the user is gone;
        StaleUser after WRITE_ATTEMPTS lost races (the message is delivered again)."""
        for _ in range(WRITE_ATTEMPTS):
            user = self.get(user_id)
            if user is None:
                return False
            if user.get("onboarded_at"):
                return True
            if self._update_if_unchanged(user, {"onboarded_at": now, "updated_at": now}):
                return True
        raise StaleUser()

    def _update_if_unchanged(self, user: dict[str, Any], changes: dict[str, Any]) -> bool:
        """SET `changes` (and the current correlation id) and bump the version, if the
        version is still the one read. Without a current id, a previous write's is removed:
        the item never names work that did not write it."""
        stamp = _correlation_stamp()
        changes = {**changes, **stamp}
        names = {f"#f{i}": name for i, name in enumerate(changes)}
        values = {f":v{i}": value for i, value in enumerate(changes.values())}
        assignments = "".join(f"#f{i} = :v{i}, " for i in range(len(changes)))
        unstamp = "" if stamp else " REMOVE #stamp"
        if not stamp:
            names["#stamp"] = correlation.CORRELATION_ID
        client = self._client()
        try:
            client.update_item(
                TableName=self._table,
                Key={"pk": {"S": user_key(user["user_id"])}},
                UpdateExpression=f"SET {assignments}#version = #version + :one{unstamp}",
                ConditionExpression="#version = :version",
                ExpressionAttributeNames={**names, "#version": "version"},
                ExpressionAttributeValues=to_item(
                    {**values, ":one": 1, ":version": user["version"]}
                ),
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False  # changed (or deleted) since it was read: read it again
        return True

    def _claim(self, user: dict[str, Any]) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": to_item(
                {"pk": email_claim_key(user["email"]), "user_id": user["user_id"], "status": ACTIVE}
            ),
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _user_item(self, user: dict[str, Any]) -> dict[str, Any]:
        """The item of `user`, stamped with this write's correlation id (never a previous
        write's: an unstamped write carries none)."""
        return to_item(
            {
                **{k: v for k, v in user.items() if k != correlation.CORRELATION_ID},
                **_correlation_stamp(),
                "pk": user_key(user["user_id"]),
                "entity": USER_ENTITY,
                "created_key": sort_key(user),
            }
        )

    def _transact(self, items: list[dict[str, Any]]) -> None:
        client = self._client()
        try:
            client.transact_write_items(TransactItems=items)
        except client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            claims = [i for i, item in enumerate(items) if _is_email_claim(item)]
            if any(reasons[i] == "ConditionalCheckFailed" for i in claims if i < len(reasons)):
                raise EmailTaken() from None
            if "ConditionalCheckFailed" in reasons:
                raise StaleUser() from None
            raise


def _correlation_stamp() -> dict[str, str]:
    found = correlation.current()
    return {correlation.CORRELATION_ID: found} if found else {}


def _is_email_claim(item: dict[str, Any]) -> bool:
    put = item.get("Put")
    return bool(put) and put["Item"]["pk"]["S"].startswith("EMAIL#")
