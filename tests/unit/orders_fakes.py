"""In-memory ports of the orders domain (`chalicelib/orders/ports.py`), for unit tests of its
logic without AWS. They keep the adapters' contracts: conditional status changes raise
StatusConflict with the current status, stock moves and the order's change happen together
or not at all, the ledger charges and refunds once per key."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.core import clock
from chalicelib.orders import model
from chalicelib.orders.inventory import InventoryBusy, Reservation
from chalicelib.orders.payments import Charge, ProviderTimeout, ProviderUnavailable
from chalicelib.orders.records import ClaimTaken, StatusConflict
from chalicelib.orders.shipping import Shipment, ShippingError

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}  # fmt: skip


class MemoryOrders:
    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.claims: dict[tuple[str, str], tuple[str, str]] = {}
        self.updates = 0

    def create(self, order: Mapping[str, Any], claim: tuple[str, str] | None) -> None:
        if claim is not None:
            key = (order["owner_id"], claim[0])
            if key in self.claims:
                raise ClaimTaken(*self.claims[key])
            self.claims[key] = (order["order_id"], claim[1])
        self.items[order["order_id"]] = copy.deepcopy(dict(order))

    def find_claim(self, owner_id: str, idempotency_key: str) -> tuple[str, str] | None:
        return self.claims.get((owner_id, idempotency_key))

    def get(self, order_id: str) -> dict[str, Any] | None:
        found = self.items.get(order_id)
        return copy.deepcopy(found) if found else None

    def check(self, order_id: str, from_statuses: Sequence[str] = ()) -> dict[str, Any]:
        order = self.items.get(order_id)
        if order is None or (from_statuses and order["status"] not in from_statuses):
            raise StatusConflict(order_id, order["status"] if order else None)
        return order

    def update(
        self,
        order_id: str,
        *,
        status: str | None = None,
        from_statuses: Sequence[str] = (),
        steps: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        condition: str = "",
    ) -> dict[str, Any]:
        order = self.check(order_id, from_statuses)
        self.updates += 1
        order["updated_at"] = clock.timestamp()
        if status is not None:
            order["status"] = status
            if status in model.TERMINAL:
                order.pop("open_shard", None)
        order.setdefault("steps", {}).update(copy.deepcopy(dict(steps or {})))
        order.update(copy.deepcopy(dict(fields or {})))
        return copy.deepcopy(order)

    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        mine = sorted(
            (o for o in self.items.values() if o["owner_id"] == owner_id),
            key=lambda o: o["created_key"],
            reverse=True,
        )
        if after:
            mine = [o for o in mine if o["created_key"] < after]
        page = mine[:limit]
        last = page[-1]["created_key"] if len(mine) > limit else None
        return copy.deepcopy(page), last

    def open_before(
        self, shard: str, before: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        found = sorted(
            (o for o in self.items.values()
             if o.get("open_shard") == shard and o["created_key"] < before),
            key=lambda o: o["created_key"],
        )  # fmt: skip
        if after:
            found = [o for o in found if o["created_key"] > after]
        page = found[:limit]
        last = page[-1]["created_key"] if len(found) > limit else None
        return copy.deepcopy(page), last


class MemoryStock:
    """The catalog and its stock; moves apply the order's change together with theirs."""

    def __init__(self, orders: MemoryOrders, products: Mapping[str, Mapping[str, Any]]) -> None:
        self.orders = orders
        self.products = {
            sku: {"sku": sku, "currency": "EUR", "reserved": 0, "active": True, **p}
            for sku, p in products.items()
        }
        self.busy = False

    def get(self, sku: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.products.get(sku))

    def get_many(self, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {sku: copy.deepcopy(self.products[sku]) for sku in skus if sku in self.products}

    def put_product(self, sku: str, product: Mapping[str, Any]) -> dict[str, Any]:
        kept = self.products.get(sku, {}).get("reserved", 0)
        self.products[sku] = {"sku": sku, "currency": "EUR", **product, "reserved": kept}
        return copy.deepcopy(self.products[sku])

    def reserve(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> Reservation:
        if self.busy:
            raise InventoryBusy("busy")
        self.orders.check(order_id, change.get("from_statuses", ()))
        short = {sku: n for sku, n in lines
                 if self.products.get(sku, {}).get("available", 0) < n}  # fmt: skip
        if short:
            return Reservation(False, short)
        for sku, n in lines:
            self.products[sku]["available"] -= n
            self.products[sku]["reserved"] += n
        self.orders.update(order_id, **change)
        return Reservation(True, {})

    def release(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> bool:
        order = self.orders.check(order_id)
        if not order.get("reserved_at") or order.get("released_at") or order.get("shipped_at"):
            return False
        for sku, n in lines:
            self.products[sku]["available"] += n
            self.products[sku]["reserved"] -= n
        self.orders.update(order_id, **{k: v for k, v in change.items() if k != "condition"})
        return True

    def ship(self, order_id: str, lines: Sequence[tuple[str, int]], change: dict) -> None:
        self.orders.update(order_id, **change)
        for sku, n in lines:
            self.products[sku]["reserved"] -= n


class MemoryPayments:
    """A provider whose answers are scripted per key: "approve" (default), "decline",
    "unavailable" (raises, nothing charged) or "timeout" (charges, then raises)."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.charges: dict[str, Charge] = {}
        self.calls = 0

    def charge(self, key: str, amount: int, currency: str, method: str) -> Charge:
        self.calls += 1
        queue = self.script.get(key)
        answer = queue.pop(0) if queue else "approve"
        if answer == "unavailable":
            raise ProviderUnavailable("down")
        if key not in self.charges:
            status = "declined" if answer == "decline" else "approved"
            decline = "card_declined" if answer == "decline" else ""
            self.charges[key] = Charge(f"pay_{uuid.uuid4().hex[:8]}", status, amount, currency,
                                       decline)  # fmt: skip
        if answer == "timeout":
            raise ProviderTimeout("no answer")
        return self.charges[key]

    def find_charge(self, key: str) -> Charge | None:
        return self.charges.get(key)

    def refund(self, key: str) -> Charge | None:
        charge = self.charges.get(key)
        if charge is None or not charge.approved:
            return None
        if not charge.refund_id:
            charge = Charge(**{**charge.__dict__, "refund_id": f"re_{uuid.uuid4().hex[:8]}"})
            self.charges[key] = charge
        return charge


class MemoryCarrier:
    def __init__(self) -> None:
        self.shipments: dict[str, Shipment] = {}
        self.refuse = False

    def create_shipment(
        self, order_id: str, address: Mapping[str, str], lines: Sequence[tuple[str, int]]
    ) -> Shipment:
        if self.refuse:
            raise ShippingError("refused")
        return self.shipments.setdefault(order_id, Shipment(f"TT{len(self.shipments)}", "test"))


class MemoryWorkflow:
    def __init__(self) -> None:
        self.started: dict[str, Mapping[str, Any]] = {}
        self.stopped: list[str] = []
        self.statuses: dict[str, str] = {}
        self.fail_start: Exception | None = None

    def start(self, order_id: str, execution_input: Mapping[str, Any]) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started.setdefault(order_id, dict(execution_input))
        self.statuses.setdefault(order_id, "RUNNING")

    def stop(self, order_id: str, cause: str) -> None:
        self.stopped.append(order_id)
        if self.statuses.get(order_id) == "RUNNING":
            self.statuses[order_id] = "ABORTED"

    def status(self, order_id: str) -> str | None:
        return self.statuses.get(order_id)


def make_order(
    owner_id: str | None = None,
    lines: Sequence[tuple[str, int, int]] = (("BOOK", 2, 1000),),
    status: str = model.PENDING,
    **extra: Any,
) -> dict[str, Any]:
    """An order as the API stores it; `lines` are (sku, quantity, unit amount)."""
    order = model.new_order(
        str(uuid.uuid4()),
        owner_id or str(uuid.uuid4()),
        [(sku, sku.title(), quantity, unit) for sku, quantity, unit in lines],
        ADDRESS,
        "pm_card_visa",
        clock.timestamp(),
    )
    return {**order, "status": status, **extra}


def task_event(order_id: str, state: str, retry_count: int = 0, **extra: Any) -> dict[str, Any]:
    """What the state machine passes a task (its Parameters in infra/resources.json)."""
    step = {"name": state, "entered_at": clock.timestamp(), "retry_count": retry_count}
    return {"order_id": order_id, "correlation_id": "corr-1", "step": step, **extra}
