"""The inventory's adapter (`DynamoInventory`) against moto in process, provisioned from
infra/resources.json: the catalog, and the stock moves an order makes in one transaction with
its own record (reserve all lines or none, release once, ship), retried on conflicts; twenty
orders racing for the last five units."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core import aws as aws_clients
from chalicelib.core import clock
from chalicelib.core.backoff import Backoff
from chalicelib.orders import model
from chalicelib.orders.inventory import DynamoInventory, InventoryBusy, Reservation
from chalicelib.orders.records import DynamoOrders, StatusConflict
from tests.unit.orders_aws import CATALOG, INVENTORY, ORDERS, atomic_writes, new_order

__all__ = ["atomic_writes"]  # a fixture


@pytest.fixture
def orders(aws: dict[str, str]) -> DynamoOrders:
    return DynamoOrders(ORDERS)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def inventory(aws: dict[str, str], sleeps: list[float]) -> DynamoInventory:
    """Every product of CATALOG on sale, 10 units available, none reserved."""
    inventory = DynamoInventory(INVENTORY, ORDERS, backoff=Backoff(sleep=sleeps.append))
    for sku, (name, amount) in CATALOG.items():
        inventory.put_product(
            sku, {"name": name, "unit_amount": amount, "available": 10, "active": True}
        )
    return inventory


def stock(inventory: DynamoInventory, sku: str) -> tuple[int, int]:
    product = inventory.get(sku)
    assert product is not None
    return product["available"], product["reserved"]


def validated(orders: DynamoOrders, lines: Sequence[tuple[str, int]]) -> str:
    order = new_order(lines=lines)
    orders.create(order, None)
    orders.update(order["order_id"], status=model.VALIDATED, from_statuses=(model.PENDING,))
    return str(order["order_id"])


def reserving() -> dict[str, Any]:
    """The order's change the workflow's reservation makes."""
    return {
        "status": model.RESERVED,
        "from_statuses": (model.VALIDATED,),
        "steps": {"ReserveInventory": {"outcome": "reserved"}},
        "fields": {"reserved_at": clock.timestamp()},
    }


def releasing() -> dict[str, Any]:
    return {"steps": {"ReleaseInventory": {"outcome": "released"}},
            "fields": {"released_at": clock.timestamp()}}  # fmt: skip


def shipping() -> dict[str, Any]:
    return {"status": model.SHIPPED, "from_statuses": (model.SHIPPING,),
            "fields": {"shipped_at": clock.timestamp(), "tracking_number": "TT1"}}  # fmt: skip


def test_a_product_is_stored_and_read(aws: dict[str, str]) -> None:
    inventory = DynamoInventory(INVENTORY, ORDERS)
    assert inventory.get("NEW") is None
    stored = inventory.put_product(
        "NEW", {"name": "New", "unit_amount": 199, "available": 7, "active": False}
    )
    assert stored == inventory.get("NEW")
    assert {k: stored[k] for k in ("sku", "name", "unit_amount", "currency", "available",
            "reserved", "active")} == {"sku": "NEW", "name": "New", "unit_amount": 199,
            "currency": "EUR", "available": 7, "reserved": 0, "active": False}  # fmt: skip


def test_changing_a_product_keeps_its_reserved_units(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    inventory.reserve(validated(orders, [("MUG", 3)]), [("MUG", 3)], reserving())
    changed = inventory.put_product(
        "MUG", {"name": "Big mug", "unit_amount": 1500, "available": 50, "active": True}
    )
    assert (changed["name"], changed["unit_amount"]) == ("Big mug", 1500)
    assert stock(inventory, "MUG") == (50, 3)


def test_many_products_are_read_at_once(inventory: DynamoInventory) -> None:
    assert inventory.get_many([]) == {}
    found = inventory.get_many(["PEN", "MUG", "NOPE", "PEN"])
    assert sorted(found) == ["MUG", "PEN"]
    assert found["PEN"] == inventory.get("PEN")
    skus = [f"BULK-{n:03d}" for n in range(130)]  # more than one BatchGetItem takes
    for sku in skus:
        inventory.put_product(sku, {"name": sku, "unit_amount": 1, "available": 1, "active": True})
    assert sorted(inventory.get_many(skus)) == skus


def test_a_reservation_holds_every_line_and_moves_the_order(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    order_id = validated(orders, [("MUG", 3), ("PEN", 10)])
    assert inventory.reserve(order_id, [("MUG", 3), ("PEN", 10)], reserving()) == Reservation(
        True, {}
    )
    assert (stock(inventory, "MUG"), stock(inventory, "PEN")) == ((7, 3), (0, 10))
    assert stock(inventory, "LAMP") == (10, 0)
    order = orders.get(order_id)
    assert order is not None
    assert order["status"] == model.RESERVED and order["reserved_at"]
    assert order["steps"] == {"ReserveInventory": {"outcome": "reserved"}}


def test_a_reservation_is_all_or_nothing(inventory: DynamoInventory, orders: DynamoOrders) -> None:
    lines = [("MUG", 2), ("PEN", 11), ("LAMP", 4), ("GONE", 1), ("LAMP-2", 5)]
    inventory.put_product("LAMP-2", {"name": "L", "unit_amount": 1, "available": 4, "active": True})
    order_id = validated(orders, lines)
    reservation = inventory.reserve(order_id, lines, reserving())
    assert reservation == Reservation(False, {"PEN": 11, "GONE": 1, "LAMP-2": 5})
    for sku, available in (("MUG", 10), ("PEN", 10), ("LAMP", 10), ("LAMP-2", 4)):
        assert stock(inventory, sku) == (available, 0)
    assert inventory.get("GONE") is None
    assert orders.get(order_id)["status"] == model.VALIDATED  # type: ignore[index]


def test_an_order_not_validated_reserves_nothing(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    pending = new_order(lines=[("MUG", 1)])
    orders.create(pending, None)
    with pytest.raises(StatusConflict) as conflict:
        inventory.reserve(pending["order_id"], [("MUG", 1)], reserving())
    assert conflict.value.status == model.PENDING
    with pytest.raises(StatusConflict) as missing:
        inventory.reserve(str(uuid.uuid4()), [("MUG", 1)], reserving())
    assert missing.value.status is None
    assert stock(inventory, "MUG") == (10, 0)


def test_a_reservation_run_again_holds_nothing_more(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    order_id = validated(orders, [("MUG", 4)])
    inventory.reserve(order_id, [("MUG", 4)], reserving())
    with pytest.raises(StatusConflict) as conflict:
        inventory.reserve(order_id, [("MUG", 4)], reserving())
    assert conflict.value.status == model.RESERVED
    assert stock(inventory, "MUG") == (6, 4)


def test_held_units_go_back_once(inventory: DynamoInventory, orders: DynamoOrders) -> None:
    order_id = validated(orders, [("MUG", 4), ("PEN", 1)])
    never_reserved = validated(orders, [("MUG", 1)])
    inventory.reserve(order_id, [("MUG", 4), ("PEN", 1)], reserving())
    assert inventory.release(never_reserved, [("MUG", 1)], releasing()) is False
    assert inventory.release(str(uuid.uuid4()), [("MUG", 1)], releasing()) is False
    assert inventory.release(order_id, [("MUG", 4), ("PEN", 1)], releasing()) is True
    assert (stock(inventory, "MUG"), stock(inventory, "PEN")) == ((10, 0), (10, 0))
    assert orders.get(order_id)["released_at"]  # type: ignore[index]
    assert inventory.release(order_id, [("MUG", 4), ("PEN", 1)], releasing()) is False
    assert (stock(inventory, "MUG"), stock(inventory, "PEN")) == ((10, 0), (10, 0))


def test_shipping_takes_the_held_units_for_good(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    order_id = validated(orders, [("MUG", 4)])
    inventory.reserve(order_id, [("MUG", 4)], reserving())
    with pytest.raises(StatusConflict) as conflict:  # not handed to the carrier yet
        inventory.ship(order_id, [("MUG", 4)], shipping())
    assert conflict.value.status == model.RESERVED
    assert stock(inventory, "MUG") == (6, 4)

    orders.update(order_id, status=model.SHIPPING)
    inventory.ship(order_id, [("MUG", 4)], shipping())
    assert stock(inventory, "MUG") == (6, 0)
    order = orders.get(order_id)
    assert order is not None and order["status"] == model.SHIPPED and order["shipped_at"]
    assert inventory.release(order_id, [("MUG", 4)], releasing()) is False
    assert stock(inventory, "MUG") == (6, 0)


class Cancelling:
    """The app's DynamoDB client, except that DynamoDB cancels its next `times`
    TransactWriteItems with `code` on their second item (the first product): a
    TransactionConflict, as when another transaction is changing that item, or another
    reason DynamoDB gives (ThrottlingError, ValidationError). moto never answers these."""

    def __init__(self, times: int, code: str = "TransactionConflict") -> None:
        self.real = aws_clients.client("dynamodb")
        self.left, self.code, self.calls = times, code, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def transact_write_items(self, **request: Any) -> Any:
        self.calls += 1
        if self.left:
            self.left -= 1
            reasons: list[dict[str, str]] = [{"Code": "None"} for _ in request["TransactItems"]]
            reasons[1] = {"Code": self.code, "Message": self.code}
            error = {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"}
            raise self.real.exceptions.TransactionCanceledException(
                {"Error": error, "CancellationReasons": reasons}, "TransactWriteItems"
            )
        return self.real.transact_write_items(**request)


@pytest.mark.parametrize("conflicts", [1, 4])
def test_conflicting_transactions_are_retried(
    inventory: DynamoInventory, orders: DynamoOrders, sleeps: list[float], conflicts: int
) -> None:
    dynamodb = Cancelling(conflicts)
    retrying = DynamoInventory(INVENTORY, ORDERS, lambda: dynamodb, Backoff(sleep=sleeps.append))
    order_id = validated(orders, [("MUG", 2)])
    assert retrying.reserve(order_id, [("MUG", 2)], reserving()).in_stock
    assert stock(inventory, "MUG") == (8, 2)
    assert len(sleeps) == conflicts  # it waited before each retry


def test_transactions_that_keep_conflicting_move_nothing(
    inventory: DynamoInventory, orders: DynamoOrders, sleeps: list[float]
) -> None:
    dynamodb = Cancelling(1000)
    retrying = DynamoInventory(INVENTORY, ORDERS, lambda: dynamodb, Backoff(sleep=sleeps.append))
    order_id = validated(orders, [("MUG", 2)])
    with pytest.raises(InventoryBusy):
        retrying.reserve(order_id, [("MUG", 2)], reserving())
    assert 1 < dynamodb.calls < 20
    assert stock(inventory, "MUG") == (10, 0)
    assert orders.get(order_id)["status"] == model.VALIDATED  # type: ignore[index]


@pytest.mark.parametrize(
    ("move", "code"),
    [("reserve", "ThrottlingError"), ("reserve", "ValidationError"),
     ("release", "ThrottlingError"), ("ship", "ThrottlingError")],
)  # fmt: skip
def test_a_transaction_cancelled_for_another_reason_is_not_reported_done(
    inventory: DynamoInventory, orders: DynamoOrders, move: str, code: str
) -> None:
    lines = [("MUG", 2)]
    order_id = validated(orders, lines)
    if move != "reserve":
        inventory.reserve(order_id, lines, reserving())
        orders.update(order_id, status=model.SHIPPING)
    before, status = stock(inventory, "MUG"), orders.get(order_id)["status"]  # type: ignore[index]
    dynamodb = Cancelling(1000, code)
    failing = DynamoInventory(INVENTORY, ORDERS, lambda: dynamodb, Backoff(sleep=lambda _: None))
    change = {"reserve": reserving, "release": releasing, "ship": shipping}[move]()
    with pytest.raises((ClientError, InventoryBusy)):  # not True, nor a reservation in stock
        getattr(failing, move)(order_id, lines, change)
    assert stock(inventory, "MUG") == before
    assert orders.get(order_id)["status"] == status  # type: ignore[index]


@pytest.mark.usefixtures("atomic_writes")
def test_of_twenty_orders_for_the_last_five_units_five_get_one(
    inventory: DynamoInventory, orders: DynamoOrders
) -> None:
    """Run with the emulator's atomic writes: on stock moto in process the same race tells
    9 to 16 of the 20 orders they got a unit and leaves order statuses and stock at odds
    (moto's flaw, not the adapter's; see `atomic_writes`)."""
    inventory.put_product("LAST", {"name": "L", "unit_amount": 9, "available": 5, "active": True})
    order_ids = [validated(orders, [("LAST", 1)]) for _ in range(20)]
    results: dict[str, Any] = {}
    start = threading.Barrier(len(order_ids))

    def reserve(order_id: str) -> None:
        start.wait()
        try:
            results[order_id] = inventory.reserve(order_id, [("LAST", 1)], reserving())
        except Exception as error:
            results[order_id] = error

    threads = [threading.Thread(target=reserve, args=(order_id,)) for order_id in order_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    won = [o for o, r in results.items() if isinstance(r, Reservation) and r.in_stock]
    short = [o for o, r in results.items() if r == Reservation(False, {"LAST": 1})]
    assert len(won) == 5 and len(short) == 15, results
    assert stock(inventory, "LAST") == (0, 5)
    statuses = {o: orders.get(o)["status"] for o in order_ids}  # type: ignore[index]
    assert sorted(o for o, s in statuses.items() if s == model.RESERVED) == sorted(won)
