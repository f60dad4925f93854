"""Orders on the running local stack, over real HTTP: `POST /orders` starts the order workflow
(Step Functions, executed by the emulator), whose Lambda tasks run the app's own handlers in
the local runtime. Each test has its own customer and its own products, so the tests run in
any order. Here: the outcomes of the workflow; cancellation, idempotency, concurrency, the
nightly sweep and direct invocations are in test_orders_operations.py."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from chalicelib.core.dynamo import from_item

pytestmark = pytest.mark.integration

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Street",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
TERMINAL = ("completed", "failed", "cancelled")
PAYMENTS_TABLE = "serverless-app-dev-payments"
#: The states an execution enters, by path through the state machine.
RESERVED = ["ValidateOrder", "CheckOrder", "ReserveInventory", "CheckStock"]
CHARGED = [*RESERVED, "ChargePayment", "CheckPayment"]
#: A refusal ends the execution in success; what needs a person fails it.
REFUSED_TAIL = ["NotifyFailure", "FailOrder", "CheckFailure", "OrderRefused"]
FAILED_TAIL = ["NotifyFailure", "FailOrder", "CheckFailure", "OrderFailed"]
REFUSALS = ("InvalidOrder", "OutOfStock", "PaymentDeclined", "ShippingError")


class Shop:
    """One new customer of the stack, and what the tests look at: the API, the state
    machine's executions, the payment ledger, the emails SES kept."""

    def __init__(self, stack: dict[str, Any], emulator: Any, token_for: Any, admin: Any) -> None:
        self.stack, self.api, self.admin = stack, stack["api_url"], admin
        self.email = f"it-orders-{uuid.uuid4().hex[:12]}@example.com"
        self.headers = {"Authorization": f"Bearer {token_for(self.email)}"}
        self.sfn, self.dynamodb = emulator("stepfunctions"), emulator("dynamodb")

    def product(self, available: int, unit_amount: int = 1500) -> str:
        sku = f"IT-{uuid.uuid4().hex[:8].upper()}"
        body = {"name": f"Product {sku}", "unit_amount": unit_amount, "available": available}
        put = requests.put(f"{self.api}/inventory/{sku}", json=body, headers=self.admin, timeout=10)
        assert put.status_code == 200, put.text
        return sku

    def place(
        self,
        sku: str,
        quantity: int = 1,
        payment_method: str = "pm_card_visa",
        key: str | None = None,
        **address: str,
    ) -> requests.Response:
        body = {"lines": [{"sku": sku, "quantity": quantity}], "payment_method": payment_method,
                "shipping_address": {**ADDRESS, **address}}  # fmt: skip
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return requests.post(f"{self.api}/orders", json=body, headers=headers, timeout=30)

    def order(self, sku: str, **options: Any) -> str:
        placed = self.place(sku, **options)
        assert placed.status_code == 202, placed.text
        assert placed.json()["status"] == "pending"
        return str(placed.json()["order_id"])

    def get(self, order_id: str) -> dict[str, Any]:
        answer = requests.get(f"{self.api}/orders/{order_id}", headers=self.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait_for(self, order_id: str, done: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not done(order := self.get(order_id)):
            assert time.monotonic() < deadline, f"{what} not within {timeout} s: {order}"
            time.sleep(0.2)
        return order

    def wait_until_terminal(self, order_id: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(order_id, lambda o: o["status"] in TERMINAL, timeout, "terminal")

    def stock(self, sku: str) -> tuple[int, int]:
        got = requests.get(f"{self.api}/inventory/{sku}", headers=self.headers, timeout=10)
        assert got.status_code == 200, got.text
        return got.json()["available"], got.json()["reserved"]

    def execution_arn(self, order_id: str) -> str:
        machine = self.stack["resources"]["OrderWorkflowArn"]
        return f"{machine.replace(':stateMachine:', ':execution:')}:{order_id}"

    def execution(self, order_id: str, timeout: float = 30) -> dict[str, Any]:
        """DescribeExecution once the execution has ended (the order's last write comes
        just before its execution's end)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.sfn.describe_execution(executionArn=self.execution_arn(order_id))
            if found["status"] != "RUNNING":
                return dict(found)
            assert time.monotonic() < deadline, f"execution {order_id} still running"
            time.sleep(0.1)

    def history(self, order_id: str) -> list[dict[str, Any]]:
        pages = self.sfn.get_paginator("get_execution_history").paginate(
            executionArn=self.execution_arn(order_id)
        )
        return [event for page in pages for event in page["events"]]

    def states_entered(self, order_id: str) -> list[str]:
        return [
            event["stateEnteredEventDetails"]["name"]
            for event in self.history(order_id)
            if event["type"].endswith("StateEntered")
        ]

    def ledger(self, kind: str, order_id: str) -> dict[str, Any] | None:
        """The payment ledger's CHARGE#, REFUND# or ATTEMPTS# item of the order."""
        key = {"pk": {"S": f"{kind}#{order_id}"}}
        item = self.dynamodb.get_item(TableName=PAYMENTS_TABLE, Key=key, ConsistentRead=True)
        return from_item(item["Item"]) if "Item" in item else None

    def mails(self, subject_part: str) -> list[dict[str, Any]]:
        """What SES sent this customer (the emulator keeps it) with `subject_part`."""
        data = requests.get(f"{self.stack['emulator_url']}/moto-api/data.json", timeout=30)
        return [m for m in data.json()["ses"]["Message"]
                if m["destinations"]["ToAddresses"] == [self.email]
                and subject_part in m["subject"]]  # fmt: skip

    def wait_for_mail(self, subject_part: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (found := self.mails(subject_part)):
            assert time.monotonic() < deadline, f"no mail {subject_part!r} to {self.email}"
            time.sleep(0.5)
        assert len(found) == 1, found  # mailed once, however often SNS delivered it
        return found[0]


def steps(order: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["state"]: step for step in order["steps"]}


def assert_failed(shop: Shop, order: dict[str, Any], code: str, error: str) -> None:
    """The order failed with `code`; a refusal's execution succeeded (its output says how the
    order ended) and no Lambda task errored, anything else's execution failed."""
    assert order["status"] == "failed", order
    assert order["failure"]["code"] == code and order["failure"]["error"] == error, order
    execution = shop.execution(order["order_id"])
    if error not in REFUSALS:
        assert (execution["status"], execution["error"]) == ("FAILED", error)
        return
    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert (output["failure"]["Error"], output["failed"]) == (error, {"status": "failed"})
    history = shop.history(order["order_id"])
    assert not [e for e in history if e["type"] == "LambdaFunctionFailed"], history


@pytest.fixture
def shop(
    stack: dict[str, Any], emulator: Any, token_for: Any, admin_headers: dict[str, str]
) -> Shop:
    return Shop(stack, emulator, token_for, admin_headers)


def test_an_order_completes_ships_and_mails_its_owner(shop: Shop) -> None:
    sku = shop.product(available=5, unit_amount=2999)
    order_id = shop.order(sku, quantity=2)
    order = shop.wait_until_terminal(order_id)
    assert order["status"] == "completed", order
    assert order["tracking_number"].startswith("TT")
    assert order["total_amount"] == 5998 and order["currency"] == "EUR"
    assert order["payment"]["status"] == "approved" and order["payment"]["amount"] == 5998
    assert [s["state"] for s in order["steps"]] == [
        "ValidateOrder", "ReserveInventory", "ChargePayment", "ShipOrder", "NotifyCustomer",
        "CompleteOrder",
    ]  # fmt: skip
    assert steps(order)["ShipOrder"]["tracking_number"] == order["tracking_number"]
    assert shop.stock(sku) == (3, 0)
    execution = shop.execution(order_id)
    assert execution["status"] == "SUCCEEDED"
    assert shop.states_entered(order_id) == [
        *CHARGED,
        "ShipOrder",
        "CheckShipment",
        "NotifyCustomer",
        "CompleteOrder",
        "OrderCompleted",
    ]
    mail = shop.wait_for_mail(f"order {order_id[:8]} has shipped")
    assert mail["source"] == shop.stack["environment"]["ORDER_EMAIL_SENDER"]
    assert mail["subject"] == f"Your serverless-app order {order_id[:8]} has shipped"
    assert f"Hello {shop.email.split('@')[0]}," in mail["body"]
    assert f"Tracking number: {order['tracking_number']}." in mail["body"]


@pytest.mark.parametrize(
    ("sku", "quantity", "country", "problem"),
    [
        (None, 1, "US", "the shop does not deliver to US"),
        ("CAMERA-001", 5, "DE", "orders over 10,000.00 EUR need a review by the shop"),
    ],
    ids=["country", "total-over-limit"],
)
def test_an_order_breaking_a_business_rule_is_refused_by_validation(
    shop: Shop, sku: str | None, quantity: int, country: str, problem: str
) -> None:
    sku = sku or shop.product(available=5)
    before = shop.stock(sku)
    order = shop.wait_until_terminal(shop.order(sku, quantity=quantity, country=country))
    assert_failed(shop, order, "invalid_order", "InvalidOrder")
    assert problem in order["failure"]["message"]
    assert [s["state"] for s in order["steps"]] == ["ValidateOrder", "NotifyFailure", "FailOrder"]
    assert shop.states_entered(order["order_id"]) == [
        "ValidateOrder",
        "CheckOrder",
        "InvalidOrder",
        *REFUSED_TAIL,
    ]
    assert shop.stock(sku) == before
    assert shop.ledger("ATTEMPTS", order["order_id"]) is None  # never charged


def test_of_two_orders_for_the_last_unit_exactly_one_completes(shop: Shop) -> None:
    sku = shop.product(available=1)
    with ThreadPoolExecutor(2) as pool:
        order_ids = list(pool.map(lambda _: shop.order(sku), range(2)))
    orders = {o["status"]: o for o in map(shop.wait_until_terminal, order_ids)}
    assert sorted(orders) == ["completed", "failed"], orders
    lost = orders["failed"]
    assert_failed(shop, lost, "out_of_stock", "OutOfStock")
    assert f"{sku} (1 wanted)" in lost["failure"]["message"]
    assert steps(lost)["ReserveInventory"]["outcome"].startswith("out of stock")
    assert shop.states_entered(lost["order_id"]) == [*RESERVED, "OutOfStock", *REFUSED_TAIL]
    assert shop.stock(sku) == (0, 0)


def test_a_declined_payment_fails_the_order_and_releases_its_stock(shop: Shop) -> None:
    sku = shop.product(available=3)
    order = shop.wait_until_terminal(shop.order(sku, payment_method="pm_card_declined"))
    assert_failed(shop, order, "payment_declined", "PaymentDeclined")
    assert order["payment"]["status"] == "declined"
    assert steps(order)["ChargePayment"]["outcome"] == "declined: card_declined"
    assert steps(order)["ReleaseInventory"]["outcome"] == "released"
    assert "RefundPayment" not in steps(order)
    assert shop.states_entered(order["order_id"]) == [
        *CHARGED,
        "PaymentDeclined",
        "ReleaseInventory",
        *REFUSED_TAIL,
    ]
    assert shop.stock(sku) == (3, 0)
    mail = shop.wait_for_mail("could not be completed")
    assert "the payment was declined" in mail["body"]


def test_transient_payment_errors_are_retried_with_backoff_then_approved(shop: Shop) -> None:
    sku = shop.product(available=2)
    order_id = shop.order(sku, payment_method="pm_card_unavailable_2")
    order = shop.wait_until_terminal(order_id)
    assert order["status"] == "completed", order
    assert steps(order)["ChargePayment"]["attempts"] == 3
    assert steps(order)["ChargePayment"]["outcome"] == "approved"
    charge = shop.ledger("CHARGE", order_id)  # one charge per order id: charged once
    assert charge is not None and charge["status"] == "approved"
    assert charge["payment_id"] == order["payment"]["payment_id"] and charge["amount"] == 1500
    assert shop.ledger("ATTEMPTS", order_id) == {"pk": f"ATTEMPTS#{order_id}", "attempts": 3}
    assert shop.ledger("REFUND", order_id) is None
    assert shop.stock(sku) == (1, 0)
    assert shop.execution(order_id)["status"] == "SUCCEEDED"
    events = shop.history(order_id)
    charges = [
        event["timestamp"]
        for event in events
        if event["type"] == "LambdaFunctionScheduled"
        and event["lambdaFunctionScheduledEventDetails"]["resource"].endswith("-charge_payment")
    ]
    failures = [
        event["lambdaFunctionFailedEventDetails"]["error"]
        for event in events
        if event["type"] == "LambdaFunctionFailed"
    ]
    assert len(charges) == 3 and failures == ["PaymentError", "PaymentError"]
    waited = (charges[-1] - charges[0]).total_seconds()
    assert waited >= 5.95, f"the retries waited {waited} s, not 2 + 4"  # ms-precise stamps


def test_payment_retries_exhausted_nothing_to_refund_stock_released(shop: Shop) -> None:
    sku = shop.product(available=2)
    order_id = shop.order(sku, payment_method="pm_card_unavailable_9")
    order = shop.wait_until_terminal(order_id)
    assert_failed(shop, order, "payment_failed", "PaymentError")
    assert steps(order)["ChargePayment"]["attempts"] == 4  # the first and 3 retries
    assert steps(order)["RefundPayment"]["outcome"] == "nothing to refund"
    assert steps(order)["ReleaseInventory"]["outcome"] == "released"
    assert shop.ledger("CHARGE", order_id) is None and "payment" not in order
    assert shop.states_entered(order_id) == [
        *RESERVED,
        "ChargePayment",
        "RefundPayment",
        "ReleaseInventory",
        *FAILED_TAIL,
    ]
    assert shop.stock(sku) == (2, 0)


@pytest.mark.parametrize(
    ("options", "code", "error", "path"),
    [
        ({"postal_code": "00000"}, "shipping_failed", "ShippingError",
         [*CHARGED, "ShipOrder", "CheckShipment", "CarrierRefused"]),
        ({"payment_method": "pm_card_timeout_9"}, "payment_failed", "PaymentError",
         [*RESERVED, "ChargePayment"]),
    ],
    ids=["carrier-refuses", "charge-answers-lost"],
)  # fmt: skip
def test_a_failure_after_the_charge_refunds_it_and_releases_the_stock(
    shop: Shop, options: dict[str, str], code: str, error: str, path: list[str]
) -> None:
    sku = shop.product(available=4)
    order_id = shop.order(sku, quantity=2, **options)
    order = shop.wait_until_terminal(order_id)
    assert_failed(shop, order, code, error)
    charge, refund = shop.ledger("CHARGE", order_id), shop.ledger("REFUND", order_id)
    assert charge is not None and charge["status"] == "approved" and charge["amount"] == 3000
    assert refund is not None and refund["amount"] == 3000
    assert refund["refund_id"] == charge["refund_id"] == order["payment"]["refund_id"]
    assert order["payment"]["status"] == "refunded"
    assert steps(order)["RefundPayment"]["outcome"] == "refunded 3000"
    assert steps(order)["ReleaseInventory"]["outcome"] == "released"
    assert shop.states_entered(order_id) == [
        *path,
        "RefundPayment",
        "ReleaseInventory",
        *(REFUSED_TAIL if error in REFUSALS else FAILED_TAIL),
    ]
    assert shop.stock(sku) == (4, 0)
