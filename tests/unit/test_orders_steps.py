"""The order workflow's steps with in-memory ports: each does its one thing once, records it
on the order, answers a business refusal (for the state machine's Choice states) and raises
only what went wrong, with the error names its Retry and Catch match."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.orders import model
from chalicelib.orders.shipping import ShippingError
from chalicelib.orders.steps import (
    InvalidOrder,
    InvalidTaskInput,
    OrderCancelled,
    OrderConflict,
    OrderSteps,
    PaymentError,
    StepUnavailable,
    describe_failure,
    notification_entry,
)
from tests.unit.orders_fakes import (
    MemoryCarrier,
    MemoryOrders,
    MemoryPayments,
    MemoryStock,
    make_order,
    task_event,
)


class World:
    def __init__(self, available: int = 5) -> None:
        self.orders = MemoryOrders()
        self.stock = MemoryStock(self.orders, {"BOOK": {"name": "Book", "unit_amount": 1000,
                                                        "available": available}})  # fmt: skip
        self.payments = MemoryPayments()
        self.carrier = MemoryCarrier()
        self.steps = OrderSteps(self.orders, self.stock, self.payments, self.carrier)

    def add(self, status: str = model.PENDING, **extra: Any) -> str:
        order = make_order(status=status, **extra)
        self.orders.items[order["order_id"]] = order
        return str(order["order_id"])

    def order(self, order_id: str) -> dict[str, Any]:
        found = self.orders.get(order_id)
        assert found is not None
        return found

    def book(self) -> dict[str, Any]:
        return self.stock.products["BOOK"]


@pytest.fixture
def world() -> World:
    return World()


def test_a_valid_order_is_validated_and_the_step_recorded(world: World) -> None:
    order_id = world.add()
    event = task_event(order_id, "ValidateOrder")
    assert world.steps.validate(event) == {"valid": True}
    order = world.order(order_id)
    assert order["status"] == model.VALIDATED
    entry = order["steps"]["ValidateOrder"]
    assert entry["outcome"] == "valid" and entry["attempts"] == 1
    assert entry["entered_at"] == event["step"]["entered_at"]


def test_a_status_move_whose_answer_was_lost_is_done_not_a_conflict(world: World) -> None:
    """The step's conditional write is applied but its answer lost, and the retry of the same
    write (botocore's, or the state machine's retry of a timed-out attempt still running)
    meets the status it set itself: the step is done, not an OrderConflict."""
    from chalicelib.orders.records import StatusConflict

    order_id = world.add()
    update = world.orders.update

    def applied_then_refused(order_id: str, **change: Any) -> dict[str, Any]:
        done = update(order_id, **change)
        raise StatusConflict(order_id, done["status"])

    world.orders.update = applied_then_refused  # type: ignore[method-assign]
    assert world.steps.validate(task_event(order_id, "ValidateOrder")) == {"valid": True}
    assert world.order(order_id)["status"] == model.VALIDATED


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"shipping_address": {"country": "US"}}, "does not deliver to US"),
        ({"lines": [("BOOK", 100, 20_000)]}, "over 10,000.00 EUR"),
        ({"lines": [("GONE", 1, 100)]}, "GONE is no longer sold"),
    ],
)
def test_an_order_breaking_a_rule_is_refused_by_validation_and_says_why(
    world: World, change: dict[str, Any], problem: str
) -> None:
    extra = dict(change)
    order_id = world.add(lines=extra.pop("lines", (("BOOK", 1, 1000),)))
    if "shipping_address" in extra:
        world.orders.items[order_id]["shipping_address"].update(extra["shipping_address"])
    answer = world.steps.validate(task_event(order_id, "ValidateOrder", refusals="answer"))
    assert answer["valid"] is False and problem in answer["reason"]
    order = world.order(order_id)
    assert order["status"] == model.PENDING
    assert order["steps"]["ValidateOrder"]["outcome"] == f"invalid: {answer['reason']}"


def test_a_withdrawn_product_is_refused_by_validation(world: World) -> None:
    order_id = world.add(lines=(("BOOK", 1, 1000),))
    world.stock.products["BOOK"]["active"] = False
    answer = world.steps.validate(task_event(order_id, "ValidateOrder", refusals="answer"))
    assert answer == {"valid": False, "reason": "BOOK is no longer sold"}


def test_a_refusal_is_raised_to_an_execution_that_asks_no_answer(world: World) -> None:
    """An execution of the definition before answers (a deploy in progress) reads errors."""
    order_id = world.add(lines=(("BOOK", 1, 1000),))
    world.stock.products["BOOK"]["active"] = False
    with pytest.raises(InvalidOrder, match="BOOK is no longer sold"):
        world.steps.validate(task_event(order_id, "ValidateOrder"))
    outcome = world.order(order_id)["steps"]["ValidateOrder"]["outcome"]
    assert outcome == "failed: InvalidOrder: BOOK is no longer sold"
    paid = world.add(status=model.PAID, reserved_at="x", lines=(("BOOK", 1, 1000),))
    world.carrier.refuse = True
    with pytest.raises(ShippingError, match="refused"):
        world.steps.ship(task_event(paid, "ShipOrder"))


def test_an_order_that_is_not_there_or_not_ready_is_a_conflict_not_a_refusal(
    world: World,
) -> None:
    missing = str(make_order()["order_id"])
    with pytest.raises(OrderConflict, match="there is no order"):
        world.steps.validate(task_event(missing, "ValidateOrder"))
    pending = world.add()
    with pytest.raises(OrderConflict, match="is pending, not ready for ChargePayment"):
        world.steps.charge(task_event(pending, "ChargePayment"))
    assert world.order(pending)["steps"]["ChargePayment"]["outcome"].startswith(
        "failed: OrderConflict"
    )


def test_a_step_with_input_it_cannot_read_says_so(world: World) -> None:
    with pytest.raises(InvalidTaskInput):
        world.steps.validate({"order_id": "x"})
    with pytest.raises(InvalidTaskInput):
        world.steps.validate(task_event("not-a-uuid", "ValidateOrder"))


def test_reservation_holds_the_stock_once(world: World) -> None:
    order_id = world.add(status=model.VALIDATED, lines=(("BOOK", 2, 1000),))
    event = task_event(order_id, "ReserveInventory")
    assert world.steps.reserve(event)["in_stock"] is True
    assert world.steps.reserve(event)["in_stock"] is True  # Step Functions ran it again
    assert (world.book()["available"], world.book()["reserved"]) == (3, 2)
    order = world.order(order_id)
    assert order["status"] == model.RESERVED and order["reserved_at"]


def test_not_enough_stock_takes_the_out_of_stock_branch_and_holds_nothing(world: World) -> None:
    order_id = world.add(status=model.VALIDATED, lines=(("BOOK", 6, 1000),))
    result = world.steps.reserve(task_event(order_id, "ReserveInventory"))
    assert result == {"in_stock": False, "message": "Not enough stock for BOOK (6 wanted)."}
    assert (world.book()["available"], world.book()["reserved"]) == (5, 0)
    order = world.order(order_id)
    assert order["status"] == model.VALIDATED
    assert order["steps"]["ReserveInventory"]["outcome"] == "out of stock: BOOK (6 wanted)"


def test_busy_stock_is_a_step_to_retry(world: World) -> None:
    order_id = world.add(status=model.VALIDATED)
    world.stock.busy = True
    with pytest.raises(StepUnavailable):
        world.steps.reserve(task_event(order_id, "ReserveInventory"))


def test_a_cancelled_order_is_not_reserved(world: World) -> None:
    order_id = world.add(status=model.CANCELLING)
    with pytest.raises(OrderCancelled):
        world.steps.reserve(task_event(order_id, "ReserveInventory"))
    assert world.book()["available"] == 5


def test_the_charge_is_taken_once_and_the_order_paid(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    first = world.steps.charge(task_event(order_id, "ChargePayment"))
    again = world.steps.charge(task_event(order_id, "ChargePayment", retry_count=1))
    assert first["approved"] and again["payment_id"] == first["payment_id"]
    assert world.payments.calls == 1
    order = world.order(order_id)
    assert order["status"] == model.PAID
    assert order["payment"] == {"payment_id": first["payment_id"], "status": "approved",
                                "amount": 2000}  # fmt: skip


def test_a_declined_payment_takes_the_payment_failed_branch(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    world.payments.script[order_id] = ["decline"]
    result = world.steps.charge(task_event(order_id, "ChargePayment"))
    assert result["approved"] is False
    assert result["message"] == "The payment was declined (card_declined)."
    order = world.order(order_id)
    assert order["status"] == model.RESERVED
    assert order["payment"]["status"] == "declined"


def test_a_provider_outage_is_a_payment_error_for_the_retry(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    world.payments.script[order_id] = ["unavailable", "approve"]
    with pytest.raises(PaymentError):
        world.steps.charge(task_event(order_id, "ChargePayment"))
    failed = world.order(order_id)["steps"]["ChargePayment"]
    assert failed["outcome"].startswith("failed: PaymentError") and failed["attempts"] == 1
    world.steps.charge(task_event(order_id, "ChargePayment", retry_count=1))
    entry = world.order(order_id)["steps"]["ChargePayment"]
    assert (entry["outcome"], entry["attempts"]) == ("approved", 2)


def test_a_lost_answer_is_retried_and_finds_the_charge(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    world.payments.script[order_id] = ["timeout", "approve"]
    with pytest.raises(PaymentError):
        world.steps.charge(task_event(order_id, "ChargePayment"))
    world.steps.charge(task_event(order_id, "ChargePayment", retry_count=1))
    assert len(world.payments.charges) == 1
    assert world.order(order_id)["status"] == model.PAID


def test_an_order_cancelled_while_charging_gets_its_money_back(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    original = world.payments.charge

    def cancel_meanwhile(*args: Any) -> Any:
        charge = original(*args)
        world.orders.items[order_id]["status"] = model.CANCELLED
        return charge

    world.payments.charge = cancel_meanwhile  # type: ignore[method-assign]
    with pytest.raises(OrderCancelled):
        world.steps.charge(task_event(order_id, "ChargePayment"))
    assert world.payments.charges[order_id].refund_id


def test_an_aws_failure_worth_a_retry_becomes_step_unavailable(world: World) -> None:
    order_id = world.add(status=model.RESERVED)

    def throttled(*args: Any) -> Any:
        error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}
        raise ClientError(error, "PutItem")

    world.payments.charge = throttled  # type: ignore[method-assign]
    with pytest.raises(StepUnavailable, match="ClientError"):
        world.steps.charge(task_event(order_id, "ChargePayment"))


def test_shipping_hands_the_parcel_over_once(world: World) -> None:
    order_id = world.add(status=model.VALIDATED, lines=(("BOOK", 2, 1000),))
    world.steps.reserve(task_event(order_id, "ReserveInventory"))
    world.steps.charge(task_event(order_id, "ChargePayment"))
    first = world.steps.ship(task_event(order_id, "ShipOrder"))
    again = world.steps.ship(task_event(order_id, "ShipOrder", retry_count=1))
    assert again["tracking_number"] == first["tracking_number"]
    assert len(world.carrier.shipments) == 1
    assert (world.book()["available"], world.book()["reserved"]) == (3, 0)
    order = world.order(order_id)
    assert order["status"] == model.SHIPPED
    assert order["tracking_number"] == first["tracking_number"]


def test_a_refused_parcel_is_an_answer_and_keeps_the_stock_held(world: World) -> None:
    order_id = world.add(status=model.PAID, reserved_at="x", lines=(("BOOK", 1, 1000),))
    world.carrier.refuse = True
    answer = world.steps.ship(task_event(order_id, "ShipOrder", refusals="answer"))
    assert answer == {"shipped": False, "reason": "refused"}
    order = world.order(order_id)
    assert order["status"] == model.SHIPPING
    assert order["steps"]["ShipOrder"]["outcome"] == "refused: refused"
    assert world.carrier.shipments == {} and world.book()["available"] == 5


def test_completion_records_the_notification(world: World) -> None:
    order_id = world.add(status=model.SHIPPED)
    notification = {"message_id": "m-1", "entered_at": "2026-11-26T12:00:01.5+00:00"}
    world.steps.complete(task_event(order_id, "CompleteOrder", notification=notification))
    order = world.order(order_id)
    assert order["status"] == model.COMPLETED and "open_shard" not in order
    assert order["steps"]["NotifyCustomer"] == {
        "entered_at": "2026-11-26T12:00:01.500000Z",
        "outcome": "sent",
        "message_id": "m-1",
    }


def test_compensation_refunds_and_releases_once(world: World) -> None:
    order_id = world.add(status=model.VALIDATED, lines=(("BOOK", 2, 1000),))
    world.steps.reserve(task_event(order_id, "ReserveInventory"))
    world.steps.charge(task_event(order_id, "ChargePayment"))
    for attempt in range(2):
        refunded = world.steps.refund(task_event(order_id, "RefundPayment", retry_count=attempt))
        released = world.steps.release(task_event(order_id, "ReleaseInventory", attempt))
        assert refunded == {"refunded": True}
        assert released == {"released": attempt == 0}
    assert (world.book()["available"], world.book()["reserved"]) == (5, 0)
    order = world.order(order_id)
    assert order["payment"]["status"] == "refunded" and order["payment"]["refund_id"]
    assert order["steps"]["ReleaseInventory"]["outcome"] == "nothing held"


def test_nothing_to_refund_when_nothing_was_charged(world: World) -> None:
    order_id = world.add(status=model.RESERVED)
    assert world.steps.refund(task_event(order_id, "RefundPayment")) == {"refunded": False}
    assert world.order(order_id)["steps"]["RefundPayment"]["outcome"] == "nothing to refund"


def test_failing_an_order_records_the_reason_without_the_stack_trace(world: World) -> None:
    order_id = world.add(status=model.VALIDATED)
    cause = {"errorMessage": "the shop does not deliver to US", "errorType": "InvalidOrder",
             "stackTrace": ["File app.py"]}  # fmt: skip
    failure = {"Error": "InvalidOrder", "Cause": json.dumps(cause)}
    notification = {"Error": "SNS.AuthorizationErrorException", "Cause": "denied"}
    event = task_event(order_id, "FailOrder", failure=failure, notification=notification)
    assert world.steps.fail(event) == {"status": model.FAILED}
    order = world.order(order_id)
    assert order["failure"] == {"code": "invalid_order", "error": "InvalidOrder",
                                "message": "the shop does not deliver to US"}  # fmt: skip
    assert order["steps"]["NotifyFailure"]["outcome"] == "not sent: SNS.AuthorizationErrorException"
    assert "open_shard" not in order


def test_failing_a_cancelled_order_leaves_it_cancelled(world: World) -> None:
    order_id = world.add(status=model.CANCELLED)
    event = task_event(order_id, "FailOrder", failure={"Error": "OrderCancelled", "Cause": ""})
    assert world.steps.fail(event) == {"status": model.CANCELLED}
    assert world.order(order_id)["status"] == model.CANCELLED


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ({"Error": "OutOfStock", "Cause": "Not enough"}, ("out_of_stock", "Not enough")),
        (
            {"Error": "PaymentError", "Cause": '{"errorMessage": "down"}'},
            ("payment_failed", "down"),
        ),
        ({"Error": "States.Timeout", "Cause": ""}, ("timed_out", "")),
        ({"Error": "Weird", "Cause": "[1]"}, ("error", "[1]")),
        (None, ("error", "")),
    ],
)
def test_failures_read_as_codes_and_messages(failure: Any, expected: tuple[str, str]) -> None:
    described = describe_failure(failure)
    assert (described["code"], described["message"]) == expected


def test_no_notification_no_entry() -> None:
    assert notification_entry("NotifyCustomer", {}) == {}
