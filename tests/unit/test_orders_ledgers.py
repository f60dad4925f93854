"""The test-mode payment provider and carrier shipped with the orders domain, on their DynamoDB
tables in moto (in process, provisioned from infra/resources.json): what each test payment
method does, one charge and one refund per key, one shipment per order."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.core import aws as aws_clients
from chalicelib.core.dynamo import from_item
from chalicelib.orders.payments import (
    Charge,
    DynamoPaymentLedger,
    ProviderTimeout,
    ProviderUnavailable,
)
from chalicelib.orders.shipping import DynamoTestCarrier, Shipment, ShippingError
from tests.unit.orders_aws import ADDRESS, PAYMENTS, SHIPMENTS, atomic_writes

__all__ = ["atomic_writes"]  # a fixture


@pytest.fixture
def ledger(aws: dict[str, str]) -> DynamoPaymentLedger:
    return DynamoPaymentLedger(PAYMENTS)


@pytest.fixture
def carrier(aws: dict[str, str]) -> DynamoTestCarrier:
    return DynamoTestCarrier(SHIPMENTS)


def key() -> str:
    return str(uuid.uuid4())


def stored(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    item = aws_clients.client("dynamodb").get_item(TableName=table, Key=key).get("Item")
    return from_item(item) if item else None


class Lockstep:
    """The app's DynamoDB client, except that each thread's first `operation` call waits until
    `parties` threads have reached it: all of them read (or write) before any goes on, the
    interleaving that makes a race."""

    def __init__(self, operation: str, parties: int) -> None:
        self.real = aws_clients.client("dynamodb")
        self.operation, self.barrier, self.seen = (
            operation,
            threading.Barrier(parties),
            threading.local(),
        )

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.real, name)
        if name != self.operation:
            return call

        def in_step(**request: Any) -> Any:
            if not getattr(self.seen, "waited", False):
                self.seen.waited = True
                self.barrier.wait(timeout=30)
            return call(**request)

        return in_step


def at_once(times: int, call: Callable[[], Any]) -> list[Any]:
    """`call` from `times` threads; what each returned or raised."""
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(call())
        except Exception as error:  # the callers assert on what came back
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- payments -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pm_card_visa", "pm_card_mastercard"])
def test_a_good_card_is_charged(ledger: DynamoPaymentLedger, method: str) -> None:
    order_id = key()
    charge = ledger.charge(order_id, 2599, "EUR", method)
    assert charge.approved and charge.status == "approved"
    assert (charge.amount, charge.currency, charge.decline_code, charge.refund_id) == (
        2599, "EUR", "", ""
    )  # fmt: skip
    assert re.fullmatch(r"pay_[0-9a-f]{24}", charge.payment_id)
    assert ledger.find_charge(order_id) == charge
    assert ledger.find_charge(key()) is None


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_declined", "card_declined"),
        ("pm_card_insufficient_funds", "insufficient_funds"),
        ("pm_card_amex", "unknown_payment_method"),
        ("pm_card_unavailable_x", "unknown_payment_method"),
    ],
)
def test_a_bad_card_is_declined(ledger: DynamoPaymentLedger, method: str, code: str) -> None:
    order_id = key()
    charge = ledger.charge(order_id, 500, "EUR", method)
    assert not charge.approved and charge.status == "declined"
    assert (charge.decline_code, charge.amount) == (code, 500)
    assert ledger.find_charge(order_id) == charge


def test_a_key_is_charged_once_whatever_comes_later(ledger: DynamoPaymentLedger) -> None:
    approved, declined = key(), key()
    first = ledger.charge(approved, 1000, "EUR", "pm_card_visa")
    assert ledger.charge(approved, 9999, "EUR", "pm_card_declined") == first
    refused = ledger.charge(declined, 1000, "EUR", "pm_card_declined")
    assert ledger.charge(declined, 1000, "EUR", "pm_card_visa") == refused  # needs a new key
    other = ledger.charge(key(), 1000, "EUR", "pm_card_visa")
    assert other.payment_id != first.payment_id


def test_an_unavailable_provider_charges_nothing_until_it_answers(
    ledger: DynamoPaymentLedger,
) -> None:
    order_id = key()
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            ledger.charge(order_id, 700, "EUR", "pm_card_unavailable_2")
        assert ledger.find_charge(order_id) is None
        assert ledger.refund(order_id) is None
    charge = ledger.charge(order_id, 700, "EUR", "pm_card_unavailable_2")
    assert charge.approved and charge.amount == 700
    assert ledger.charge(order_id, 700, "EUR", "pm_card_unavailable_2") == charge


def test_a_lost_answer_still_took_the_money_once(ledger: DynamoPaymentLedger) -> None:
    order_id = key()
    with pytest.raises(ProviderTimeout):
        ledger.charge(order_id, 800, "EUR", "pm_card_timeout_2")
    taken = ledger.find_charge(order_id)
    assert taken is not None and taken.approved and taken.amount == 800
    with pytest.raises(ProviderTimeout):
        ledger.charge(order_id, 800, "EUR", "pm_card_timeout_2")
    assert ledger.find_charge(order_id) == taken
    assert ledger.charge(order_id, 800, "EUR", "pm_card_timeout_2") == taken


@pytest.mark.parametrize("method", ["pm_card_unavailable_0", "pm_card_timeout_0"])
def test_no_failure_asked_for_means_none(ledger: DynamoPaymentLedger, method: str) -> None:
    charge = ledger.charge(key(), 100, "EUR", method)
    assert charge.approved


def test_an_approved_charge_is_refunded_once(ledger: DynamoPaymentLedger) -> None:
    order_id = key()
    charge = ledger.charge(order_id, 4200, "EUR", "pm_card_visa")
    refunded = ledger.refund(order_id)
    assert refunded is not None and re.fullmatch(r"re_[0-9a-f]{24}", refunded.refund_id)
    assert refunded == Charge(
        charge.payment_id, "approved", 4200, "EUR", refund_id=refunded.refund_id
    )
    assert ledger.find_charge(order_id) == refunded
    assert ledger.refund(order_id) == refunded
    refund = stored(PAYMENTS, {"pk": {"S": f"REFUND#{order_id}"}})
    assert refund is not None
    assert (refund["refund_id"], refund["payment_id"], refund["amount"]) == (
        refunded.refund_id, charge.payment_id, 4200
    )  # fmt: skip
    # charging again under the key answers with the (refunded) charge, takes nothing new
    assert ledger.charge(order_id, 4200, "EUR", "pm_card_visa") == refunded


def test_nothing_to_refund_without_an_approved_charge(ledger: DynamoPaymentLedger) -> None:
    declined = key()
    ledger.charge(declined, 100, "EUR", "pm_card_declined")
    assert ledger.refund(declined) is None
    assert ledger.refund(key()) is None
    assert ledger.find_charge(declined).refund_id == ""  # type: ignore[union-attr]


@pytest.mark.usefixtures("atomic_writes")
def test_concurrent_attempts_make_one_charge_and_one_refund(ledger: DynamoPaymentLedger) -> None:
    order_id = key()
    reading = Lockstep("get_item", 10)  # every attempt looks for the charge before any makes it
    racing = DynamoPaymentLedger(PAYMENTS, lambda: reading)
    charges = at_once(10, lambda: racing.charge(order_id, 300, "EUR", "pm_card_visa"))
    assert all(isinstance(charge, Charge) for charge in charges), charges
    charged = ledger.find_charge(order_id)
    assert charged is not None
    assert {charge.payment_id for charge in charges} == {charged.payment_id}

    reading = Lockstep("get_item", 10)
    racing = DynamoPaymentLedger(PAYMENTS, lambda: reading)
    refunds = at_once(10, lambda: racing.refund(order_id))
    assert all(isinstance(refund, Charge) for refund in refunds), refunds
    refunded = ledger.find_charge(order_id)
    assert refunded is not None and refunded.refund_id
    assert {refund.refund_id for refund in refunds} == {refunded.refund_id}


# --- shipping -------------------------------------------------------------------------------


def test_a_parcel_gets_a_tracking_number(carrier: DynamoTestCarrier) -> None:
    order_id = key()
    shipment = carrier.create_shipment(order_id, ADDRESS, [("MUG", 2), ("PEN", 1)])
    assert re.fullmatch(r"TT[0-9A-F]{16}", shipment.tracking_number)
    assert shipment.carrier == "test-carrier"
    record = stored(SHIPMENTS, {"order_id": {"S": order_id}})
    assert record is not None
    assert (record["tracking_number"], record["address"], record["parcel"]) == (
        shipment.tracking_number,
        ADDRESS,
        [{"sku": "MUG", "quantity": 2}, {"sku": "PEN", "quantity": 1}],
    )
    other = carrier.create_shipment(key(), ADDRESS, [("MUG", 1)])
    assert other.tracking_number != shipment.tracking_number


def test_an_order_is_shipped_once(carrier: DynamoTestCarrier) -> None:
    order_id = key()
    first = carrier.create_shipment(order_id, ADDRESS, [("MUG", 2)])
    moved = {**ADDRESS, "city": "Hamburg", "postal_code": "20095"}
    assert carrier.create_shipment(order_id, moved, [("MUG", 3)]) == first
    record = stored(SHIPMENTS, {"order_id": {"S": order_id}})
    assert record is not None
    assert (record["address"], record["parcel"]) == (ADDRESS, [{"sku": "MUG", "quantity": 2}])


def test_the_carrier_refuses_an_undeliverable_address(carrier: DynamoTestCarrier) -> None:
    order_id = key()
    with pytest.raises(ShippingError):
        carrier.create_shipment(order_id, {**ADDRESS, "postal_code": "00000"}, [("MUG", 1)])
    assert stored(SHIPMENTS, {"order_id": {"S": order_id}}) is None
    assert isinstance(carrier.create_shipment(order_id, ADDRESS, [("MUG", 1)]), Shipment)


@pytest.mark.usefixtures("atomic_writes")
def test_concurrent_attempts_ship_one_parcel(carrier: DynamoTestCarrier) -> None:
    order_id = key()
    writing = Lockstep("put_item", 10)  # every attempt writes before any has finished
    racing = DynamoTestCarrier(SHIPMENTS, lambda: writing)
    shipments = at_once(10, lambda: racing.create_shipment(order_id, ADDRESS, [("MUG", 1)]))
    record = stored(SHIPMENTS, {"order_id": {"S": order_id}})
    assert record is not None
    assert set(shipments) == {Shipment(record["tracking_number"], "test-carrier")}
