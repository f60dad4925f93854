"""Every EMF metric the app emits is on the stage's dashboard (infra/monitoring.py's
`BUSINESS_METRICS`): the code that emits them runs here, with Powertools' Metrics watched, and
the names and dimensions it emitted are compared with the catalog. A new metric, or a new
place emitting metrics, fails here until the dashboard shows it."""

from __future__ import annotations

import ast
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from infra.monitoring import BUSINESS_METRICS
from infra.paths import PROJECT_DIR

#: The modules that call `emit_metrics`, each exercised below.
EMITTERS = {"chalicelib/core/http.py", "chalicelib/telemetry/processor.py",
            "chalicelib/orders/sweep.py"}  # fmt: skip


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Dimension names (besides `service`) -> the metric names emitted with them."""
    found: dict[str, set[str]] = defaultdict(set)
    pending: list[str] = []

    def add_dimension(self: Any, name: str, value: str) -> None:
        pending.append(name)

    def add_metric(self: Any, name: str, unit: Any, value: float, **_: Any) -> None:
        found[",".join(sorted(pending))].add(name)

    def flush_metrics(self: Any, **_: Any) -> None:
        pending.clear()

    monkeypatch.setattr(Metrics, "add_dimension", add_dimension)
    monkeypatch.setattr(Metrics, "add_metric", add_metric)
    monkeypatch.setattr(Metrics, "flush_metrics", flush_metrics)
    return found


def catalog() -> dict[str, set[str]]:
    shown: dict[str, set[str]] = defaultdict(set)
    for group in BUSINESS_METRICS:
        shown[group.dimension] |= set(group.names)
    return shown


def test_the_api_middlewares_metrics_are_on_the_dashboard(
    stage_env: dict[str, str], emitted: dict[str, set[str]]
) -> None:
    from chalice import Chalice
    from chalice.test import Client

    from chalicelib.core import http

    app = Chalice(app_name="metrics-probe")
    http.install(app)

    @app.route("/probe")
    def probe() -> dict[str, str]:
        return {"ok": "yes"}

    with Client(app, stage_name="dev", project_dir=str(PROJECT_DIR)) as client:
        assert client.http.get("/probe").status_code == 200
    assert emitted, "the middleware emitted no metric"
    for dimension, names in emitted.items():
        assert names <= catalog()[dimension], f"not on the dashboard: {names}"


def test_the_telemetry_processors_metrics_are_on_the_dashboard(
    emitted: dict[str, set[str]],
) -> None:
    from chalicelib.telemetry.processor import emit_counts
    from tests.unit.test_telemetry_support import fake_processor, mixed, records

    processor, parts = fake_processor()
    processor.process(records([mixed(n) for n in range(12)]))
    [counts] = parts["metrics"]
    emit_counts(counts)  # what the deployed processor does with them
    assert emitted == {"pipeline": set(counts)}
    assert set(counts) <= catalog()["pipeline"]


def test_the_sweeps_metrics_are_on_the_dashboard(emitted: dict[str, set[str]]) -> None:
    from chalicelib.orders.sweep import StuckOrderSweep
    from tests.unit.orders_fakes import MemoryOrders, MemoryPayments, MemoryStock, MemoryWorkflow

    orders = MemoryOrders()
    sweep = StuckOrderSweep(
        orders, MemoryStock(orders, {}), MemoryPayments(), MemoryWorkflow(), timedelta(hours=1)
    )
    sweep.run(datetime(2030, 1, 1, 2, tzinfo=UTC))
    assert set(emitted) == {"job"}
    assert emitted["job"] == catalog()["job"]


def test_no_other_code_emits_metrics() -> None:
    """A module calling emit_metrics that is not exercised above would go unchecked."""
    callers = set()
    for path in (PROJECT_DIR / "chalicelib").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "emit_metrics":
                callers.add(str(Path(path).relative_to(PROJECT_DIR)))
    assert callers == EMITTERS


def test_every_catalogued_dimension_is_one_the_code_uses() -> None:
    """The dashboard's widgets filter on these dimensions: a misspelt one shows nothing."""
    sources = "".join((PROJECT_DIR / path).read_text() for path in EMITTERS)
    for group in BUSINESS_METRICS:
        assert f"{group.dimension}=" in sources, group
        if group.value is not None:
            assert f'"{group.value}"' in sources, group
