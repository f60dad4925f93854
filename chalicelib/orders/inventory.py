"""The catalog and its stock in DynamoDB, and the moves of stock an order makes.

The inventory table holds one item per product (`sku`): `name`, `unit_amount` (cents),
`currency`, `available` (units that may be sold now), `reserved` (units held for orders not
shipped yet) and `active`. An order moves units in one transaction with its own record, so
the two never disagree and a step run twice moves nothing twice:

- reserve: `available -= q`, `reserved += q` for every line at once, each conditional on
  `available >= q` (stock never goes negative; of two orders for the last unit exactly one
  gets it), and the order `validated -> reserved`;
- release (compensation): `available += q`, `reserved -= q`, once: only while the order has
  `reserved_at` and neither `released_at` nor `shipped_at`;
- ship: `reserved -= q` (the units left the warehouse), and the order `shipping -> shipped`.

Concurrent transactions on one product may be cancelled by DynamoDB with
`TransactionConflict` (or throttling); they are retried here with backoff, then reported as
unavailable. A transaction cancelled for another reason raises: it never passes for done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.core import aws, clock
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import batch_get, from_item, to_item
from chalicelib.orders.model import CURRENCY
from chalicelib.orders.records import StatusConflict, order_update

#: Why DynamoDB may cancel a transaction that would succeed if tried again.
TRANSIENT_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
     "RequestLimitExceeded"}
)  # fmt: skip


class InventoryBusy(Exception):
    """Other orders' transactions on the same products kept conflicting: try again later."""


@dataclass(frozen=True)
class Reservation:
    in_stock: bool
    #: sku -> units wanted, for the lines the stock could not cover
    short: dict[str, int]


class DynamoInventory:
    def __init__(
        self,
        inventory_table: str,
        orders_table: str,
        client: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.table = inventory_table
        self._orders = orders_table
        self._client = client or (lambda: aws.client("dynamodb"))
        self._backoff = backoff or Backoff(max_attempts=5, base_s=0.05, cap_s=0.5)

    # --- the catalog ---------------------------------------------------------------------

    def get(self, sku: str) -> dict[str, Any] | None:
        item = self._client().get_item(TableName=self.table, Key={"sku": {"S": sku}}).get("Item")
        return from_item(item) if item else None

    def get_many(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The products among `skus`, by sku (one BatchGetItem per 100)."""
        if not skus:
            return {}
        keys = [{"sku": {"S": sku}} for sku in dict.fromkeys(skus)]
        found = batch_get(self._client(), self.table, keys, self._backoff)
        return {product["sku"]: product for product in map(from_item, found)}

    def put_product(self, sku: str, product: Mapping[str, Any]) -> dict[str, Any]:
        """Set a product's name, price, units available and whether it is on sale; the units
        reserved for orders are kept (0 for a new product)."""
        answer = self._client().update_item(
            TableName=self.table,
            Key={"sku": {"S": sku}},
            UpdateExpression=(
                "SET #name = :name, unit_amount = :amount, currency = :currency, "
                "available = :available, active = :active, updated_at = :now, "
                "reserved = if_not_exists(reserved, :zero)"
            ),
            ExpressionAttributeNames={"#name": "name"},
            ExpressionAttributeValues=to_item(
                {
                    ":name": product["name"],
                    ":amount": product["unit_amount"],
                    ":currency": CURRENCY,
                    ":available": product["available"],
                    ":active": product["active"],
                    ":now": clock.timestamp(),
                    ":zero": 0,
                }
            ),
            ReturnValues="ALL_NEW",
        )
        return from_item(answer["Attributes"])

    # --- stock moves, each with the order's record ---------------------------------------

    def reserve(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> Reservation:
        """Hold every line's units for the order and apply `change` (an `order_update`'s
        keyword arguments, conditional on the order being `validated`) in one transaction.
        Reservation(in_stock=False, short=...) when some line's stock does not cover it
        (nothing is held then); StatusConflict when the order's own condition fails."""
        moves = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"sku": {"S": sku}},
                    "UpdateExpression": "SET available = available - :q, reserved = reserved + :q",
                    "ConditionExpression": "attribute_exists(sku) AND available >= :q",
                    "ExpressionAttributeValues": {":q": {"N": str(quantity)}},
                }
            }
            for sku, quantity in lines
        ]
        failed = self._transact(order_id, change, moves)
        if not failed:
            return Reservation(True, {})
        return Reservation(False, {lines[i][0]: lines[i][1] for i in failed})

    def release(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> bool:
        """Give the order's reserved units back, once; False if nothing is held for it (never
        reserved, released already, or shipped)."""
        held = "attribute_exists(reserved_at) AND attribute_not_exists(released_at) AND " \
               "attribute_not_exists(shipped_at)"  # fmt: skip
        change = {**change, "condition": held}
        moves = [self._move(sku, "available = available + :q, reserved = reserved - :q", q)
                 for sku, q in lines]  # fmt: skip
        try:
            missing = self._transact(order_id, change, moves)
        except StatusConflict:
            return False
        _no_missing_products(missing, lines)
        return True

    def ship(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> None:
        """The units leave: reserved counts drop, and `change` applies to the order."""
        moves = [self._move(sku, "reserved = reserved - :q", q) for sku, q in lines]
        _no_missing_products(self._transact(order_id, change, moves), lines)

    def _move(self, sku: str, expression: str, quantity: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": {"sku": {"S": sku}},
                "UpdateExpression": "SET " + expression,
                "ConditionExpression": "attribute_exists(sku)",
                "ExpressionAttributeValues": {":q": {"N": str(quantity)}},
            }
        }

    def _transact(self, order_id: str, change: dict, moves: list[dict[str, Any]]) -> list[int]:
        """Run the order's update and the moves in one transaction, retrying conflicts.
        Returns the indexes (in `moves`) of moves whose condition failed; StatusConflict if
        the order's own condition failed."""
        update = order_update(self._orders, order_id, now=clock.timestamp(), **change)
        # A failed condition on the order says its status (the order as it was) at once.
        order = {"Update": {**update, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        client = self._client()
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                client.transact_write_items(TransactItems=[order, *moves])
                return []
            except client.exceptions.TransactionCanceledException as exc:
                cancelled = exc
                found = exc.response.get("CancellationReasons", [])
                reasons = [r.get("Code") for r in found]
            if TRANSIENT_REASONS.intersection(reasons):
                continue
            if reasons and reasons[0] == "ConditionalCheckFailed":
                current = found[0].get("Item")
                status = from_item(current).get("status") if current else None
                raise StatusConflict(order_id, status)
            failed = [
                i - 1 for i, code in enumerate(reasons) if i and code == "ConditionalCheckFailed"
            ]
            if not failed:  # cancelled for a reason of its own (validation): nothing was done
                raise cancelled
            return failed
        raise InventoryBusy(f"the stock of order {order_id}'s products kept changing; try again")


def _no_missing_products(failed: list[int], lines: Sequence[tuple[str, int]]) -> None:
    """Products are never deleted, so a move of held units cannot miss its product; if one
    does, the transaction was cancelled and that must not pass for done."""
    if failed:
        raise LookupError(f"products missing from the inventory: {[lines[i][0] for i in failed]}")
