"""The nightly sweep with in-memory ports: only open orders older than the threshold, each
settled by what its execution says, within the time budget; a failure is reported, never
swallowed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.orders import model
from chalicelib.orders.sweep import PAGE_SIZE, StuckOrderSweep, SweepIncomplete
from tests.unit.orders_fakes import (
    MemoryOrders,
    MemoryPayments,
    MemoryStock,
    MemoryWorkflow,
    make_order,
)


class Night:
    def __init__(self) -> None:
        self.orders = MemoryOrders()
        self.stock = MemoryStock(self.orders, {"BOOK": {"name": "Book", "unit_amount": 1000,
                                                        "available": 100}})  # fmt: skip
        self.payments = MemoryPayments()
        self.workflow = MemoryWorkflow()
        self.sweep = StuckOrderSweep(
            self.orders, self.stock, self.payments, self.workflow, timedelta(minutes=60)
        )

    def add(self, status: str, execution: str | None, **extra: Any) -> str:
        order = make_order(status=status, lines=(("BOOK", 2, 1000),), **extra)
        self.orders.items[order["order_id"]] = order
        if execution is not None:
            self.workflow.statuses[order["order_id"]] = execution
        return str(order["order_id"])

    def reserve(self, order_id: str) -> None:
        self.orders.items[order_id]["reserved_at"] = "t"
        self.stock.products["BOOK"]["available"] -= 2
        self.stock.products["BOOK"]["reserved"] += 2

    def status(self, order_id: str) -> str:
        return str(self.orders.items[order_id]["status"])


@pytest.fixture
def night() -> Night:
    return Night()


def later(hours: float = 2) -> Any:
    return clock.now() + timedelta(hours=hours)


def test_an_order_whose_workflow_ended_is_compensated_and_failed(night: Night) -> None:
    order_id = night.add(model.PAID, "ABORTED")
    night.reserve(order_id)
    night.payments.charge(order_id, 2000, "EUR", "pm_card_visa")
    report = night.sweep.run(later())
    assert (report.examined, report.failed) == (1, 1)
    order = night.orders.items[order_id]
    assert order["status"] == model.FAILED and "open_shard" not in order
    assert order["failure"]["code"] == "workflow_ended"
    assert night.payments.charges[order_id].refund_id
    assert night.stock.products["BOOK"]["available"] == 100


@pytest.mark.parametrize("ended", ["SUCCEEDED", "FAILED", "TIMED_OUT"])
def test_an_order_left_open_by_an_execution_ended_any_way_is_settled(
    night: Night, ended: str
) -> None:
    """A refused order's execution SUCCEEDED: one that left its order open is stuck too."""
    order_id = night.add(model.VALIDATED, ended)
    assert night.sweep.run(later()).failed == 1
    failure = night.orders.items[order_id]["failure"]
    assert (failure["code"], failure["error"]) == ("workflow_ended", ended)


def test_a_workflow_that_never_started_fails_its_order(night: Night) -> None:
    order_id = night.add(model.PENDING, None)
    assert night.sweep.run(later()).failed == 1
    assert night.orders.items[order_id]["failure"]["code"] == "workflow_not_started"


def test_running_and_recent_orders_are_left_alone(night: Night, app_clock: Any) -> None:
    running = night.add(model.RESERVED, "RUNNING")
    app_clock.advance(minutes=90)
    recent = night.add(model.VALIDATED, "FAILED")
    report = night.sweep.run(clock.now())
    assert (report.examined, report.still_running) == (1, 1)
    assert (night.status(running), night.status(recent)) == (model.RESERVED, model.VALIDATED)


def test_shipped_goods_make_a_completed_order(night: Night) -> None:
    order_id = night.add(model.SHIPPED, "FAILED", shipped_at="t")
    assert night.sweep.run(later()).completed == 1
    assert night.status(order_id) == model.COMPLETED


def test_a_cancellation_left_half_way_is_finished(night: Night) -> None:
    order_id = night.add(model.CANCELLING, "ABORTED")
    night.reserve(order_id)
    assert night.sweep.run(later()).cancelled == 1
    assert night.status(order_id) == model.CANCELLED
    assert night.stock.products["BOOK"]["available"] == 100


def test_a_parcel_without_a_record_is_left_for_a_person(night: Night) -> None:
    order_id = night.add(model.SHIPPING, "FAILED")
    night.payments.charge(order_id, 2000, "EUR", "pm_card_visa")
    assert night.sweep.run(later()).needs_attention == 1
    assert night.status(order_id) == model.SHIPPING
    assert not night.payments.charges[order_id].refund_id


def test_every_page_of_every_shard_is_swept(night: Night) -> None:
    ids = [night.add(model.VALIDATED, "TIMED_OUT") for _ in range(PAGE_SIZE * 2 + 3)]
    report = night.sweep.run(later())
    assert report.failed == len(ids)
    assert all(night.status(order_id) == model.FAILED for order_id in ids)


def test_the_sweep_stops_before_its_time_runs_out(night: Night) -> None:
    for _ in range(5):
        night.add(model.VALIDATED, "FAILED")
    budget = iter([60_000, 60_000, 1_000])
    report = night.sweep.run(later(), remaining_ms=lambda: next(budget))
    assert (report.examined, report.out_of_time) == (2, True)
    assert sum(night.status(o) == model.FAILED for o in night.orders.items) == 2


def test_one_order_that_cannot_be_settled_does_not_stop_the_others(night: Night) -> None:
    broken = night.add(model.VALIDATED, "FAILED")
    fine = night.add(model.VALIDATED, "FAILED")
    original = night.workflow.status

    def status(order_id: str) -> str | None:
        if order_id == broken:
            raise RuntimeError("Step Functions is down")
        return original(order_id)

    night.workflow.status = status  # type: ignore[method-assign]
    with pytest.raises(SweepIncomplete, match="1 stuck orders"):
        night.sweep.run(later())
    assert night.status(fine) == model.FAILED
    assert night.status(broken) == model.VALIDATED


def test_terminal_orders_are_not_in_the_sweeps_index(night: Night) -> None:
    order_id = night.add(model.VALIDATED, "FAILED")
    night.orders.update(order_id, status=model.COMPLETED)
    assert night.sweep.run(later()).examined == 0
