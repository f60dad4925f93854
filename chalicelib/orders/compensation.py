"""Undoing what an order holds, the same way whoever does it: the workflow's compensation
steps, a cancellation through the API, the nightly sweep. Each move happens once (the refund
is keyed by the order, the release is conditional on the order's record) and is recorded in
the order's `steps`, so two of them racing (a cancellation and the workflow's own
compensation) leave one refund and one release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.core import clock
from chalicelib.orders import model
from chalicelib.orders.payments import PaymentProvider
from chalicelib.orders.ports import OrderRecords, Stock
from chalicelib.orders.records import StatusConflict, line_quantities


def refund_order(
    orders: OrderRecords,
    payments: PaymentProvider,
    order: Mapping[str, Any],
    entry: Callable[..., dict[str, Any]],
) -> bool:
    """Refund the order's charge, if it has one, and record it (`entry(outcome)` makes the
    step's entry); True if money went back (now or before)."""
    charge = payments.refund(order["order_id"])
    if charge is None:
        orders.update(order["order_id"], steps=entry("nothing to refund"))
        return False
    payment = {
        **(order.get("payment") or {}),
        "payment_id": charge.payment_id,
        "status": "refunded",
        "amount": charge.amount,
        "refund_id": charge.refund_id,
    }
    orders.update(
        order["order_id"], steps=entry(f"refunded {charge.amount}"), fields={"payment": payment}
    )
    return True


def release_order(
    orders: OrderRecords,
    inventory: Stock,
    order: Mapping[str, Any],
    entry: Callable[..., dict[str, Any]],
) -> bool:
    """Give the order's reserved units back, once, and record it; True if units went back."""
    change = {"steps": entry("released"), "fields": {"released_at": clock.timestamp()}}
    if inventory.release(order["order_id"], line_quantities(order), change):
        return True
    orders.update(order["order_id"], steps=entry("nothing held"))
    return False


def finish_cancellation(
    orders: OrderRecords,
    inventory: Stock,
    payments: PaymentProvider,
    order: Mapping[str, Any],
    started: str,
) -> dict[str, Any] | None:
    """Refund and release what a cancelled order holds, then mark it cancelled; the order as
    it is then (None if another caller marked it cancelled first)."""
    refund_order(orders, payments, order, manual_step("RefundPayment", started))
    release_order(orders, inventory, order, manual_step("ReleaseInventory", started))
    try:
        return orders.update(
            order["order_id"],
            status=model.CANCELLED,
            from_statuses=(model.CANCELLING,),
            steps=manual_step("CancelOrder", started)("cancelled"),
        )
    except StatusConflict as conflict:
        if conflict.status != model.CANCELLED:
            raise
        return None


def manual_step(state: str, started: str) -> Callable[..., dict[str, Any]]:
    """Entries for steps the API or the sweep takes itself, outside the state machine."""

    def entry(outcome: str, **details: Any) -> dict[str, Any]:
        record = {"entered_at": started, "completed_at": clock.timestamp(), "attempts": 1}
        return {state: {**record, "outcome": outcome, **details}}

    return entry
