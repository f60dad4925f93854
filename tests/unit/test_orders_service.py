"""The orders API's use cases with in-memory ports: prices from the catalog, one order per
Idempotency-Key, owners and admins only, cancellation that undoes what the order holds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.auth.tokens import ADMIN_GROUP, Principal
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
    ValidationFailed,
)
from chalicelib.orders import model
from chalicelib.orders.service import CatalogService, OrdersService
from tests.unit.orders_fakes import (
    ADDRESS,
    MemoryOrders,
    MemoryPayments,
    MemoryStock,
    MemoryWorkflow,
)

BUYER = Principal(str(uuid.uuid4()), frozenset())
OTHER = Principal(str(uuid.uuid4()), frozenset())
ADMIN = Principal(str(uuid.uuid4()), frozenset({ADMIN_GROUP}))


def body(*lines: tuple[str, int], **changes: Any) -> dict[str, Any]:
    return {
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        "shipping_address": dict(ADDRESS),
        "payment_method": "pm_card_visa",
        **changes,
    }


class Shop:
    def __init__(self) -> None:
        self.orders = MemoryOrders()
        self.stock = MemoryStock(
            self.orders,
            {
                "BOOK": {"name": "Book", "unit_amount": 2999, "available": 10},
                "MUG": {"name": "Mug", "unit_amount": 1299, "available": 10},
                "OLD": {"name": "Old", "unit_amount": 100, "available": 10, "active": False},
            },
        )
        self.workflow = MemoryWorkflow()
        self.payments = MemoryPayments()
        self.service = OrdersService(self.orders, self.stock, self.workflow, self.payments)

    def place(self, request: dict[str, Any], key: str | None = None, who: Principal = BUYER) -> Any:
        return self.service.place(who, request, key, "corr-1")


@pytest.fixture
def shop() -> Shop:
    return Shop()


def test_an_order_is_priced_from_the_catalog_and_its_workflow_started(shop: Shop) -> None:
    order, replayed = shop.place(body(("BOOK", 2), ("MUG", 1)))
    assert not replayed
    assert order["status"] == model.PENDING
    assert [(line["sku"], line["unit_amount"], line["amount"]) for line in order["lines"]] == [
        ("BOOK", 2999, 5998),
        ("MUG", 1299, 1299),
    ]
    assert (order["total_amount"], order["currency"]) == (7297, "EUR")
    assert shop.workflow.started[order["order_id"]] == {
        "order_id": order["order_id"],
        "owner_id": BUYER.user_id,
        "correlation_id": "corr-1",
    }


def test_a_client_cannot_set_a_price(shop: Shop) -> None:
    request = body(("BOOK", 1))
    request["lines"][0]["unit_amount"] = 1
    with pytest.raises(ValidationFailed) as failed:
        shop.place(request)
    assert failed.value.details == [
        {"field": "lines[0].unit_amount", "issue": "is not a known field"}
    ]


def test_products_not_on_sale_are_refused_before_anything_is_stored(shop: Shop) -> None:
    with pytest.raises(ValidationFailed) as failed:
        shop.place(body(("BOOK", 1), ("NOPE", 1), ("OLD", 1)))
    assert [d["field"] for d in failed.value.details] == ["lines[1].sku", "lines[2].sku"]
    assert shop.orders.items == {} and shop.workflow.started == {}


def test_the_same_idempotency_key_gives_the_same_order_and_one_workflow(shop: Shop) -> None:
    first, _ = shop.place(body(("BOOK", 1)), key="key-1")
    again, replayed = shop.place(body(("BOOK", 1)), key="key-1")
    assert replayed and again["order_id"] == first["order_id"]
    assert len(shop.orders.items) == 1 and len(shop.workflow.started) == 1
    other, replayed = shop.place(body(("BOOK", 1)), key="key-1", who=OTHER)  # keys are per user
    assert not replayed and other["order_id"] != first["order_id"]


def test_an_idempotency_key_reused_for_another_order_is_refused(shop: Shop) -> None:
    shop.place(body(("BOOK", 1)), key="key-1")
    with pytest.raises(UnprocessableEntity):
        shop.place(body(("BOOK", 2)), key="key-1")


def test_a_workflow_that_could_not_start_starts_on_the_retry(shop: Shop) -> None:
    error = {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}
    shop.workflow.fail_start = ClientError(error, "StartExecution")
    with pytest.raises(ServiceUnavailable):
        shop.place(body(("BOOK", 1)), key="key-1")
    shop.workflow.fail_start = None
    order, replayed = shop.place(body(("BOOK", 1)), key="key-1")
    assert replayed and order["order_id"] in shop.workflow.started


def test_a_malformed_idempotency_key_is_refused(shop: Shop) -> None:
    from chalicelib.core.errors import BadRequest

    with pytest.raises(BadRequest):
        shop.place(body(("BOOK", 1)), key="not ascii é")


def test_only_the_owner_and_admins_see_an_order(shop: Shop) -> None:
    order, _ = shop.place(body(("BOOK", 1)))
    assert shop.service.get(BUYER, order["order_id"])["order_id"] == order["order_id"]
    assert shop.service.get(ADMIN, order["order_id"])["order_id"] == order["order_id"]
    for who, order_id in ((OTHER, order["order_id"]), (BUYER, str(uuid.uuid4())), (BUYER, "x")):
        with pytest.raises(NotFound):
            shop.service.get(who, order_id)


def test_the_list_pages_through_the_callers_orders_newest_first(shop: Shop, app_clock: Any) -> None:
    placed = []
    for _ in range(5):
        placed.append(shop.place(body(("BOOK", 1)))[0]["order_id"])
        app_clock.advance(seconds=1)
    shop.place(body(("BOOK", 1)), who=OTHER)
    first = shop.service.list(BUYER, 3, None)
    second = shop.service.list(BUYER, 3, first["next_cursor"])
    seen = [o["order_id"] for o in first["items"] + second["items"]]
    assert seen == placed[::-1] and second["next_cursor"] is None


def test_cancelling_stops_the_workflow_and_undoes_the_order(shop: Shop) -> None:
    order, _ = shop.place(body(("BOOK", 3)))
    order_id = order["order_id"]
    shop.orders.update(order_id, status=model.VALIDATED)
    lines = [("BOOK", 3)]
    change = {"status": model.RESERVED, "fields": {"reserved_at": "t"}}
    shop.stock.reserve(order_id, lines, change)
    shop.orders.update(order_id, status=model.PAID)
    shop.payments.charge(order_id, 8997, "EUR", "pm_card_visa")

    cancelled = shop.service.cancel(BUYER, order_id)
    assert cancelled["status"] == model.CANCELLED
    assert shop.workflow.stopped == [order_id]
    assert shop.payments.charges[order_id].refund_id
    assert shop.stock.products["BOOK"]["available"] == 10
    states = [step["state"] for step in cancelled["steps"]]
    assert states == ["RefundPayment", "ReleaseInventory", "CancelOrder"]
    assert shop.service.cancel(BUYER, order_id)["status"] == model.CANCELLED  # a retried call
    assert shop.workflow.stopped == [order_id]


@pytest.mark.parametrize("status", [model.SHIPPING, model.SHIPPED, model.COMPLETED, model.FAILED])
def test_an_order_that_shipped_or_ended_cannot_be_cancelled(shop: Shop, status: str) -> None:
    order, _ = shop.place(body(("BOOK", 1)))
    shop.orders.update(order["order_id"], status=status)
    with pytest.raises(Conflict, match=f"is {status}"):
        shop.service.cancel(BUYER, order["order_id"])
    assert shop.workflow.stopped == []


def test_a_cancellation_left_half_way_is_finished_by_the_next_call(shop: Shop) -> None:
    order, _ = shop.place(body(("BOOK", 1)))
    shop.orders.update(order["order_id"], status=model.CANCELLING)
    assert shop.service.cancel(BUYER, order["order_id"])["status"] == model.CANCELLED


def test_someone_elses_order_cannot_be_cancelled(shop: Shop) -> None:
    order, _ = shop.place(body(("BOOK", 1)))
    with pytest.raises(NotFound):
        shop.service.cancel(OTHER, order["order_id"])
    assert shop.service.cancel(ADMIN, order["order_id"])["status"] == model.CANCELLED


def test_identities_that_are_not_users_cannot_order(shop: Shop) -> None:
    with pytest.raises(Forbidden):
        shop.place(body(("BOOK", 1)), who=Principal("machine-client", frozenset()))


def test_admins_set_the_catalog_and_everyone_reads_it(shop: Shop) -> None:
    catalog = CatalogService(shop.stock)
    product = {"name": "Lamp", "unit_amount": 4500, "available": 3}
    with pytest.raises(Forbidden):
        catalog.put(BUYER, "LAMP-1", product)
    saved = catalog.put(ADMIN, "LAMP-1", product)
    assert saved == {**product, "sku": "LAMP-1", "currency": "EUR", "active": True, "reserved": 0}
    assert catalog.get("LAMP-1")["unit_amount"] == 4500
    with pytest.raises(NotFound):
        catalog.get("NONE")
