"""Step Functions as AWS runs them, where stock moto's executing backend differs: here, a
StopExecution that arrives before the execution's thread has begun (`local/fidelity.py`)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from local import fidelity


class _Environment:
    """Stands for the execution's environment, which moto's worker thread creates."""

    def __init__(self) -> None:
        self.stops: list[tuple[str | None, str | None]] = []

    def set_stop(self, stop_date: Any, cause: str | None, error: str | None) -> None:
        self.stops.append((cause, error))


def test_a_stop_right_after_the_start_stops_the_execution() -> None:
    """`POST /orders` then `POST /orders/{id}/cancel` at once (found by `make fuzz`): the
    StopExecution came before the execution's thread had made its environment, and moto
    failed with a 500 (AttributeError on None), which the API answered with a 503. AWS stops
    such an execution: the stop now waits for the environment, then stops it."""
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    fidelity.stop_waits_for_start()
    worker = ExecutionWorker.__new__(ExecutionWorker)
    worker.env = None
    environment = _Environment()
    starting = threading.Timer(0.05, lambda: setattr(worker, "env", environment))
    starting.start()

    worker.stop(stop_date=datetime.now(UTC), error="Cancelled", cause="by the customer")

    starting.join()
    assert environment.stops == [("by the customer", "Cancelled")]
