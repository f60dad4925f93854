"""The orders domain's DynamoDB and Step Functions adapters against moto in process, provisioned
from infra/resources.json: the orders table (orders and their Idempotency-Key claims, the
conditional status changes, the owner's and the sweep's indexes) and the workflow's
executions. The inventory: `test_orders_inventory.py`; payments and shipping:
`test_orders_ledgers.py`."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.core import aws as aws_clients
from chalicelib.core import clock
from chalicelib.orders import model
from chalicelib.orders.executions import StepFunctionsWorkflow
from chalicelib.orders.records import ClaimTaken, DynamoOrders, StatusConflict
from tests.clock import RunningClock
from tests.unit.orders_aws import ALICE, BOB, ORDERS, STATE_MACHINE, new_order


@pytest.fixture
def orders(aws: dict[str, str]) -> DynamoOrders:
    return DynamoOrders(ORDERS)


# --- the orders table -----------------------------------------------------------------------


def test_an_order_is_stored_as_given_and_read_back(orders: DynamoOrders) -> None:
    order = new_order(lines=[("MUG", 2), ("PEN", 1)])
    orders.create(order, None)
    assert orders.get(order["order_id"]) == order
    assert orders.get(str(uuid.uuid4())) is None


def test_creating_an_order_id_twice_fails_and_keeps_the_first(orders: DynamoOrders) -> None:
    first = new_order()
    orders.create(first, None)
    second = {**new_order(owner_id=BOB), "order_id": first["order_id"]}
    with pytest.raises(ClientError):
        orders.create(second, None)
    assert orders.get(first["order_id"]) == first


def test_an_idempotency_key_is_bound_to_its_order_for_its_owner(orders: DynamoOrders) -> None:
    order = new_order()
    orders.create(order, ("key-1", "fp-1"))
    assert orders.get(order["order_id"]) == order
    assert orders.find_claim(ALICE, "key-1") == (order["order_id"], "fp-1")
    assert orders.find_claim(ALICE, "key-2") is None
    assert orders.find_claim(BOB, "key-1") is None


def test_a_taken_key_makes_no_second_order(orders: DynamoOrders) -> None:
    first, second = new_order(), new_order()
    orders.create(first, ("key-1", "fp-1"))
    with pytest.raises(ClaimTaken) as taken:
        orders.create(second, ("key-1", "fp-2"))
    assert (taken.value.order_id, taken.value.fingerprint) == (first["order_id"], "fp-1")
    assert orders.get(second["order_id"]) is None
    assert orders.find_claim(ALICE, "key-1") == (first["order_id"], "fp-1")


def test_owners_keys_are_separate(orders: DynamoOrders) -> None:
    alices, bobs = new_order(ALICE), new_order(BOB)
    orders.create(alices, ("same-key", "fp-a"))
    orders.create(bobs, ("same-key", "fp-b"))
    assert orders.find_claim(ALICE, "same-key") == (alices["order_id"], "fp-a")
    assert orders.find_claim(BOB, "same-key") == (bobs["order_id"], "fp-b")


def test_a_claim_expires_after_a_day(orders: DynamoOrders, app_clock: RunningClock) -> None:
    first = new_order()
    orders.create(first, ("key-1", "fp-1"))
    app_clock.advance(hours=23, minutes=59)
    assert orders.find_claim(ALICE, "key-1") == (first["order_id"], "fp-1")
    with pytest.raises(ClaimTaken):
        orders.create(new_order(), ("key-1", "fp-1"))

    app_clock.advance(minutes=2)
    assert orders.find_claim(ALICE, "key-1") is None
    again = new_order()
    orders.create(again, ("key-1", "fp-2"))  # the expired claim counts as none
    assert orders.find_claim(ALICE, "key-1") == (again["order_id"], "fp-2")
    assert orders.get(first["order_id"]) == first


def test_an_order_and_its_claim_are_stored_together_or_not_at_all(orders: DynamoOrders) -> None:
    existing = new_order()
    orders.create(existing, None)
    clash = {**new_order(), "order_id": existing["order_id"]}
    with pytest.raises(ClientError):
        orders.create(clash, ("key-1", "fp-1"))
    assert orders.find_claim(ALICE, "key-1") is None  # the claim went with the failed order


def test_a_status_change_applies_from_an_allowed_status(
    orders: DynamoOrders, app_clock: RunningClock
) -> None:
    order = new_order()
    orders.create(order, None)
    app_clock.advance(seconds=5)
    changed = orders.update(
        order["order_id"],
        status=model.VALIDATED,
        from_statuses=(model.PENDING,),
        steps={"ValidateOrder": {"outcome": "valid", "retry_count": 0}},
        fields={"note": "checked"},
    )
    assert changed == orders.get(order["order_id"])
    assert changed["status"] == model.VALIDATED
    assert changed["steps"] == {"ValidateOrder": {"outcome": "valid", "retry_count": 0}}
    assert changed["note"] == "checked"
    assert changed["updated_at"] > order["updated_at"]
    assert changed["created_at"] == order["created_at"]
    assert changed["lines"] == order["lines"]


def test_a_status_change_from_another_status_is_refused(orders: DynamoOrders) -> None:
    order = new_order()
    orders.create(order, None)
    with pytest.raises(StatusConflict) as conflict:
        orders.update(
            order["order_id"], status=model.RESERVED, from_statuses=(model.VALIDATED,),
            fields={"reserved_at": clock.timestamp()},
        )  # fmt: skip
    assert conflict.value.status == model.PENDING
    assert orders.get(order["order_id"]) == order


def test_changing_a_missing_order_creates_nothing(orders: DynamoOrders) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(StatusConflict) as conflict:
        orders.update(missing, status=model.CANCELLING, fields={"x": 1})
    assert conflict.value.status is None
    assert orders.get(missing) is None


def test_an_extra_condition_must_hold_too(orders: DynamoOrders) -> None:
    order = new_order()
    orders.create(order, None)
    orders.update(order["order_id"], fields={"released_at": clock.timestamp()})
    with pytest.raises(StatusConflict) as conflict:
        orders.update(
            order["order_id"], status=model.FAILED, from_statuses=(model.PENDING,),
            condition="attribute_not_exists(released_at)",
        )  # fmt: skip
    assert conflict.value.status == model.PENDING
    assert orders.get(order["order_id"])["status"] == model.PENDING  # type: ignore[index]


def test_steps_are_recorded_by_state_name(orders: DynamoOrders) -> None:
    order = new_order()
    orders.create(order, None)
    orders.update(order["order_id"], steps={"ChargePayment": {"outcome": "unavailable"}})
    orders.update(order["order_id"], steps={"ReserveInventory": {"outcome": "reserved"}})
    final = orders.update(order["order_id"], steps={"ChargePayment": {"outcome": "approved"}})
    assert final["steps"] == {
        "ChargePayment": {"outcome": "approved"},
        "ReserveInventory": {"outcome": "reserved"},
    }


def test_an_owners_orders_come_newest_first_page_by_page(
    orders: DynamoOrders, app_clock: RunningClock
) -> None:
    made = []
    for n in range(5):
        made.append(new_order(ALICE))
        orders.create(made[-1], (f"key-{n}", "fp") if n % 2 else None)
        orders.create(new_order(BOB), None)
        app_clock.advance(seconds=1)
    newest_first = [order["order_id"] for order in reversed(made)]

    first, cursor = orders.owned_page(ALICE, 2, None)
    assert [order["order_id"] for order in first] == newest_first[:2]
    assert first[0] == made[-1]
    second, cursor = orders.owned_page(ALICE, 2, cursor)
    assert [order["order_id"] for order in second] == newest_first[2:4]
    last, cursor = orders.owned_page(ALICE, 2, cursor)
    assert [order["order_id"] for order in last] == newest_first[4:]
    assert cursor is None
    whole, cursor = orders.owned_page(ALICE, 5, None)
    assert [order["order_id"] for order in whole] == newest_first
    assert cursor is None
    assert orders.owned_page(str(uuid.uuid4()), 5, None) == ([], None)


def test_the_sweep_reads_open_orders_of_a_shard_oldest_first(
    orders: DynamoOrders, app_clock: RunningClock
) -> None:
    shard = "open#3"
    made = []
    for _ in range(4):
        made.append(new_order(shard=shard))
        orders.create(made[-1], None)
        orders.create(new_order(shard="open#5"), None)
        app_clock.advance(minutes=1)
    before = clock.timestamp()
    orders.create(new_order(shard=shard), None)  # too recent
    for terminal in (model.COMPLETED, model.FAILED, model.CANCELLED):
        ended = new_order(shard=shard)
        ended["created_key"] = f"{made[0]['created_at']}#{ended['order_id']}"
        orders.create(ended, None)
        gone = orders.update(ended["order_id"], status=terminal)
        assert "open_shard" not in gone
    shipped = orders.update(made[1]["order_id"], status=model.SHIPPED)
    assert shipped["open_shard"] == shard  # not terminal: still open

    page, cursor = orders.open_before(shard, before, 3, None)
    assert [order["order_id"] for order in page] == [order["order_id"] for order in made[:3]]
    rest, cursor = orders.open_before(shard, before, 3, cursor)
    assert [order["order_id"] for order in rest] == [made[3]["order_id"]]
    assert cursor is None
    assert orders.open_before("open#4", before, 3, None) == ([], None)


# --- the workflow's executions --------------------------------------------------------------


@pytest.fixture
def workflow(aws: dict[str, str]) -> StepFunctionsWorkflow:
    return StepFunctionsWorkflow(STATE_MACHINE)


def executions(workflow: StepFunctionsWorkflow) -> list[dict[str, Any]]:
    sfn = aws_clients.client("stepfunctions")
    return list(sfn.list_executions(stateMachineArn=workflow.state_machine_arn())["executions"])


def test_the_arns_name_the_provisioned_state_machine(workflow: StepFunctionsWorkflow) -> None:
    sfn = aws_clients.client("stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    assert [m["stateMachineArn"] for m in machines if m["name"] == STATE_MACHINE] == [
        workflow.state_machine_arn()
    ]
    assert workflow.execution_arn("o-1") == (
        workflow.state_machine_arn().replace(":stateMachine:", ":execution:") + ":o-1"
    )


def test_an_order_execution_starts_once(workflow: StepFunctionsWorkflow) -> None:
    order_id = str(uuid.uuid4())
    assert workflow.status(order_id) is None
    execution_input = {"order_id": order_id, "owner_id": ALICE, "correlation_id": "c-1"}
    workflow.start(order_id, execution_input)
    assert workflow.status(order_id) == "RUNNING"
    workflow.start(order_id, execution_input)  # a retried request
    workflow.start(order_id, {**execution_input, "correlation_id": "c-2"})
    (execution,) = executions(workflow)
    assert execution["name"] == order_id
    described = aws_clients.client("stepfunctions").describe_execution(
        executionArn=workflow.execution_arn(order_id)
    )
    assert json.loads(described["input"]) == execution_input


def test_a_stopped_execution_stays_stopped(workflow: StepFunctionsWorkflow) -> None:
    order_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    workflow.start(order_id, {"order_id": order_id})
    workflow.start(other, {"order_id": other})
    workflow.stop(order_id, "cancelled by its owner")
    assert workflow.status(order_id) == "ABORTED"
    assert workflow.status(other) == "RUNNING"
    workflow.stop(order_id, "cancelled again")  # ended: left alone
    workflow.stop(str(uuid.uuid4()), "never started")
    workflow.start(order_id, {"order_id": order_id})  # a late retry does not restart it
    assert workflow.status(order_id) == "ABORTED"
    assert len(executions(workflow)) == 2
