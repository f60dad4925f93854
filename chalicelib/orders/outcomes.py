"""How an order's workflow ends: the errors its steps raise (their class names are what the
state machine's Retry and Catch match), which of them are a normal refusal (`REFUSALS`), and
how a failure is told on the order (`describe_failure`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalicelib.core import clock
from chalicelib.orders import model


class InvalidOrder(Exception):
    """An order breaking the shop's rules, raised only to an execution that asks no answer."""


class OrderConflict(Exception):
    """The order is missing, or in a status the step cannot come from (a bug or a hand edit):
    it fails, and its execution fails, for a person to look at."""


class PaymentError(Exception):
    """The payment provider failed for now: the state machine retries the charge."""


class StepUnavailable(Exception):
    """An AWS dependency failed after its own retries: the state machine retries the step."""


class OrderCancelled(Exception):
    """The order was cancelled while the workflow ran: nothing more is done for it."""


class InvalidTaskInput(Exception):
    """The state machine passed something this step cannot read (a definition error)."""


#: `$.failure.Error`s that are an order's normal end (CheckFailure sends them to the Succeed
#: state OrderRefused): the Choice states' refusals, and a cancellation that overtook a step.
#: Any other failure ends the execution FAILED, for the FailedExecutions alarm.
REFUSALS = ("InvalidOrder", "OutOfStock", "PaymentDeclined", "ShippingError", "OrderCancelled")


def order_problems(order: Mapping[str, Any], products: Mapping[str, Any]) -> list[str]:
    """The business rules an order must meet before any stock or money moves."""
    problems = []
    country = order["shipping_address"]["country"]
    if country not in model.SHIPPING_COUNTRIES:
        problems.append(f"the shop does not deliver to {country}")
    if order["total_amount"] > model.MAX_ORDER_TOTAL:
        limit = model.MAX_ORDER_TOTAL / 100
        problems.append(f"orders over {limit:,.2f} {model.CURRENCY} need a review by the shop")
    for line in order["lines"]:
        product = products.get(line["sku"])
        if product is None or not product.get("active", False):
            problems.append(f"{line['sku']} is no longer sold")
    return problems


#: Step Functions error name -> the order's failure code.
FAILURE_CODES = {
    "InvalidOrder": "invalid_order",
    "OutOfStock": "out_of_stock",
    "PaymentDeclined": "payment_declined",
    "PaymentError": "payment_failed",
    "ShippingError": "shipping_failed",
    "OrderCancelled": "cancelled",
    "States.Timeout": "timed_out",
    "Sandbox.Timedout": "timed_out",
}


def describe_failure(failure: Any) -> dict[str, str]:
    """The order's `failure` from a Catch's {Error, Cause}: a code, a message for people (a
    Lambda error's message, never its stack trace) and the error's name."""
    error = str((failure or {}).get("Error") or "Unknown")
    cause = str((failure or {}).get("Cause") or "")
    try:
        parsed = json.loads(cause)
        message = str(parsed.get("errorMessage", cause)) if isinstance(parsed, dict) else cause
    except ValueError:
        message = cause
    return {"code": FAILURE_CODES.get(error, "error"), "message": message[:500], "error": error}


def notification_entry(state: str, event: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The entry of a notification state (an SNS publish, which records nothing itself) from
    what it left in `notification`: its message id, or the error that stopped it."""
    notification = event.get("notification")
    if not isinstance(notification, dict):
        return {}
    if "message_id" in notification:
        entered = state_timestamp(str(notification.get("entered_at", "")))
        return {state: {"entered_at": entered, "outcome": "sent",
                        "message_id": str(notification["message_id"])}}  # fmt: skip
    failed = describe_failure(notification)
    return {state: {"outcome": f"not sent: {failed['error']}"}}


def state_timestamp(text: str) -> str:
    """Step Functions' time stamps in the app's one format (so they sort with ours)."""
    try:
        return clock.timestamp(clock.parse(text))
    except ValueError:
        return text
