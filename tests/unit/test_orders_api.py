"""Orders through the app's own entry points against moto provisioned like the real stack: the
routes (Chalice's test client, the authorizer included), and the workflow's task functions run
one after the other as the state machine would run them, each checked against its own IAM
policy (tests/unit/iam_calls.py) as it calls DynamoDB and Step Functions."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest

from chalicelib.core import clock
from chalicelib.orders import model
from tests.unit.orders_fakes import ADDRESS, task_event

PRODUCT = {"name": "Book", "unit_amount": 2999, "available": 5}


def order_body(quantity: int = 2, **changes: Any) -> dict[str, Any]:
    return {
        "lines": [{"sku": "BOOK-1", "quantity": quantity}],
        "shipping_address": dict(ADDRESS),
        "payment_method": "pm_card_visa",
        **changes,
    }


@pytest.fixture
def shop(api: Any) -> Any:
    response = api.put("/inventory/BOOK-1", PRODUCT)
    assert response.status_code == 200, response.body
    return api


@pytest.fixture
def buyer(shop: Any, accounts: Any) -> Any:
    _, token = accounts.register()
    return shop.as_(token)


def test_an_order_is_accepted_priced_and_its_workflow_started(
    buyer: Any, aws: dict[str, str]
) -> None:
    response = buyer.post("/orders", order_body(), headers={"X-Correlation-Id": "corr-42"})
    assert response.status_code == 202, response.body
    order = response.json_body
    assert response.headers["Location"] == f"/orders/{order['order_id']}"
    assert (order["status"], order["total_amount"], order["steps"]) == ("pending", 5998, [])
    sfn = boto3.client("stepfunctions")
    arn = aws["OrderWorkflowArn"].replace(":stateMachine:", ":execution:")
    execution = sfn.describe_execution(executionArn=f"{arn}:{order['order_id']}")
    assert execution["status"] == "RUNNING"
    assert '"correlation_id": "corr-42"' in execution["input"]
    assert buyer.get(f"/orders/{order['order_id']}").json_body["status"] == "pending"


def test_without_a_correlation_header_the_workflow_gets_the_id_the_answer_names(
    buyer: Any, aws: dict[str, str]
) -> None:
    """The request's id (API Gateway's request id) is the one id of the whole order: the
    answer's X-Correlation-Id, and what the workflow's every task logs. (Chalice's local
    gateway gave no request id, so each asking made a new one: two ids for one request.)"""
    response = buyer.post("/orders", order_body())
    assert response.status_code == 202, response.body
    sfn = boto3.client("stepfunctions")
    arn = aws["OrderWorkflowArn"].replace(":stateMachine:", ":execution:")
    execution = sfn.describe_execution(executionArn=f"{arn}:{response.json_body['order_id']}")
    given = json.loads(execution["input"])["correlation_id"]
    assert given == response.headers["X-Correlation-Id"]


def test_orders_need_a_signed_in_caller(shop: Any) -> None:
    assert shop.as_(None).post("/orders", order_body()).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(quantity=0), "lines[0].quantity"),
        (order_body(lines=[{"sku": "NOPE-1", "quantity": 1}]), "lines[0].sku"),
        (order_body(payment_method="card"), "payment_method"),
        ({**order_body(), "total": 1}, "total"),
    ],
)
def test_bad_orders_are_400_with_details(buyer: Any, body: dict[str, Any], field: str) -> None:
    response = buyer.post("/orders", body)
    assert response.status_code == 400, response.body
    error = response.json_body["error"]
    assert error["code"] == "validation_failed"
    assert [d["field"] for d in error["details"]] == [field]


def test_a_retried_request_returns_the_same_order(buyer: Any, aws: dict[str, str]) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = buyer.post("/orders", order_body(), headers=key)
    again = buyer.post("/orders", order_body(), headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json_body["order_id"] == first.json_body["order_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    executions = boto3.client("stepfunctions").list_executions(
        stateMachineArn=aws["OrderWorkflowArn"]
    )["executions"]
    assert [e["name"] for e in executions] == [first.json_body["order_id"]]
    different = buyer.post("/orders", order_body(quantity=1), headers=key)
    assert different.status_code == 422
    assert different.json_body["error"]["code"] == "unprocessable_entity"


def test_others_orders_are_not_found_and_the_list_is_ones_own(
    buyer: Any, shop: Any, accounts: Any
) -> None:
    order_id = buyer.post("/orders", order_body()).json_body["order_id"]
    _, token = accounts.register()
    stranger = shop.as_(token)
    assert stranger.get(f"/orders/{order_id}").status_code == 404
    assert stranger.post(f"/orders/{order_id}/cancel", {}).status_code == 404
    assert stranger.get("/orders").json_body == {"items": [], "next_cursor": None}
    assert shop.get(f"/orders/{order_id}").status_code == 200  # an admin
    listed = buyer.get("/orders?limit=1").json_body
    assert [o["order_id"] for o in listed["items"]] == [order_id]
    assert buyer.get("/orders?limit=0").status_code == 400


def test_only_admins_change_the_catalog(buyer: Any) -> None:
    assert buyer.put("/inventory/BOOK-1", PRODUCT).status_code == 403
    product = buyer.get("/inventory/BOOK-1").json_body
    assert (product["available"], product["reserved"], product["currency"]) == (5, 0, "EUR")
    assert buyer.get("/inventory/NONE-1").status_code == 404
    assert buyer.get("/inventory/lower").status_code == 400


def run_task(client: Any, function: str, order_id: str, state: str, **extra: Any) -> Any:
    return client.lambda_.invoke(function, task_event(order_id, state, **extra)).payload


def test_the_tasks_take_an_order_to_completed_each_within_its_policy(
    client: Any, buyer: Any
) -> None:
    order_id = buyer.post("/orders", order_body()).json_body["order_id"]
    assert run_task(client, "validate_order", order_id, "ValidateOrder") == {"valid": True}
    assert run_task(client, "reserve_inventory", order_id, "ReserveInventory")["in_stock"]
    assert run_task(client, "charge_payment", order_id, "ChargePayment")["approved"]
    shipped = run_task(client, "ship_order", order_id, "ShipOrder")
    notification = {"message_id": "m-1", "entered_at": clock.timestamp()}
    run_task(client, "complete_order", order_id, "CompleteOrder", notification=notification)
    order = buyer.get(f"/orders/{order_id}").json_body
    assert order["status"] == model.COMPLETED
    assert order["tracking_number"] == shipped["tracking_number"]
    assert [s["state"] for s in order["steps"]][-2:] == ["NotifyCustomer", "CompleteOrder"]
    product = buyer.get("/inventory/BOOK-1").json_body
    assert (product["available"], product["reserved"]) == (3, 0)


def test_cancelling_stops_the_execution_refunds_and_releases(
    client: Any, buyer: Any, aws: dict[str, str]
) -> None:
    order_id = buyer.post("/orders", order_body()).json_body["order_id"]
    run_task(client, "validate_order", order_id, "ValidateOrder")
    run_task(client, "reserve_inventory", order_id, "ReserveInventory")
    run_task(client, "charge_payment", order_id, "ChargePayment")
    response = buyer.post(f"/orders/{order_id}/cancel", {})
    assert response.status_code == 200, response.body
    order = response.json_body
    assert (order["status"], order["payment"]["status"]) == ("cancelled", "refunded")
    arn = aws["OrderWorkflowArn"].replace(":stateMachine:", ":execution:")
    execution = boto3.client("stepfunctions").describe_execution(executionArn=f"{arn}:{order_id}")
    assert execution["status"] == "ABORTED"
    product = buyer.get("/inventory/BOOK-1").json_body
    assert (product["available"], product["reserved"]) == (5, 0)
    assert buyer.post(f"/orders/{order_id}/cancel", {}).json_body["status"] == "cancelled"


def test_a_shipped_order_cannot_be_cancelled(client: Any, buyer: Any) -> None:
    order_id = buyer.post("/orders", order_body()).json_body["order_id"]
    run_task(client, "validate_order", order_id, "ValidateOrder")
    run_task(client, "reserve_inventory", order_id, "ReserveInventory")
    run_task(client, "charge_payment", order_id, "ChargePayment")
    run_task(client, "ship_order", order_id, "ShipOrder")
    response = buyer.post(f"/orders/{order_id}/cancel", {})
    assert response.status_code == 409
    assert "is shipped" in response.json_body["error"]["message"]


def test_the_sweep_settles_an_order_whose_execution_ended(
    client: Any, buyer: Any, aws: dict[str, str], app_clock: Any, monkeypatch: Any
) -> None:
    import chalice.test
    from chalice.local import LambdaContext

    # Chalice's test client gives every function 3 s; Lambda gives the sweep its 300 s.
    monkeypatch.setattr(
        chalice.test,
        "LambdaContext",
        lambda name, memory_size: LambdaContext(name, memory_size, max_runtime_ms=300_000),
    )
    order_id = buyer.post("/orders", order_body()).json_body["order_id"]
    run_task(client, "validate_order", order_id, "ValidateOrder")
    run_task(client, "reserve_inventory", order_id, "ReserveInventory")
    arn = aws["OrderWorkflowArn"].replace(":stateMachine:", ":execution:")
    boto3.client("stepfunctions").stop_execution(executionArn=f"{arn}:{order_id}")
    at = app_clock.advance(hours=2).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    event["time"] = at
    client.lambda_.invoke("sweep_stuck_orders", event)
    order = buyer.get(f"/orders/{order_id}").json_body
    assert (order["status"], order["failure"]["code"]) == ("failed", "workflow_ended")
    assert buyer.get("/inventory/BOOK-1").json_body["available"] == 5


def test_an_order_update_mails_the_owner_once(client: Any, buyer: Any, accounts: Any) -> None:
    user, _ = accounts.register(email="owner@example.com", name="Owner")
    order_id = str(uuid.uuid4())
    message = {
        "event_type": "order-shipped",
        "event_id": f"order-shipped:{order_id}",
        "order_id": order_id,
        "owner_id": user["user_id"],
        "tracking_number": "TT1",
    }
    event = client.events.generate_sns_event(message=json.dumps(message))
    client.lambda_.invoke("email_order_update", event)
    client.lambda_.invoke("email_order_update", event)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    sent = [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
            if m.destinations["ToAddresses"] == ["owner@example.com"]
            and "code" not in m.subject]  # fmt: skip
    assert len(sent) == 1 and "has shipped" in sent[0].subject
