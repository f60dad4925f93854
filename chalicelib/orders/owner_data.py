"""What the orders domain holds about one user: exported on request, erased when the user is
deleted (`users.erasure`).

Orders are financial records: they are kept, but without the personal data in them. What an
order keeps once its owner is erased: its id, status, lines (skus, names and prices from the
catalog), currency and amounts, the payment's record (the provider's payment and refund ids,
amount, status), the tracking number, the failure, the workflow's steps and the timestamps;
and of the shipping address only the country (the place of supply that VAT is charged by).
What it loses: the address's name, lines, city and postal code, the payment method token,
and the owner link: `owner_id` becomes a pseudonym (`erased_owner`: `erased-` and the 32
random hex digits the erasure made for the user when `user-deleted` came and carries in its
messages, `users.erasure`), the same for every order of that user and unusable as a sign-in (no
principal has such an id), so the erased customer's orders stay countable together but no
longer say whose they were. Nothing derives it from the id: whoever holds the id (a log, an
old object of the data lake) cannot recompute it and query the owner index. The shipment
record (test-mode carrier ledger) keeps its parcel and tracking number and loses the
address likewise, and the order's Idempotency-Key claim, whose key holds the owner's id, is
deleted.

Only ended orders (completed, failed, cancelled) are erased: an open order's workflow still
needs its address (the carrier step) and its owner (the emails). `erase` reports how many
are still open; the erasure runs again until none is (`users.erasure`).

Every write is conditional on the order still being the user's and ended, so running an
erasure twice, or two at once, changes nothing more; what was already erased is skipped, and
an order already pseudonymised keeps its pseudonym (it has left the owner index). Its
shipment and claim are erased before it is pseudonymised, for the same reason: once it has
left the index no later pass finds it, so a pass that failed after it must have done them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from chalicelib.core import aws
from chalicelib.core.dynamo import from_item, to_item
from chalicelib.core.ids import is_pseudonym
from chalicelib.orders.model import TERMINAL, order_view
from chalicelib.orders.records import OWNER_INDEX, order_key

#: The shipping address fields an erased order keeps.
KEPT_ADDRESS_FIELDS = ("country",)
#: Attributes an erased order loses (besides the address's personal fields).
DROPPED_FIELDS = ("payment_method", "idempotency_claim")
PSEUDONYM_PREFIX = "erased-"


def erased_owner(pseudonym: str) -> str:
    """What an erased user's orders carry instead of their id: `erased-` and the erasure's
    random pseudonym for that user (32 hex digits; ValueError for anything else, so that no
    message can hand the orders to a real id)."""
    if not is_pseudonym(pseudonym):
        raise ValueError("a pseudonym is 32 lowercase hex digits")
    return PSEUDONYM_PREFIX + pseudonym


def kept_address(address: Any) -> dict[str, Any]:
    if not isinstance(address, dict):
        return {}
    return {k: address[k] for k in KEPT_ADDRESS_FIELDS if k in address}


class DynamoOrderOwnerData:
    def __init__(
        self, orders_table: str, shipments_table: str, client: Callable[[], Any] | None = None
    ) -> None:
        self._orders = orders_table
        self._shipments = shipments_table
        self._client = client or (lambda: aws.client("dynamodb"))

    def export(self, user_id: str) -> list[dict[str, Any]]:
        """Every order of the user as the API shows it, newest first."""
        return [order_view(order) for order in self._owned(user_id)]

    def erase(self, user_id: str, pseudonym: str) -> dict[str, int]:
        """Pseudonymise the user's ended orders under `erased_owner(pseudonym)`; `{"orders":
        erased now, "orders_open": still open (not erased yet)}`."""
        erased = still_open = 0
        owner = erased_owner(pseudonym)
        for order in self._owned(user_id):
            if order.get("status") not in TERMINAL:
                still_open += 1
                continue
            # Shipment and claim first: pseudonymised, the order leaves the owner index.
            self._erase_shipment(order["order_id"])
            claim = order.get("idempotency_claim")
            if isinstance(claim, str) and claim:
                self._client().delete_item(TableName=self._orders, Key={"pk": {"S": claim}})
            if self._pseudonymise(order, user_id, owner):
                erased += 1
        return {"orders": erased, "orders_open": still_open}

    # --- helpers ------------------------------------------------------------------------

    def _owned(self, user_id: str) -> Iterator[dict[str, Any]]:
        """The user's orders, newest first, every page of the `by-owner` index. The index
        projects whole items (ALL)."""
        request: dict[str, Any] = {
            "TableName": self._orders,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "owner_id = :owner",
            "ExpressionAttributeValues": {":owner": {"S": user_id}},
            "ScanIndexForward": False,
        }
        while True:
            page = self._client().query(**request)
            for item in page.get("Items", []):
                order = from_item(item)
                order.pop("pk", None)
                yield order
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _pseudonymise(self, order: dict[str, Any], user_id: str, pseudonym: str) -> bool:
        """False if the order changed owner or status meanwhile (another erasure did it)."""
        names = {"#status": "status", "#address": "shipping_address"}
        names |= {f"#d{i}": name for i, name in enumerate(DROPPED_FIELDS)}
        values = to_item(
            {
                ":owner": user_id,
                ":pseudonym": pseudonym,
                ":address": kept_address(order.get("shipping_address")),
                **{f":t{i}": status for i, status in enumerate(sorted(TERMINAL))},
            }
        )
        terminal = ", ".join(f":t{i}" for i in range(len(TERMINAL)))
        client = self._client()
        try:
            client.update_item(
                TableName=self._orders,
                Key=order_key(order["order_id"]),
                UpdateExpression="SET owner_id = :pseudonym, #address = :address REMOVE "
                + ", ".join(f"#d{i}" for i in range(len(DROPPED_FIELDS))),
                ConditionExpression=f"owner_id = :owner AND #status IN ({terminal})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _erase_shipment(self, order_id: str) -> None:
        """The carrier's record of the parcel keeps only the address's country."""
        client = self._client()
        found = client.get_item(
            TableName=self._shipments, Key={"order_id": {"S": order_id}}, ConsistentRead=True
        ).get("Item")
        if not found:
            return
        address = from_item(found).get("address")
        if address is None or address == kept_address(address):
            return
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=self._shipments,
                Key={"order_id": {"S": order_id}},
                UpdateExpression="SET address = :address",
                ConditionExpression="attribute_exists(order_id)",
                ExpressionAttributeValues=to_item({":address": kept_address(address)}),
            )
