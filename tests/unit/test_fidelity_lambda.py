"""What `local/fidelity.py` makes the emulator do as AWS does, for Lambda and Step Functions,
checked against the emulator in a process of its own: Lambda invocations (the Invoke API, a
state machine's Lambda task) run the fixture app's handlers in the local runtime
(`local/events/invoke.py`), with Lambda's error shape, which Step Functions' Retry and Catch
match; state machines execute, and a stopped one stays ABORTED.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import requests

from infra.wiring import function_name
from local.events.core import EventRuntime, Invocation
from local.events.invoke import InvokeEndpoint
from local.provision import create_functions
from local.stack import free_port
from tests.fixtures import event_app
from tests.unit.runtime_helpers import REGION, Client, emulator
from tests.unit.test_fidelity_dynamodb import clients_at

STAGE = "dev"
#: The fixture app's functions the emulator holds.
FUNCTIONS = ["echo", "fail", "slow"]


# --- Lambda invocations in the local runtime -------------------------------------------------


@dataclass
class LambdaStack:
    """An emulator whose Lambda invocations go to an invoke endpoint serving the fixture app."""

    url: str
    client: Client
    seen: list[Invocation]
    states_role: str

    def arn(self, name: str) -> str:
        configuration = self.client("lambda").get_function(FunctionName=deployed(name))
        return str(configuration["Configuration"]["FunctionArn"])

    def reported(self, handler: str) -> list[Invocation]:
        return [i for i in list(self.seen) if i.handler == handler]


def deployed(name: str) -> str:
    return function_name(STAGE, name)


@pytest.fixture(scope="module")
def lambda_stack() -> Iterator[LambdaStack]:
    endpoint = InvokeEndpoint("127.0.0.1")
    try:
        with emulator(endpoint.url) as url:
            client = clients_at(url)
            seen: list[Invocation] = []
            runtime = EventRuntime(
                event_app.app, client, REGION, on_invocation=seen.append, handlers=()
            )
            create_functions(STAGE, FUNCTIONS, client("lambda"), client("iam"))
            endpoint.serve(runtime, STAGE)
            assume = {"Effect": "Allow", "Action": "sts:AssumeRole",
                      "Principal": {"Service": "states.amazonaws.com"}}  # fmt: skip
            trust = {"Version": "2012-10-17", "Statement": [assume]}
            role = client("iam").create_role(
                RoleName="fixture-states", AssumeRolePolicyDocument=json.dumps(trust)
            )
            yield LambdaStack(url, client, seen, role["Role"]["Arn"])
    finally:
        endpoint.stop()


@pytest.fixture
def stack(lambda_stack: LambdaStack) -> LambdaStack:
    event_app.reset()
    lambda_stack.seen.clear()
    return lambda_stack


def test_functions_are_created_as_chalice_deploys_them_once(stack: LambdaStack) -> None:
    functions = stack.client("lambda").list_functions()["Functions"]
    names = sorted(f["FunctionName"] for f in functions)
    assert names == sorted(f"serverless-app-dev-{name}" for name in FUNCTIONS)
    create_functions(STAGE, FUNCTIONS, stack.client("lambda"), stack.client("iam"))  # again
    assert len(stack.client("lambda").list_functions()["Functions"]) == len(FUNCTIONS)


def test_invoke_answers_the_handlers_result(stack: LambdaStack) -> None:
    event = {"order": "o-1", "lines": [{"sku": "A", "quantity": 2}]}
    lambda_ = stack.client("lambda")
    for name in (deployed("echo"), stack.arn("echo")):
        answer = lambda_.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        assert answer["StatusCode"] == 200
        assert "FunctionError" not in answer
        assert json.loads(answer["Payload"].read()) == event
    assert event_app.lambda_calls == [("echo", event), ("echo", event)]
    assert [(i.source, i.outcome) for i in stack.reported("echo")] == [("lambda:invoke", "ok")] * 2


def test_a_raising_handler_answers_function_error_and_its_error_type(stack: LambdaStack) -> None:
    answer = stack.client("lambda").invoke(
        FunctionName=deployed("fail"), Payload=json.dumps({"why": "declined"}).encode()
    )
    assert answer["StatusCode"] == 200
    assert answer.get("FunctionError")
    body = json.loads(answer["Payload"].read())
    assert body["errorType"] == "FixtureError"
    assert body["errorMessage"] == "fixture failure: declined"
    assert any("raise FixtureError" in frame for frame in body["stackTrace"])
    assert [i.outcome for i in stack.reported("fail")] == [
        "error: FixtureError: fixture failure: declined"
    ]


def test_a_raising_handler_is_an_unhandled_function_error(stack: LambdaStack) -> None:
    """Lambda's Python runtime reports an exception the handler let out as `Unhandled`."""
    answer = stack.client("lambda").invoke(FunctionName=deployed("fail"), Payload=b"{}")
    assert answer.get("FunctionError") == "Unhandled"


def test_a_function_the_runtime_does_not_have_is_a_lambda_service_exception(
    stack: LambdaStack,
) -> None:
    """A function the emulator has and the app does not: the runtime answers 404, which
    reaches the caller as an error of Lambda's service."""
    lambda_ = stack.client("lambda")
    role = stack.client("iam").get_role(RoleName="serverless-app-dev-local-functions")
    lambda_.create_function(
        FunctionName=deployed("ghost"),
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="app.ghost",
        Code={"ZipFile": _placeholder_zip()},
    )
    try:
        answer = lambda_.invoke(FunctionName=deployed("ghost"), Payload=b"{}")
    finally:
        lambda_.delete_function(FunctionName=deployed("ghost"))
    assert answer.get("FunctionError")
    body = json.loads(answer["Payload"].read())
    assert body["errorType"] == "Lambda.ServiceException"
    assert f"Function not found: {deployed('ghost')}" in body["errorMessage"]
    assert stack.seen == []


def _placeholder_zip() -> bytes:
    import io
    import zipfile

    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "# placeholder\n")
    return code.getvalue()


def wait_for_execution(sfn: Any, execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
    """The execution once it has ended (polled; the deadline bounds a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return dict(execution)
        if time.monotonic() > deadline:
            raise AssertionError(f"execution still running after {timeout} s")
        time.sleep(0.05)


def test_a_state_machine_runs_the_functions_retries_and_catches(stack: LambdaStack) -> None:
    """A Task on `echo`, then a Task on `fail` with a Retry (1 s apart, once) and a Catch on
    FixtureError: the execution succeeds through the Catch, after two attempts 1 s apart."""
    definition = {
        "StartAt": "Echo",
        "States": {
            "Echo": {"Type": "Task", "Resource": stack.arn("echo"), "ResultPath": "$.echoed",
                     "Next": "Charge"},
            "Charge": {
                "Type": "Task",
                "Resource": stack.arn("fail"),
                "Retry": [{"ErrorEquals": ["FixtureError"], "IntervalSeconds": 1,
                           "MaxAttempts": 1, "BackoffRate": 1.0}],
                "Catch": [{"ErrorEquals": ["FixtureError"], "ResultPath": "$.caught",
                           "Next": "Compensate"}],
                "Next": "NotCaught",
            },
            "NotCaught": {"Type": "Fail", "Error": "NotCaught"},
            "Compensate": {"Type": "Pass", "Result": "compensated", "ResultPath": "$.outcome",
                           "End": True},
        },
    }  # fmt: skip
    sfn = stack.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"fixture-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(definition),
        roleArn=stack.states_role,
    )["stateMachineArn"]
    event = {"why": "card declined"}
    execution_arn = sfn.start_execution(
        stateMachineArn=machine, name="run-1", input=json.dumps(event)
    )["executionArn"]

    execution = wait_for_execution(sfn, execution_arn)
    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert output["echoed"] == event
    assert output["outcome"] == "compensated"
    assert output["caught"]["Error"] == "FixtureError"
    cause = json.loads(output["caught"]["Cause"])
    assert cause["errorType"] == "FixtureError"
    assert cause["errorMessage"] == "fixture failure: card declined"

    events = sfn.get_execution_history(executionArn=execution_arn)["events"]
    kinds = [e["type"] for e in events]
    failures = [e for e in events if e["type"] == "LambdaFunctionFailed"]
    assert [f["lambdaFunctionFailedEventDetails"]["error"] for f in failures] == [
        "FixtureError"
    ] * 2
    assert kinds.count("LambdaFunctionSucceeded") == 1
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered == ["Echo", "Charge", "Compensate"]  # fmt: skip
    # The Retry waited its interval before the second attempt.
    second_attempt = [e for e in events if e["type"] == "LambdaFunctionScheduled"][2]
    waited = _seconds_between(failures[0]["timestamp"], second_attempt["timestamp"])
    assert waited >= 0.99, waited
    assert kinds[-1] == "ExecutionSucceeded"

    # The handlers ran in the local runtime: echo once, fail twice (the try and the retry).
    assert [name for name, _ in event_app.lambda_calls] == ["echo", "fail", "fail"]
    assert [call for _, call in event_app.lambda_calls] == [
        event,
        *[{**event, "echoed": event}] * 2,
    ]
    assert [i.handler for i in stack.seen] == ["echo", "fail", "fail"]


def test_an_execution_stopped_during_a_task_stays_aborted(stack: LambdaStack) -> None:
    """The task still running when the execution is stopped fails afterwards: the execution
    was stopped first, so it is ABORTED (moto made it FAILED, with the task's error)."""
    definition = {
        "StartAt": "Slow",
        "States": {
            "Slow": {
                "Type": "Task",
                "Resource": stack.arn("slow"),
                "Retry": [{"ErrorEquals": ["FixtureError"], "MaxAttempts": 2}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    sfn = stack.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"fixture-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(definition),
        roleArn=stack.states_role,
    )["stateMachineArn"]
    execution_arn = sfn.start_execution(
        stateMachineArn=machine, name="stopped", input=json.dumps({"seconds": 20, "then_fail": 1})
    )["executionArn"]
    deadline = time.monotonic() + 10
    while [name for name, _ in event_app.lambda_calls] != ["slow"]:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    sfn.stop_execution(executionArn=execution_arn, error="Cancelled", cause="by the test")
    event_app.release_slow.set()  # the handler now fails
    execution = wait_for_execution(sfn, execution_arn)
    assert execution["status"] == "ABORTED"
    events = sfn.get_execution_history(executionArn=execution_arn)["events"]
    assert events[-1]["type"] == "ExecutionAborted"
    assert [name for name, _ in event_app.lambda_calls] == ["slow", "slow returned"]


def _seconds_between(earlier: datetime, later: datetime) -> float:
    return (later - earlier).total_seconds()


def test_a_state_machine_without_a_matching_catch_fails_with_the_error(
    stack: LambdaStack,
) -> None:
    definition = {
        "StartAt": "Charge",
        "States": {
            "Charge": {"Type": "Task", "Resource": stack.arn("fail"),
                       "Catch": [{"ErrorEquals": ["SomethingElse"], "Next": "Done"}],
                       "End": True},
            "Done": {"Type": "Succeed"},
        },
    }  # fmt: skip
    sfn = stack.client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"fixture-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(definition),
        roleArn=stack.states_role,
    )["stateMachineArn"]
    execution_arn = sfn.start_execution(stateMachineArn=machine, name="run-1", input="{}")[
        "executionArn"
    ]
    execution = wait_for_execution(sfn, execution_arn)
    assert execution["status"] == "FAILED"
    assert execution["error"] == "FixtureError"
    assert [name for name, _ in event_app.lambda_calls] == ["fail"]


def test_the_state_dump_answers_with_functions_present(stack: LambdaStack) -> None:
    """moto's `/moto-api/data.json` reads every attribute of every function; the Docker
    client one must not fail it."""
    answer = requests.get(f"{stack.url}/moto-api/data.json", timeout=30)
    assert answer.status_code == 200
    dumped = json.dumps(answer.json()["awslambda"])
    for name in FUNCTIONS:
        assert deployed(name) in dumped


def test_an_unreachable_runtime_is_a_lambda_service_exception(stage_env: dict[str, str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with emulator(nowhere) as url:
        client = clients_at(url)
        create_functions(STAGE, ["echo"], client("lambda"), client("iam"))
        answer = client("lambda").invoke(FunctionName=deployed("echo"), Payload=b"{}")
        body = json.loads(answer["Payload"].read())
    assert answer.get("FunctionError")
    assert body["errorType"] == "Lambda.ServiceException"
    assert nowhere in body["errorMessage"]
