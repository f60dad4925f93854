"""The ports of the orders domain: what its use cases need from the outside, as small
interfaces. The adapters shipped are DynamoDB's (`records`, `inventory`, `payments`,
`shipping`) and Step Functions' (`executions`); the unit tests give in-memory ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chalicelib.orders.inventory import Reservation


class OrderRecords(Protocol):
    """The orders the steps read and change (`records.DynamoOrders`)."""

    def get(self, order_id: str) -> dict[str, Any] | None: ...

    def update(self, order_id: str, **change: Any) -> dict[str, Any]:
        """`change`: status, from_statuses, steps, fields, condition (`records.order_update`);
        StatusConflict if the order is not in one of `from_statuses`."""
        ...


class Stock(Protocol):
    """The catalog and the stock moves (`inventory.DynamoInventory`); each move applies its
    `change` to the order in the same transaction."""

    def get_many(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]: ...
    def reserve(
        self, order_id: str, lines: Sequence[tuple[str, int]], change: dict
    ) -> Reservation: ...
    def release(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> bool: ...
    def ship(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> None: ...


class Orders(OrderRecords, Protocol):
    """The orders table as the API uses it (`records.DynamoOrders`)."""

    def create(self, order: Mapping[str, Any], claim: tuple[str, str] | None) -> None: ...
    def find_claim(self, owner_id: str, idempotency_key: str) -> tuple[str, str] | None: ...
    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def open_before(
        self, shard: str, before: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class Catalog(Stock, Protocol):
    """The inventory as the API uses it (`inventory.DynamoInventory`)."""

    def get(self, sku: str) -> dict[str, Any] | None: ...
    def put_product(self, sku: str, product: Mapping[str, Any]) -> dict[str, Any]: ...


class Workflow(Protocol):
    def start(self, order_id: str, execution_input: Mapping[str, Any]) -> None: ...
    def stop(self, order_id: str, cause: str) -> None: ...
    def status(self, order_id: str) -> str | None: ...
