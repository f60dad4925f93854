"""The orders table in DynamoDB.

One table, two kinds of item:
- the order, key `ORDER#<order_id>`: lines priced from the catalog, amounts, address,
  status and what each step of the workflow recorded (`steps`, a map by state name, so a
  re-run step rewrites its own entry). The sparse `by-owner` index (`owner_id`,
  `created_key`) lists an owner's orders newest first; while the order is open (not
  completed, failed or cancelled) it also carries `open_shard`, which puts it in the sparse
  `by-open` index the nightly sweep reads, oldest first, without a Scan;
- the idempotency claim, key `IDEMPOTENCY#<owner_id>#<sha256 of the key>`: which order an
  `Idempotency-Key` made, and the fingerprint of the request it came with. It expires (TTL)
  after a day.

Every status change is conditional on the status it leaves, so two writers (the workflow and
a cancellation) can never both win.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from chalicelib.core import aws, clock
from chalicelib.core.dynamo import from_item, query_page, to_item
from chalicelib.orders.model import TERMINAL

ORDER_PREFIX = "ORDER#"
CLAIM_PREFIX = "IDEMPOTENCY#"
OWNER_INDEX = "by-owner"
OPEN_INDEX = "by-open"
#: How long an Idempotency-Key keeps answering with its order.
CLAIM_SECONDS = 24 * 3600


class StatusConflict(Exception):
    """The order is not in a status the change may leave (or does not exist): `status` is
    the one it has (None if there is no such order)."""

    def __init__(self, order_id: str, status: str | None) -> None:
        super().__init__(f"order {order_id} is {status or 'missing'}")
        self.status = status


class ClaimTaken(Exception):
    """An Idempotency-Key already made an order: `order_id`, bound to `fingerprint`."""

    def __init__(self, order_id: str, fingerprint: str) -> None:
        super().__init__(order_id)
        self.order_id = order_id
        self.fingerprint = fingerprint


def order_key(order_id: str) -> dict[str, Any]:
    return {"pk": {"S": ORDER_PREFIX + order_id}}


def claim_key(owner_id: str, idempotency_key: str) -> dict[str, Any]:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return {"pk": {"S": f"{CLAIM_PREFIX}{owner_id}#{digest}"}}


def order_update(
    table: str,
    order_id: str,
    *,
    now: str,
    status: str | None = None,
    from_statuses: Iterable[str] = (),
    steps: Mapping[str, Mapping[str, Any]] | None = None,
    fields: Mapping[str, Any] | None = None,
    condition: str = "",
) -> dict[str, Any]:
    """The Update (for UpdateItem or a transaction) that moves an order to `status` (only from
    one of `from_statuses`, if given), records `steps` by state name and sets `fields`; a
    terminal status takes the order out of the sweep's index. `condition` is ANDed in."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {":now": {"S": now}}
    sets = ["updated_at = :now"]
    if status is not None:
        names["#status"] = "status"
        values[":status"] = {"S": status}
        sets.append("#status = :status")
    for index, (name, entry) in enumerate((steps or {}).items()):
        names[f"#step{index}"] = name
        values[f":step{index}"] = to_item({"v": dict(entry)})["v"]
        sets.append(f"steps.#step{index} = :step{index}")
    for index, (name, value) in enumerate((fields or {}).items()):
        names[f"#f{index}"] = name
        values[f":f{index}"] = to_item({"v": value})["v"]
        sets.append(f"#f{index} = :f{index}")
    expression = "SET " + ", ".join(sets)
    if status in TERMINAL:
        expression += " REMOVE open_shard"
    conditions = ["attribute_exists(pk)"]
    allowed = list(from_statuses)
    if allowed:
        names["#status"] = "status"
        placeholders = []
        for index, allowed_status in enumerate(allowed):
            values[f":from{index}"] = {"S": allowed_status}
            placeholders.append(f":from{index}")
        conditions.append(f"#status IN ({', '.join(placeholders)})")
    if condition:
        conditions.append(f"({condition})")
    update: dict[str, Any] = {
        "TableName": table,
        "Key": order_key(order_id),
        "UpdateExpression": expression,
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeValues": values,
    }
    if names:
        update["ExpressionAttributeNames"] = names
    return update


class DynamoOrders:
    def __init__(self, table_name: str, client: Callable[[], Any] | None = None) -> None:
        self.table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))

    def create(self, order: Mapping[str, Any], claim: tuple[str, str] | None) -> None:
        """Store a new order and, with an Idempotency-Key (`claim`: key, fingerprint), the
        claim that binds the key to it, in one transaction: ClaimTaken if the key is already
        bound (and not expired)."""
        stored = {**order, "pk": ORDER_PREFIX + order["order_id"]}
        if claim is not None:
            # Its key holds the owner's id: an erasure of the owner deletes it by this.
            stored["idempotency_claim"] = claim_key(order["owner_id"], claim[0])["pk"]["S"]
        item = to_item(stored)
        if claim is None:
            self._client().put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
            return
        key, fingerprint = claim
        now = clock.now()
        claim_item = {
            **claim_key(order["owner_id"], key),
            **to_item(
                {
                    "order_id": order["order_id"],
                    "fingerprint": fingerprint,
                    "created_at": clock.timestamp(now),
                    "expires_at": int(now.timestamp()) + CLAIM_SECONDS,
                }
            ),
        }
        client = self._client()
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": claim_item,
                            # TTL deletes expired items late: an expired claim counts as none.
                            "ConditionExpression": "attribute_not_exists(pk) OR expires_at < :now",
                            "ExpressionAttributeValues": {":now": {"N": str(int(now.timestamp()))}},
                        }
                    },
                ]
            )
        except client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            # The key is taken, or being taken right now by the same request sent twice.
            if len(reasons) > 1 and reasons[1] in ("ConditionalCheckFailed", "TransactionConflict"):
                found = self.find_claim(order["owner_id"], key)
                if found is not None:
                    raise ClaimTaken(*found) from None
            raise

    def find_claim(self, owner_id: str, idempotency_key: str) -> tuple[str, str] | None:
        """(order id, fingerprint) an unexpired Idempotency-Key of the owner is bound to."""
        item = (
            self._client()
            .get_item(
                TableName=self.table, Key=claim_key(owner_id, idempotency_key), ConsistentRead=True
            )
            .get("Item")
        )
        if not item:
            return None
        claim = from_item(item)
        if claim["expires_at"] < int(clock.now().timestamp()):
            return None
        return str(claim["order_id"]), str(claim["fingerprint"])

    def get(self, order_id: str) -> dict[str, Any] | None:
        item = (
            self._client()
            .get_item(TableName=self.table, Key=order_key(order_id), ConsistentRead=True)
            .get("Item")
        )
        return _order(item) if item else None

    def update(self, order_id: str, **change: Any) -> dict[str, Any]:
        """Apply `order_update(...)` (status, from_statuses, steps, fields, condition) and
        return the order as it is now; StatusConflict (with the order's status) if the order
        is missing or not in one of `from_statuses`."""
        client = self._client()
        request = order_update(self.table, order_id, now=clock.timestamp(), **change)
        try:
            answer = client.update_item(
                **request, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD"
            )
        except client.exceptions.ConditionalCheckFailedException as exc:
            old = exc.response.get("Item")
            raise StatusConflict(order_id, from_item(old).get("status") if old else None) from None
        return _order(answer["Attributes"])

    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """An owner's orders, newest first (one Query)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "owner_id = :owner",
            "ExpressionAttributeValues": {":owner": {"S": owner_id}},
            "ScanIndexForward": False,
        }
        if after:
            request["ExclusiveStartKey"] = {
                "owner_id": {"S": owner_id},
                "created_key": {"S": after},
                "pk": {"S": ORDER_PREFIX + after.rsplit("#", 1)[1]},
            }
        items, last = query_page(self._client(), request, limit)
        return [_order(item) for item in items], last

    def open_before(
        self, shard: str, before: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Open orders of one shard created before the sort key `before`, oldest first."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "open_shard = :shard AND created_key < :before",
            "ExpressionAttributeValues": {":shard": {"S": shard}, ":before": {"S": before}},
            "ScanIndexForward": True,
        }
        if after:
            request["ExclusiveStartKey"] = {
                "open_shard": {"S": shard},
                "created_key": {"S": after},
                "pk": {"S": ORDER_PREFIX + after.rsplit("#", 1)[1]},
            }
        items, last = query_page(self._client(), request, limit)
        return [_order(item) for item in items], last


def line_quantities(order: Mapping[str, Any]) -> Sequence[tuple[str, int]]:
    return [(line["sku"], int(line["quantity"])) for line in order["lines"]]


def _order(item: Mapping[str, Any]) -> dict[str, Any]:
    order = from_item(dict(item))
    order.pop("pk", None)
    order.pop("idempotency_claim", None)  # bookkeeping for the owner's erasure
    return order
