"""The order workflow's steps: what each Lambda task of the state machine does (the machine
itself is declared with the resources, `OrderWorkflow` in infra/resources.json).

Each step reads the order, does its one thing and records it on the order (its status, and
its entry in `steps` with the time Step Functions entered the state and how many attempts it
took), in one conditional write. Step Functions delivers at least once and retries, so every
step is safe to run again: a re-run reservation reserves nothing more, a re-run charge finds
the first charge, a re-run shipment finds its parcel.

A business refusal is an answer, not an error (`valid`, `in_stock`, `approved`, `shipped`
false, with why), which the machine's Choice states branch on: no Lambda error, no failed
execution (`REFUSALS`). The machine asks for answers (`"refusals": "answer"` in the input);
to an execution of an older definition a refusal is still raised (`InvalidOrder`,
`ShippingError`), so functions and machine may deploy in either order. Raised is what went
wrong, its class name the error Retry and Catch match: `PaymentError` (the provider's
transient failures), `StepUnavailable` (an AWS call failed after its retries),
`OrderCancelled` (cancelled under the step), `OrderConflict` (the order is missing or in a
status the step cannot come from: a bug or a hand edit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.core import clock, correlation
from chalicelib.core.aws import retryable
from chalicelib.core.observability import logger
from chalicelib.orders import model
from chalicelib.orders.compensation import refund_order, release_order
from chalicelib.orders.inventory import InventoryBusy
from chalicelib.orders.outcomes import (
    REFUSALS,
    InvalidOrder,
    InvalidTaskInput,
    OrderCancelled,
    OrderConflict,
    PaymentError,
    StepUnavailable,
    describe_failure,
    notification_entry,
    order_problems,
    state_timestamp,
)
from chalicelib.orders.payments import PaymentProvider, ProviderTimeout, ProviderUnavailable
from chalicelib.orders.ports import OrderRecords, Stock
from chalicelib.orders.records import StatusConflict, line_quantities
from chalicelib.orders.shipping import Carrier, ShippingError

__all__ = ["REFUSALS", "InvalidOrder", "OrderCancelled", "OrderConflict", "OrderSteps",
           "PaymentError", "ShippingError", "StepUnavailable", "describe_failure",
           "notification_entry", "order_problems"]  # fmt: skip


@dataclass(frozen=True)
class Step:
    """What the state machine tells every task: the order, the correlation id, and the state
    (its name, when Step Functions entered it, how many retries came before this attempt)."""

    order_id: str
    correlation_id: str
    name: str
    entered_at: str
    retry_count: int

    @classmethod
    def from_event(cls, event: Any) -> Step:
        try:
            step = event["step"]
            order_id = str(event["order_id"])
            parsed = cls(
                order_id,
                str(event.get("correlation_id") or ""),
                str(step["name"]),
                str(step["entered_at"]),
                int(step["retry_count"]),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise InvalidTaskInput(f"not a task input of the order workflow: {exc!r}") from None
        if not model.is_order_id(order_id):
            raise InvalidTaskInput(f"{order_id!r} is not an order id")
        return parsed

    def entry(self, outcome: str, **details: Any) -> dict[str, dict[str, Any]]:
        """This step's entry in the order's `steps`."""
        record = {
            "entered_at": state_timestamp(self.entered_at),
            "completed_at": clock.timestamp(),
            "attempts": self.retry_count + 1,
            "outcome": outcome,
            **details,
        }
        return {self.name: record}


def task(
    action: Callable[[Any, Step, Any], dict[str, Any]],
) -> Callable[[Any, Any], dict[str, Any]]:
    """A step run as a Lambda task: its correlation id and order on every log line; an AWS
    failure worth a retry reported as `StepUnavailable` for the state machine's Retry; and a
    failed attempt recorded in the order's step entry before the error goes to Step Functions
    (a later attempt that succeeds overwrites it), so the order shows what a Catch took."""

    @functools.wraps(action)
    def run(self: OrderSteps, event: Any) -> dict[str, Any]:
        step = Step.from_event(event)
        # The invocation already bound the input's id (`core.correlation.install`); bound
        # again here so that a step run on its own logs it too.
        with (
            correlation.keys_bound(order_id=step.order_id),
            correlation.bound(step.correlation_id or None),
        ):
            try:
                return action(self, step, event)
            except Exception as exc:
                error = _step_error(exc)
                self._record_failure(step, error)
                if error is exc:
                    raise
                raise error from exc

    return run


def _step_error(exc: Exception) -> Exception:
    """The error Step Functions should see for `exc`."""
    if isinstance(exc, InventoryBusy):
        return StepUnavailable(str(exc))
    if retryable(exc):
        return StepUnavailable(f"{type(exc).__name__}: {exc}")
    return exc


class OrderSteps:
    """The steps, over the ports each needs (a step's factory gives it only those)."""

    def __init__(
        self,
        orders: OrderRecords,
        inventory: Stock | None = None,
        payments: PaymentProvider | None = None,
        carrier: Carrier | None = None,
    ) -> None:
        self._orders = orders
        self._inventory = inventory
        self._payments = payments
        self._carrier = carrier

    @task
    def validate(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        if order["status"] != model.PENDING:
            self._not_cancelled(order)
            return {"valid": True}  # validated by an earlier attempt
        assert self._inventory is not None
        products = self._inventory.get_many([line["sku"] for line in order["lines"]])
        problems = order_problems(order, products)
        if problems:
            reason = "; ".join(problems)
            answer = {"valid": False, "reason": reason}
            return self._refused(step, event, f"invalid: {reason}", answer, InvalidOrder(reason))
        self._update(step, model.VALIDATED, (model.PENDING,), step.entry("valid"))
        return {"valid": True}

    @task
    def reserve(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        if order.get("reserved_at"):
            return {"in_stock": True, "message": "reserved"}
        self._not_cancelled(order)
        assert self._inventory is not None
        lines = line_quantities(order)
        change = {
            "status": model.RESERVED,
            "from_statuses": (model.VALIDATED,),
            "steps": step.entry("reserved"),
            "fields": {"reserved_at": clock.timestamp()},
        }
        try:
            reservation = self._inventory.reserve(step.order_id, lines, change)
        except StatusConflict as conflict:
            raise _unexpected(step, conflict) from None
        if reservation.in_stock:
            return {"in_stock": True, "message": "reserved"}
        short = ", ".join(f"{sku} ({n} wanted)" for sku, n in reservation.short.items())
        message = f"Not enough stock for {short}."
        self._orders.update(step.order_id, steps=step.entry(f"out of stock: {short}"))
        return {"in_stock": False, "message": message}

    @task
    def charge(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        payment = order.get("payment") or {}
        if payment.get("status") == "approved":
            return {"approved": True, "payment_id": payment["payment_id"], "message": "approved"}
        if order["status"] != model.RESERVED:
            self._not_cancelled(order)
            raise _unexpected(step, StatusConflict(step.order_id, order["status"]))
        assert self._payments is not None
        try:
            charge = self._payments.charge(
                step.order_id, order["total_amount"], order["currency"], order["payment_method"]
            )
        except (ProviderUnavailable, ProviderTimeout) as exc:
            raise PaymentError(str(exc)) from exc
        record = {"payment_id": charge.payment_id, "status": charge.status, "amount": charge.amount}
        if not charge.approved:
            record["decline_code"] = charge.decline_code
            outcome = f"declined: {charge.decline_code}"
            self._orders.update(
                step.order_id, steps=step.entry(outcome), fields={"payment": record}
            )
            message = f"The payment was declined ({charge.decline_code})."
            return {"approved": False, "payment_id": charge.payment_id, "message": message}
        try:
            self._update(
                step, model.PAID, (model.RESERVED,), step.entry("approved"), {"payment": record}
            )
        except OrderCancelled:
            # Cancelled while the provider charged: give the money back now, as the
            # cancellation may have looked for a charge before this one existed.
            self._payments.refund(step.order_id)
            raise
        return {"approved": True, "payment_id": charge.payment_id, "message": "approved"}

    @task
    def ship(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        if order.get("shipped_at"):
            return {"shipped": True, "tracking_number": order["tracking_number"]}
        if order["status"] == model.PAID:
            self._update(step, model.SHIPPING, (model.PAID,), {})
        elif order["status"] != model.SHIPPING:
            self._not_cancelled(order)
            raise _unexpected(step, StatusConflict(step.order_id, order["status"]))
        assert self._carrier is not None and self._inventory is not None
        lines = line_quantities(order)
        address = order["shipping_address"]
        try:
            shipment = self._carrier.create_shipment(step.order_id, address, lines)
        except ShippingError as refused:
            answer = {"shipped": False, "reason": str(refused)}
            return self._refused(step, event, f"refused: {refused}", answer, refused)
        change = {
            "status": model.SHIPPED,
            "from_statuses": (model.SHIPPING,),
            "steps": step.entry("shipped", tracking_number=shipment.tracking_number),
            "fields": {
                "shipped_at": clock.timestamp(),
                "tracking_number": shipment.tracking_number,
            },
        }
        self._inventory.ship(step.order_id, lines, change)
        return {"shipped": True, "tracking_number": shipment.tracking_number,
                "carrier": shipment.carrier}  # fmt: skip

    @task
    def complete(self, step: Step, event: Any) -> dict[str, Any]:
        steps = {**notification_entry("NotifyCustomer", event), **step.entry("completed")}
        self._update(step, model.COMPLETED, (model.SHIPPED, model.COMPLETED), steps)
        return {"status": model.COMPLETED}

    @task
    def refund(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        assert self._payments is not None
        refunded = refund_order(self._orders, self._payments, order, step.entry)
        return {"refunded": refunded}

    @task
    def release(self, step: Step, event: Any) -> dict[str, Any]:
        order = self._order(step)
        assert self._inventory is not None
        return {"released": release_order(self._orders, self._inventory, order, step.entry)}

    @task
    def fail(self, step: Step, event: Any) -> dict[str, Any]:
        """Mark the order failed with the reason; an order cancelled meanwhile stays so."""
        failure = describe_failure(event.get("failure"))
        steps = {
            **notification_entry("NotifyFailure", event),
            **step.entry(f"failed: {failure['code']}"),
        }
        open_statuses = (*model.CANCELLABLE, model.SHIPPING, model.FAILED)
        try:
            self._orders.update(
                step.order_id,
                status=model.FAILED,
                from_statuses=open_statuses,
                steps=steps,
                fields={"failure": failure},
            )
        except StatusConflict as conflict:
            return {"status": conflict.status}
        return {"status": model.FAILED}

    # --- helpers --------------------------------------------------------------------------

    def _refused(
        self, step: Step, event: Any, outcome: str, answer: dict[str, Any], error: Exception
    ) -> dict[str, Any]:
        """A refusal recorded and answered, or raised to an execution that asks no answer."""
        if event.get("refusals") != "answer":
            raise error
        self._orders.update(step.order_id, steps=step.entry(outcome))
        return answer

    def _record_failure(self, step: Step, error: Exception) -> None:
        """Best effort: the store may be what failed."""
        outcome = f"failed: {type(error).__name__}: {str(error)[:300]}"
        try:
            self._orders.update(step.order_id, steps=step.entry(outcome))
        except Exception:
            logger.warning("could not record a failed step", step=step.name, exc_info=True)

    def _order(self, step: Step) -> dict[str, Any]:
        order = self._orders.get(step.order_id)
        if order is None:
            raise OrderConflict(f"there is no order {step.order_id}")
        return order

    def _update(
        self,
        step: Step,
        status: str,
        from_statuses: tuple[str, ...],
        steps: Mapping[str, Any],
        fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return self._orders.update(
                step.order_id, status=status, from_statuses=from_statuses, steps=steps,
                fields=fields,
            )  # fmt: skip
        except StatusConflict as conflict:
            if status is not None and conflict.status == status:
                # Moved already, by this write applied with its answer lost (the retry meets
                # it) or by an earlier attempt of this step: done, as the step is idempotent.
                return self._order(step)
            raise _unexpected(step, conflict) from None

    @staticmethod
    def _not_cancelled(order: Mapping[str, Any]) -> None:
        if order["status"] in (model.CANCELLING, model.CANCELLED):
            raise OrderCancelled(f"order {order['order_id']} was cancelled")


def _unexpected(step: Step, conflict: StatusConflict) -> Exception:
    if conflict.status in (model.CANCELLING, model.CANCELLED):
        return OrderCancelled(f"order {step.order_id} was cancelled")
    return OrderConflict(f"order {step.order_id} is {conflict.status}, not ready for {step.name}")
