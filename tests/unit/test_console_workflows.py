"""The console's execution view: a history read into visits and transitions, and the order
workflow laid out and drawn (tests/integration/test_console.py sees it in a browser)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.paths import PROJECT_DIR
from local.console import graph
from local.console.workflows import Execution, transitions, visits_of

RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())["Resources"]
DEFINITION: dict[str, Any] = RESOURCES["OrderWorkflow"]["Properties"]["Definition"]
START = datetime(2030, 1, 1, tzinfo=UTC)


class History:
    """A Step Functions history, written event by event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, **details: Any) -> History:
        event: dict[str, Any] = {
            "id": len(self.events) + 1,
            "type": kind,
            "timestamp": START + timedelta(milliseconds=len(self.events)),
        }
        event.update(details)
        self.events.append(event)
        return self

    def state(self, name: str, kind: str = "Task", *attempts: str) -> History:
        """A state entered, its attempts ("ok" or an error name), then left unless its last
        attempt failed."""
        self.add(f"{kind}StateEntered", stateEnteredEventDetails={"name": name, "input": "{}"})
        for outcome in attempts:
            self.add("LambdaFunctionScheduled")
            if outcome == "ok":
                self.add("LambdaFunctionSucceeded")
            else:
                cause = json.dumps({"errorMessage": f"{outcome} happened", "errorType": outcome})
                self.add(
                    "LambdaFunctionFailed",
                    lambdaFunctionFailedEventDetails={"error": outcome, "cause": cause},
                )
        if not attempts or attempts[-1] == "ok":
            self.add(
                f"{kind}StateExited",
                stateExitedEventDetails={"name": name, "output": '{"done": true}'},
            )
        return self


def test_visits_count_attempts_and_keep_each_failure_with_its_message() -> None:
    history = (
        History()
        .state("ValidateOrder", "Task", "ok")
        .state("ChargePayment", "Task", "PaymentProviderUnavailable", "PaymentProviderUnavailable")
    )
    first, charge = visits_of(history.events)
    assert (first.attempts, first.failed, first.output) == (1, False, {"done": True})
    assert (charge.attempts, charge.retried, charge.failed) == (2, True, True)
    assert (
        charge.failures == ["PaymentProviderUnavailable: PaymentProviderUnavailable happened"] * 2
    )
    assert first.duration_ms is not None and charge.duration_ms is None  # never left


def test_a_retry_that_succeeds_is_not_a_failure() -> None:
    [charge] = visits_of(History().state("ChargePayment", "Task", "Flaky", "ok").events)
    assert (charge.retried, charge.failed, len(charge.failures)) == (True, False, 1)


def test_transitions_name_the_edge_the_definition_has_a_failed_task_leaves_by_its_catch() -> None:
    states = DEFINITION["States"]
    caught = (
        History()
        .state("CheckPayment", "Choice")
        .state("ShipOrder", "Task", "ok")
        .state("CheckShipment", "Choice")
        .state("NotifyCustomer", "Task", "Boom")  # its Catch goes on to CompleteOrder
        .state("CompleteOrder", "Task", "ok")
    )
    taken = transitions(visits_of(caught.events), states)
    assert taken == [
        ("CheckPayment", "ShipOrder", "choice"),
        ("ShipOrder", "CheckShipment", "next"),
        ("CheckShipment", "NotifyCustomer", "choice"),
        ("NotifyCustomer", "CompleteOrder", "catch"),
    ]
    # NotifyFailure's Next and its Catch both lead to FailOrder: a success went by Next.
    fine = History().state("NotifyFailure", "Task", "ok").state("FailOrder", "Task", "ok")
    assert transitions(visits_of(fine.events), states) == [("NotifyFailure", "FailOrder", "next")]
    declined = History().state("CheckPayment", "Choice").state("PaymentDeclined", "Pass")
    assert transitions(visits_of(declined.events), states)[0][2] == "default"


def test_the_main_path_is_what_next_and_choice_rules_reach() -> None:
    assert graph.main_path(DEFINITION) == {
        "ValidateOrder",
        "CheckOrder",
        "ReserveInventory",
        "CheckStock",
        "ChargePayment",
        "CheckPayment",
        "ShipOrder",
        "CheckShipment",
        "NotifyCustomer",
        "CompleteOrder",
        "OrderCompleted",
    }


def test_the_layout_places_every_state_once_without_overlap_main_path_in_column_zero() -> None:
    placed = graph.layout(DEFINITION)
    assert sorted(p.name for p in placed) == sorted(DEFINITION["States"])
    assert len({(p.row, p.column) for p in placed}) == len(placed)
    by_name = {p.name: p for p in placed}
    assert all((p.column == 0) == p.main_path for p in placed)
    # Rows follow the edges: each state below every state that leads to it (no loop here).
    for name, state in DEFINITION["States"].items():
        for target in [
            state.get("Next"),
            state.get("Default"),
            *[c.get("Next") for c in state.get("Choices", []) + state.get("Catch", [])],
        ]:
            if target:
                assert by_name[target].row > by_name[name].row, (name, target)


def test_a_loop_back_does_not_stop_the_layout() -> None:
    looping = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Task", "Next": "B"},
            "B": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.again", "BooleanEquals": True, "Next": "A"}],
                "Default": "C",
            },
            "C": {"Type": "Succeed"},
        },
    }
    rows = {p.name: p.row for p in graph.layout(looping)}
    assert rows["A"] < rows["B"] < rows["C"]
    assert 'data-from="B" data-to="A"' in graph.svg(looping)


def test_the_drawing_marks_visited_failed_retried_states_and_the_taken_edges() -> None:
    history = (
        History()
        .state("ChargePayment", "Task", "Flaky", "ok")
        .state("CheckPayment", "Choice")
        .state("PaymentDeclined", "Pass")
        .state("ReleaseInventory", "Task", "ok")
    )
    run = Execution("arn", "name", "machine", "SUCCEEDED", START, START)
    run.visits = visits_of(history.events)
    run.taken = transitions(run.visits, DEFINITION["States"])
    drawing = graph.svg(DEFINITION, run)

    def classes(state: str) -> set[str]:
        found = re.search(rf'<g class="([^"]+)" data-state="{state}">', drawing)
        assert found, state
        return set(found.group(1).split())

    assert {"visited", "retried", "main"} <= classes("ChargePayment")
    assert {"visited", "branch"} <= classes("PaymentDeclined")
    assert "visited" not in classes("ShipOrder") and "failed" not in classes("ChargePayment")
    assert "\u00d72</text>" in drawing
    taken = re.findall(
        r'class="edge [a-z]+ taken [a-z]+" d="[^"]+" marker-end="[^"]+" '
        r'data-from="([^"]+)" data-to="([^"]+)"',
        drawing,
    )
    assert taken == [
        ("ChargePayment", "CheckPayment"),
        ("CheckPayment", "PaymentDeclined"),
        ("PaymentDeclined", "ReleaseInventory"),
    ]


def test_names_in_the_drawing_are_escaped() -> None:
    odd = {"StartAt": "<b>", "States": {"<b>": {"Type": "Succeed"}}}
    drawing = graph.svg(odd)
    assert "<b>" not in drawing
    assert 'data-state="&lt;b&gt;"' in drawing
