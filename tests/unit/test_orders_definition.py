"""The order workflow as declared in infra/resources.json, checked against the code it runs:
its tasks are the app's own functions, the errors its Retry and Catch name are the ones the
steps raise, a business refusal ends the execution in success (only what needs a person fails
it), and its role and the API's policy grant no more than it needs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chalicelib.orders import notifications, outcomes
from infra.paths import PROJECT_DIR

RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())["Resources"]
MACHINE = RESOURCES["OrderWorkflow"]["Properties"]
STATES: dict[str, Any] = MACHINE["Definition"]["States"]
#: Names Step Functions or Lambda give errors themselves.
SERVICE_ERRORS = re.compile(r"^(States\.|Lambda\.|Sandbox\.)")


def task_functions() -> dict[str, str]:
    """State -> the function its Resource names (through DefinitionSubstitutions)."""
    found = {}
    for name, state in STATES.items():
        resource = state.get("Resource", "")
        if state["Type"] == "Task" and resource.startswith("${"):
            arn = MACHINE["DefinitionSubstitutions"][resource[2:-1]]["Fn::Sub"]
            found[name] = arn.rsplit("serverless-app-${Stage}-", 1)[1]
    return found


def test_every_task_is_a_function_of_the_app() -> None:
    from app import app

    pure = {function.name for function in app.pure_lambda_functions}
    assert set(task_functions().values()) == pure
    assert len(task_functions()) == 8


def test_the_role_may_invoke_only_its_functions_and_publish_only_to_its_topic() -> None:
    [policy] = RESOURCES["OrderWorkflowRole"]["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    invoked = {arn["Fn::Sub"] for arn in statements["InvokeTaskFunctions"]["Resource"]}
    substituted = {
        v["Fn::Sub"]
        for k, v in MACHINE["DefinitionSubstitutions"].items()
        if k != "OrderUpdatesTopic"
    }
    assert invoked == substituted
    assert statements["PublishOrderUpdates"] == {
        "Sid": "PublishOrderUpdates",
        "Effect": "Allow",
        "Action": "sns:Publish",
        "Resource": {"Ref": "OrderUpdatesTopic"},
    }
    services = {a.split(":")[0] for s in statements.values() for a in _list(s["Action"])}
    assert services == {"lambda", "sns", "logs", "xray"}


def test_the_errors_retried_and_caught_are_the_ones_the_steps_raise() -> None:
    named = {
        error
        for state in STATES.values()
        for rule in state.get("Retry", []) + state.get("Catch", [])
        for error in rule["ErrorEquals"]
    }
    ours = {error for error in named if not SERVICE_ERRORS.match(error)}
    assert ours == {"PaymentError", "StepUnavailable"}
    for error in ours:
        assert isinstance(getattr(outcomes, error), type), error


def test_the_charge_is_retried_as_the_seeds_pattern_says() -> None:
    [payment_retry] = [
        r for r in STATES["ChargePayment"]["Retry"] if r["ErrorEquals"] == ["PaymentError"]
    ]
    assert payment_retry == {
        "ErrorEquals": ["PaymentError"],
        "IntervalSeconds": 2,
        "MaxAttempts": 3,
        "BackoffRate": 2.0,
    }


@pytest.mark.parametrize(
    ("state", "compensation"),
    [
        ("ReserveInventory", "ReleaseInventory"),
        ("ChargePayment", "RefundPayment"),
        ("ShipOrder", "RefundPayment"),
        ("PaymentDeclined", "ReleaseInventory"),
        ("CarrierRefused", "RefundPayment"),
    ],
)
def test_a_failure_after_a_step_that_holds_something_undoes_it(
    state: str, compensation: str
) -> None:
    catches = STATES[state].get("Catch") or [{"Next": STATES[state]["Next"]}]
    assert {c["Next"] for c in catches} == {compensation}
    assert STATES["RefundPayment"]["Next"] == "ReleaseInventory"
    assert STATES["ReleaseInventory"]["Next"] == "NotifyFailure"


#: Choice state -> the Pass state its refusal takes, and the error name that Pass records.
REFUSAL_BRANCHES = {
    "CheckOrder": ("InvalidOrder", "InvalidOrder"),
    "CheckStock": ("OutOfStock", "OutOfStock"),
    "CheckPayment": ("PaymentDeclined", "PaymentDeclined"),
    "CheckShipment": ("CarrierRefused", "ShippingError"),
}


def _end_of(name: str, error: str) -> list[str]:
    """The states from `name` to the end, for a failure named `error` (a Choice: the rule on
    `$.failure.Error` it meets, else its Default)."""
    path = [name]
    while (state := STATES[path[-1]])["Type"] not in ("Succeed", "Fail"):
        if state["Type"] != "Choice":
            path.append(state["Next"])
            continue
        test = {"Variable": "$.failure.Error", "StringEquals": error}
        met = [rule["Next"] for rule in state["Choices"] if test in rule.get("Or", [])]
        path.append(met[0] if met else state["Default"])
    return path


@pytest.mark.parametrize("choice", sorted(REFUSAL_BRANCHES))
def test_a_refusal_is_an_answer_branched_on_and_ends_the_execution_in_success(
    choice: str,
) -> None:
    refusal, error = REFUSAL_BRANCHES[choice]
    state = STATES[choice]
    assert state["Type"] == "Choice" and state["Default"] == refusal
    # The task before it answered; a Choice on an answer, never a Catch on an error.
    [task] = [n for n, s in STATES.items() if s.get("Next") == choice]
    assert state["Choices"][0]["Variable"].startswith(STATES[task]["ResultPath"] + ".")
    if task in ("ValidateOrder", "ShipOrder"):  # these raise to an execution asking no answer
        assert STATES[task]["Parameters"]["refusals"] == "answer"
    assert STATES[refusal]["Type"] == "Pass"
    assert STATES[refusal]["Parameters"]["Error"] == error
    assert error in outcomes.REFUSALS and error in outcomes.FAILURE_CODES
    assert error in notifications.REASONS  # the owner's email says why
    assert _end_of(refusal, error)[-4:] == [
        "NotifyFailure",
        "FailOrder",
        "CheckFailure",
        "OrderRefused",
    ]
    assert STATES["OrderRefused"]["Type"] == "Succeed"


def test_only_what_needs_a_person_ends_the_execution_failed() -> None:
    check = STATES["CheckFailure"]
    [rule] = check["Choices"]
    assert {r["Variable"] for r in rule["Or"]} == {"$.failure.Error"}
    assert {r["StringEquals"] for r in rule["Or"]} == set(outcomes.REFUSALS)
    assert (rule["Next"], check["Default"]) == ("OrderRefused", "OrderFailed")
    failing = {name for name, state in STATES.items() if state["Type"] == "Fail"}
    assert failing == {"OrderFailed", "CompensationFailed"}
    # The errors the steps raise are not refusals: they fail the execution.
    for error in ("PaymentError", "StepUnavailable", "OrderConflict", "InvalidTaskInput"):
        assert error not in outcomes.REFUSALS
        assert _end_of("NotifyFailure", error)[-1] == "OrderFailed"


def test_every_transition_leads_to_a_state_and_every_state_is_reached() -> None:
    targets = {MACHINE["Definition"]["StartAt"]}
    for state in STATES.values():
        targets |= {state["Next"]} if "Next" in state else set()
        targets |= {c["Next"] for c in state.get("Catch", []) + state.get("Choices", [])}
        targets |= {state["Default"]} if "Default" in state else set()
    assert targets == set(STATES)


def test_the_workflow_is_standard_timed_logged_and_traced() -> None:
    assert MACHINE["StateMachineType"] == "STANDARD"
    assert MACHINE["Definition"]["TimeoutSeconds"] == 900
    # Traced where the stage turns X-Ray on (staging, prod: tests/unit/test_monitoring.py).
    assert MACHINE["TracingConfiguration"] == {"Enabled": {"Fn::If": ["IsTraced", True, False]}}
    assert MACHINE["LoggingConfiguration"]["Level"] == "ERROR"


def test_the_api_may_start_executions_of_this_machine_only() -> None:
    policy = json.loads((PROJECT_DIR / ".chalice" / "policy-dev.json").read_text())
    granted = [s for s in policy["Statement"] if any(a.startswith("states:") for a in s["Action"])]
    resources = {r for s in granted for r in s["Resource"]}
    assert resources == {
        "arn:aws:states:*:*:stateMachine:serverless-app-dev-order-workflow",
        "arn:aws:states:*:*:execution:serverless-app-dev-order-workflow:*",
    }
    actions = {a for s in granted for a in s["Action"]}
    assert actions == {"states:StartExecution", "states:StopExecution"}


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
