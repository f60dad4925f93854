"""The nightly sweep of stuck orders: open orders older than a threshold whose workflow ended
without finishing them (a compensation that failed its retries, an execution that timed out
or was stopped, a workflow that never started), settled the way the workflow would have.

Orders are read from the sparse `by-open` index (only open orders are in it), oldest first,
one page at a time: never a Scan, and the cost follows the open orders, not the table. The
sweep stops before its time budget runs out; what it did not reach waits for the next night.

Per order, by what the order's execution says:
- still running: left alone (counted);
- ended (whatever its status: a refused order's execution SUCCEEDED, and an order it left
  open is as stuck as a FAILED one's) or never started: if the goods left (`shipped_at`), the
  order is completed; if it was being cancelled, the cancellation is finished; otherwise its
  charge is refunded, its stock released and it fails (`workflow_ended` or
  `workflow_not_started`);
- handed to the carrier without a record of the parcel (`shipping`): left for a person,
  logged as an error (a refund could pay for goods already on their way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core import clock
from chalicelib.core.observability import logger
from chalicelib.orders import model
from chalicelib.orders.compensation import (
    finish_cancellation,
    manual_step,
    refund_order,
    release_order,
)
from chalicelib.orders.payments import PaymentProvider
from chalicelib.orders.ports import Orders, Stock, Workflow
from chalicelib.orders.records import StatusConflict

PAGE_SIZE = 25
#: Stop taking new orders when less than this is left of the function's time.
SAFETY_MARGIN_MS = 20_000
ENDED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass
class SweepReport:
    examined: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    still_running: int = 0
    needs_attention: int = 0
    errors: int = 0
    out_of_time: bool = False


class SweepIncomplete(Exception):
    """Some orders could not be settled (logged one by one): the run fails, so the schedule's
    retries and alarms see it; what was settled stays settled."""


class StuckOrderSweep:
    def __init__(
        self,
        orders: Orders,
        inventory: Stock,
        payments: PaymentProvider,
        workflow: Workflow,
        threshold: timedelta,
    ) -> None:
        self._orders = orders
        self._inventory = inventory
        self._payments = payments
        self._workflow = workflow
        self._threshold = threshold

    def run(self, at: datetime, remaining_ms: Callable[[], int] | None = None) -> SweepReport:
        """Settle the orders that were open before `at` - threshold (`at`: when the schedule
        fired, so a retried run sweeps the same orders)."""
        before = clock.timestamp(at - self._threshold)
        report = SweepReport()
        for shard in range(model.OPEN_SHARDS):
            after: str | None = None
            while True:
                page, after = self._orders.open_before(f"open#{shard}", before, PAGE_SIZE, after)
                for order in page:
                    if remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS:
                        report.out_of_time = True
                        return self._finish(report)
                    report.examined += 1
                    self._settle_safely(order, report)
                if after is None:
                    break
        return self._finish(report)

    def _settle_safely(self, order: Mapping[str, Any], report: SweepReport) -> None:
        try:
            outcome = self._settle(order)
        except Exception:
            logger.exception("a stuck order could not be settled", order_id=order["order_id"])
            report.errors += 1
            return
        setattr(report, outcome, getattr(report, outcome) + 1)

    def _settle(self, order: Mapping[str, Any]) -> str:
        order_id = order["order_id"]
        started = clock.timestamp()
        if order["status"] == model.CANCELLING:
            finish_cancellation(self._orders, self._inventory, self._payments, order, started)
            return "cancelled"
        execution = self._workflow.status(order_id)
        if execution not in (None, *ENDED):
            return "still_running"
        entry = manual_step("SweepStuckOrder", started)
        if order.get("shipped_at"):
            self._orders.update(
                order_id, status=model.COMPLETED, from_statuses=(model.SHIPPED,),
                steps=entry(f"completed: the workflow ended {execution}"),
            )  # fmt: skip
            return "completed"
        if order["status"] == model.SHIPPING:
            logger.error("a stuck order was handed to the carrier without a parcel record; "
                         "check with the carrier", order_id=order_id)  # fmt: skip
            return "needs_attention"
        refund_order(self._orders, self._payments, order, manual_step("RefundPayment", started))
        release_order(
            self._orders, self._inventory, order, manual_step("ReleaseInventory", started)
        )
        code = "workflow_not_started" if execution is None else "workflow_ended"
        message = (
            "The order's workflow never started."
            if execution is None
            else f"The order's workflow ended ({execution}) before the order was finished."
        )
        try:
            self._orders.update(
                order_id,
                status=model.FAILED,
                from_statuses=(*model.CANCELLABLE, model.FAILED),
                steps=entry(f"failed: {code}"),
                fields={"failure": {"code": code, "message": message, "error": str(execution)}},
            )
        except StatusConflict as conflict:  # settled meanwhile (cancelled, say)
            logger.info("a stuck order settled itself", order_id=order_id, status=conflict.status)
        return "failed"

    def _finish(self, report: SweepReport) -> SweepReport:
        from aws_lambda_powertools.metrics import MetricUnit

        from chalicelib.core.observability import emit_metrics

        counts = {k: int(v) for k, v in asdict(report).items()}
        emit_metrics(
            [(f"StuckOrders{name.title().replace('_', '')}", MetricUnit.Count, value)
             for name, value in counts.items()],
            job="sweep_stuck_orders",
        )  # fmt: skip
        logger.info("stuck orders swept", **counts)
        if report.errors:
            raise SweepIncomplete(f"{report.errors} stuck orders could not be settled")
        return report
