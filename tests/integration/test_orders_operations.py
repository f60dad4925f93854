"""Orders on the running local stack, beyond the workflow's own outcomes (test_orders.py):
cancelling, retried requests, many customers at once, the nightly sweep of stuck orders, and
the workflow's functions invoked directly through Lambda's API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from infra.paths import PROJECT_DIR
from tests.integration.test_orders import Shop, steps

pytestmark = pytest.mark.integration


@pytest.fixture
def shop(
    stack: dict[str, Any], emulator: Any, token_for: Any, admin_headers: dict[str, str]
) -> Shop:
    return Shop(stack, emulator, token_for, admin_headers)


def in_payment_retry(shop: Shop, order_id: str, timeout: float = 30) -> dict[str, Any]:
    """The order once a charge attempt failed and no task runs: the execution sleeps until
    its retry (2 s, then 4 s...). A stop must land there to be deterministic: the emulator
    ends an execution stopped while a task runs FAILED if the task fails (AWS: ABORTED)."""
    deadline = time.monotonic() + timeout
    while [e["type"] for e in shop.history(order_id)[-1:]] != ["LambdaFunctionFailed"]:
        assert time.monotonic() < deadline, f"no failed charge attempt: {shop.get(order_id)}"
        time.sleep(0.05)
    order = shop.get(order_id)
    assert steps(order)["ChargePayment"]["outcome"].startswith("failed: PaymentError"), order
    return order


def assert_stopped_in_retry_wait(shop: Shop, order_id: str) -> None:
    """ABORTED, with no charge attempt after the stop."""
    assert shop.execution(order_id)["status"] == "ABORTED"
    last = [event["type"] for event in shop.history(order_id)[-2:]]
    assert last == ["LambdaFunctionFailed", "ExecutionAborted"]


@pytest.mark.parametrize(
    ("payment_method", "refund"),
    [("pm_card_unavailable_3", "nothing to refund"), ("pm_card_timeout_3", "refunded 1500")],
    ids=["nothing-charged", "charged-answer-lost"],
)
def test_cancel_while_the_payment_is_retried_stops_and_compensates(
    shop: Shop, payment_method: str, refund: str
) -> None:
    sku = shop.product(available=3)
    order_id = shop.order(sku, payment_method=payment_method)
    assert in_payment_retry(shop, order_id)["status"] == "reserved"
    assert shop.stock(sku) == (2, 1)
    cancelled = requests.post(
        f"{shop.api}/orders/{order_id}/cancel", headers=shop.headers, timeout=30
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert shop.stock(sku) == (3, 0)
    # (The emulator ends it at the retry wait's end, and keeps no error or cause for it.)
    assert_stopped_in_retry_wait(shop, order_id)
    order = shop.get(order_id)  # as it stays once the execution is over
    assert order["status"] == "cancelled" and "failure" not in order
    assert steps(order)["RefundPayment"]["outcome"] == refund
    assert steps(order)["ReleaseInventory"]["outcome"] == "released"
    assert steps(order)["CancelOrder"]["outcome"] == "cancelled"
    charge = shop.ledger("CHARGE", order_id)
    if refund == "nothing to refund":
        assert charge is None
    else:
        assert charge is not None and charge["refund_id"] == order["payment"]["refund_id"]
    assert shop.stock(sku) == (3, 0)


def test_a_completed_order_cannot_be_cancelled(shop: Shop) -> None:
    sku = shop.product(available=1)
    order = shop.wait_until_terminal(shop.order(sku))
    assert order["status"] == "completed", order
    refused = requests.post(
        f"{shop.api}/orders/{order['order_id']}/cancel", headers=shop.headers, timeout=30
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conflict"
    assert shop.get(order["order_id"]) == order
    assert shop.ledger("REFUND", order["order_id"]) is None
    assert shop.stock(sku) == (0, 0)


def test_a_retried_post_with_an_idempotency_key_makes_one_order(shop: Shop) -> None:
    sku = shop.product(available=5)
    key = f"it-{uuid.uuid4()}"
    first = shop.place(sku, key=key)
    again = shop.place(sku, key=key)
    with ThreadPoolExecutor(6) as pool:  # and sent many times at once
        racing = list(pool.map(lambda _: shop.place(sku, key=key), range(6)))
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    order_id = first.json()["order_id"]
    for replayed in (again, *racing):
        assert replayed.status_code == 202, replayed.text
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json()["order_id"] == order_id
    other = shop.place(sku, quantity=2, key=key)
    assert other.status_code == 422, other.text
    assert shop.wait_until_terminal(order_id)["status"] == "completed"
    listed = requests.get(f"{shop.api}/orders", headers=shop.headers, timeout=10).json()
    assert [o["order_id"] for o in listed["items"]] == [order_id]
    pages = shop.sfn.get_paginator("list_executions").paginate(
        stateMachineArn=shop.stack["resources"]["OrderWorkflowArn"]
    )
    runs = [e for page in pages for e in page["executions"] if e["name"] == order_id]
    assert [run["status"] for run in runs] == ["SUCCEEDED"]
    assert shop.stock(sku) == (4, 0)


def test_fifty_concurrent_orders_for_ten_units_never_oversell(shop: Shop) -> None:
    sku = shop.product(available=10)
    with ThreadPoolExecutor(50) as pool:
        order_ids = list(pool.map(lambda _: shop.order(sku), range(50)))
    assert len(set(order_ids)) == 50
    orders = [shop.wait_until_terminal(order_id, timeout=120) for order_id in order_ids]
    outcomes = Counter((o["status"], o.get("failure", {}).get("code")) for o in orders)
    assert outcomes == {("completed", None): 10, ("failed", "out_of_stock"): 40}, outcomes
    assert shop.stock(sku) == (0, 0)


def fire_sweep(stack: dict[str, Any], at: datetime) -> subprocess.CompletedProcess[str]:
    """`make fire JOB=sweep_stuck_orders AT=...` against the test session's stack."""
    instant = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    command = [sys.executable, "-m", "local.fire", "sweep_stuck_orders", "--at", instant]
    command += ["--state-dir", str(stack["state_dir"])]
    return subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("payment_method", "refund"),
    [("pm_card_unavailable_3", "nothing to refund"), ("pm_card_timeout_3", "refunded 1500")],
    ids=["nothing-charged", "charged-answer-lost"],
)
def test_the_nightly_sweep_settles_an_order_whose_execution_was_stopped(
    shop: Shop, payment_method: str, refund: str
) -> None:
    sku = shop.product(available=2)
    order_id = shop.order(sku, payment_method=payment_method)
    in_payment_retry(shop, order_id)
    shop.sfn.stop_execution(executionArn=shop.execution_arn(order_id), error="Stuck", cause="IT")
    assert_stopped_in_retry_wait(shop, order_id)
    assert shop.get(order_id)["status"] == "reserved"  # stuck: nothing else will move it
    assert shop.stock(sku) == (1, 1)
    assert fire_sweep(shop.stack, datetime.now(UTC) - timedelta(minutes=5)).returncode == 0
    assert shop.get(order_id)["status"] == "reserved"  # too young to be swept

    fired = fire_sweep(shop.stack, datetime.now(UTC) + timedelta(hours=2))
    assert fired.returncode == 0, fired.stdout + fired.stderr
    order = shop.get(order_id)
    assert order["status"] == "failed", order
    assert order["failure"]["code"] == "workflow_ended"
    assert order["failure"]["error"] == "ABORTED"
    assert steps(order)["RefundPayment"]["outcome"] == refund
    assert steps(order)["ReleaseInventory"]["outcome"] == "released"
    assert steps(order)["SweepStuckOrder"]["outcome"] == "failed: workflow_ended"
    assert shop.stock(sku) == (2, 0)
    charge = shop.ledger("CHARGE", order_id)
    assert (charge or {}).get("refund_id") == (order.get("payment") or {}).get("refund_id")


def test_a_task_function_invoked_directly_answers_as_lambda_does(shop: Shop, emulator: Any) -> None:
    """`aws lambda invoke` on one of the workflow's functions."""
    function = "serverless-app-dev-validate_order"
    lambdas = emulator("lambda")
    bad = lambdas.invoke(FunctionName=function, Payload=b"{}")
    assert bad["StatusCode"] == 200 and bad.get("FunctionError"), bad
    error = json.loads(bad["Payload"].read())
    assert error["errorType"] == "InvalidTaskInput", error
    assert "not a task input of the order workflow" in error["errorMessage"]

    order = shop.wait_until_terminal(shop.order(shop.product(available=1)))
    task_input = {"order_id": order["order_id"], "correlation_id": f"it-{uuid.uuid4()}",
                  "step": {"name": "ValidateOrder", "entered_at": order["created_at"],
                           "retry_count": 0}}  # fmt: skip
    good = lambdas.invoke(FunctionName=function, Payload=json.dumps(task_input).encode())
    assert good["StatusCode"] == 200 and "FunctionError" not in good, good
    assert json.loads(good["Payload"].read()) == {"valid": True}
    assert shop.get(order["order_id"]) == order  # validated already: nothing changed
