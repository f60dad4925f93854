"""Order workflow executions as the console shows them: the list, and one execution's path
through its state machine, read from Step Functions' own history (GetExecutionHistory), as
the AWS console draws it.

Each state the execution entered is a `Visit`: its input and output, how many times its
task was attempted (a Retry shows as attempts > 1, with each failure's error), whether it
ended in a failure the state machine caught. Consecutive visits are the `taken` transitions,
each named by the kind of edge the definition has between them (next, choice, default,
catch).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Step Functions' event types that start, fail and end a task attempt.
_ATTEMPT_STARTS = {"LambdaFunctionScheduled", "TaskScheduled", "ActivityScheduled"}
_ATTEMPT_FAILURES = {
    "LambdaFunctionFailed": "lambdaFunctionFailedEventDetails",
    "LambdaFunctionTimedOut": "lambdaFunctionTimedOutEventDetails",
    "LambdaFunctionScheduleFailed": "lambdaFunctionScheduleFailedEventDetails",
    "LambdaFunctionStartFailed": "lambdaFunctionStartFailedEventDetails",
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
    "TaskStartFailed": "taskStartFailedEventDetails",
    "TaskSubmitFailed": "taskSubmitFailedEventDetails",
}
_ATTEMPT_SUCCESSES = {"LambdaFunctionSucceeded", "TaskSucceeded", "ActivitySucceeded"}


@dataclass
class Visit:
    state: str
    state_type: str
    entered: datetime | None
    input: Any = None
    output: Any = None
    exited: datetime | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    succeeded_attempt: bool = False

    @property
    def retried(self) -> bool:
        return self.attempts > 1

    @property
    def failed(self) -> bool:
        """Its last attempt failed: the state machine caught it, or the execution failed."""
        return bool(self.failures) and not self.succeeded_attempt

    @property
    def duration_ms(self) -> float | None:
        if self.entered is None or self.exited is None:
            return None
        return (self.exited - self.entered).total_seconds() * 1000


@dataclass
class Execution:
    arn: str
    name: str
    machine: str
    status: str
    started: datetime | None
    stopped: datetime | None
    correlation_id: str | None = None
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    definition: dict[str, Any] = field(default_factory=dict)
    visits: list[Visit] = field(default_factory=list)
    taken: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, edge kind)

    @property
    def duration_ms(self) -> float | None:
        if self.started is None or self.stopped is None:
            return None
        return (self.stopped - self.started).total_seconds() * 1000


def executions(target: Any, limit: int = 50) -> list[Execution]:
    """The newest executions of every state machine, newest first."""
    sfn = target.client("stepfunctions")
    found: list[Execution] = []
    for machine in sfn.list_state_machines().get("stateMachines", []):
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine["stateMachineArn"]
        ):
            for item in page["executions"]:
                found.append(
                    Execution(
                        arn=item["executionArn"],
                        name=item["name"],
                        machine=machine["name"],
                        status=item["status"],
                        started=item.get("startDate"),
                        stopped=item.get("stopDate"),
                    )
                )
    found.sort(key=lambda e: e.started or datetime.min, reverse=True)
    return found[:limit]


def execution(target: Any, arn: str) -> Execution:
    """One execution with its definition and its path (LookupError if there is none)."""
    sfn = target.client("stepfunctions")
    try:
        described = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist as missing:
        raise LookupError(f"no execution {arn}") from missing
    machine = sfn.describe_state_machine(stateMachineArn=described["stateMachineArn"])
    definition = json.loads(machine["definition"])
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
        events += page["events"]
    given = _json(described.get("input"))
    run = Execution(
        arn=arn,
        name=described["name"],
        machine=machine["name"],
        status=described["status"],
        started=described.get("startDate"),
        stopped=described.get("stopDate"),
        correlation_id=given.get("correlation_id") if isinstance(given, dict) else None,
        input=given,
        output=_json(described.get("output")),
        error=described.get("error"),
        cause=described.get("cause"),
        definition=definition,
    )
    run.visits = visits_of(events)
    run.taken = transitions(run.visits, definition.get("States", {}))
    return run


def visits_of(events: list[dict[str, Any]]) -> list[Visit]:
    """The states an execution entered, in order, from its history's events."""
    visits: list[Visit] = []
    current: Visit | None = None
    for event in sorted(events, key=lambda e: e["id"]):
        kind = event["type"]
        if kind.endswith("StateEntered"):
            details = event.get("stateEnteredEventDetails", {})
            current = Visit(
                state=details.get("name", "?"),
                state_type=kind.removesuffix("StateEntered"),
                entered=event.get("timestamp"),
                input=_json(details.get("input")),
            )
            visits.append(current)
        elif current is None:
            continue
        elif kind.endswith("StateExited"):
            current.output = _json(event.get("stateExitedEventDetails", {}).get("output"))
            current.exited = event.get("timestamp")
        elif kind in _ATTEMPT_STARTS:
            current.attempts += 1
            current.succeeded_attempt = False
        elif kind in _ATTEMPT_SUCCESSES:
            current.succeeded_attempt = True
        elif kind in _ATTEMPT_FAILURES:
            details = event.get(_ATTEMPT_FAILURES[kind], {})
            error = details.get("error") or kind
            cause = _cause(details.get("cause"))
            current.failures.append(f"{error}: {cause}" if cause else error)
            current.succeeded_attempt = False
    return visits


def transitions(visits: list[Visit], states: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(from, to, kind) for each step of the path: the kind of edge the definition has from
    one state to the next (a failed visit's way out is its Catch)."""
    taken = []
    for before, after in itertools.pairwise(visits):
        kinds = [k for t, k, _ in edges_of(states.get(before.state, {})) if t == after.state]
        if before.failed and "catch" in kinds:
            kind = "catch"
        else:
            kind = next((k for k in kinds if k != "catch"), kinds[0] if kinds else "next")
        taken.append((before.state, after.state, kind))
    return taken


def edges_of(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, kind, label) for each way out of a state: next, choice (a Choice's rule),
    default (a Choice's Default) and catch (with the errors it catches)."""
    edges: list[tuple[str, str, str]] = []
    if state.get("Next"):
        edges.append((state["Next"], "next", ""))
    for rule in state.get("Choices", []):
        if rule.get("Next"):
            edges.append((rule["Next"], "choice", _rule_label(rule)))
    if state.get("Default"):
        edges.append((state["Default"], "default", "otherwise"))
    for catcher in state.get("Catch", []):
        if catcher.get("Next"):
            edges.append((catcher["Next"], "catch", ", ".join(catcher.get("ErrorEquals", []))))
    return edges


def _rule_label(rule: dict[str, Any]) -> str:
    variable = str(rule.get("Variable", "")).removeprefix("$.")
    for key, value in rule.items():
        if key not in ("Variable", "Next") and not isinstance(value, (dict, list)):
            return f"{variable} {key} {json.dumps(value)}".strip()
    return variable or "rule"


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cause(cause: Any) -> str:
    """A failure's cause in a line: a Lambda error's `errorMessage`, else the text."""
    parsed = _json(cause)
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])
    return "" if cause is None else str(cause)[:300]
