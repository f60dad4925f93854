"""What keeps a day's report from being stuck: an admin's run whose start Athena refuses ends
at once (503) and can be run again; a run left open for long is settled by the admin's
re-run; each analytics function builds its service from its own environment only; the local
engine skips hidden objects and refuses a partition layout it cannot read."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.analytics.service import AnalyticsService
from chalicelib.core.errors import Conflict, ServiceUnavailable
from infra.wiring import CHALICE_DIR
from local.athena import catalog
from tests.unit.analytics_fakes import MemoryEngine, MemoryJobs
from tests.unit.test_analytics_service import ADMIN, DAY, NOW, Clock, end_all


@pytest.fixture
def parts() -> tuple[MemoryJobs, MemoryEngine, Clock, AnalyticsService]:
    store, engine, now = MemoryJobs(), MemoryEngine(), Clock(NOW)
    return store, engine, now, AnalyticsService(store, engine, "db", "telemetry_events", now=now)


def test_an_admin_run_that_athena_refuses_ends_at_once_and_can_run_again(parts: Any) -> None:
    store, engine, _, service = parts
    engine.failing_starts.add("alerts")
    with pytest.raises(ServiceUnavailable) as refused:
        service.rerun(ADMIN, DAY.isoformat(), "req-1")
    assert refused.value.status_code == 503
    end_all(service, engine, store)  # the queries that did start end
    report = service.report_of(DAY)
    assert report["state"] == "failed"
    assert set(report["errors"]) == {"alerts", "top_users", "metrics"}
    assert report["errors"]["top_users"].startswith("not started:")
    engine.failing_starts.clear()
    assert service.rerun(ADMIN, DAY.isoformat(), "req-2")["run"] == 2


def test_a_rerun_settles_a_run_left_open_for_long_and_runs_the_day_again(parts: Any) -> None:
    store, engine, now, service = parts
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")  # events never come
    with pytest.raises(Conflict):
        service.rerun(ADMIN, DAY.isoformat(), "req-admin")  # minutes later: it still runs
    for execution_id in list(engine.executions):  # Athena ended them; their events were lost
        engine.end(execution_id)
    now.at += timedelta(minutes=31)
    rerun = service.rerun(ADMIN, DAY.isoformat(), "req-admin-2")
    assert rerun["run"] == 2 and rerun["state"] == "running"
    assert store.report(DAY)["run"] == 2


@pytest.mark.parametrize(
    ("function", "factory"),
    [("complete_analytics_query", "report_completion"), ("run_daily_analytics",
     "analytics_service")],
)  # fmt: skip
def test_each_function_builds_its_service_from_its_own_environment(
    function: str, factory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda gives a function only its own variables (.chalice/config.json)."""
    import chalicelib.analytics as analytics

    config = json.loads((CHALICE_DIR / "config.json").read_text())
    own = config["stages"]["dev"]["lambda_functions"][function]["environment_variables"]
    for name in [n for n in os.environ if n.startswith(("ANALYTICS_", "DATA_LAKE_"))]:
        monkeypatch.delenv(name)
    for name, value in own.items():
        monkeypatch.setenv(name, value)
    getattr(analytics, factory).cache_clear()
    try:
        assert getattr(analytics, factory)() is not None
    finally:
        getattr(analytics, factory).cache_clear()


def _table(template: str | None) -> dict[str, Any]:
    parameters = {"projection.enabled": "true", "projection.day.type": "integer",
                  "projection.day.range": "1,31"}  # fmt: skip
    if template is not None:
        parameters["storage.location.template"] = template
    serde = {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"}
    descriptor = {"Location": "s3://lake/t/", "Columns": [{"Name": "a", "Type": "string"}],
                  "SerdeInfo": serde}  # fmt: skip
    keys = [{"Name": "day", "Type": "int"}]
    return {"Name": "t", "Parameters": parameters, "PartitionKeys": keys,
            "StorageDescriptor": descriptor}  # fmt: skip


class _Glue:
    def __init__(self, version: dict[str, Any]) -> None:
        self.version = version

    def get_table(self, database: str, name: str) -> Any:
        version = self.version

        class Stored:
            _current_version = 1

            def get_version(self, _: str) -> dict[str, Any]:
                return version

        return Stored()


def test_a_partition_template_outside_the_hive_layout_is_refused() -> None:
    assert catalog.glue_table(_Glue(_table("s3://lake/t/day=${day}/")), "db", "t").prefix == "t/"
    with pytest.raises(catalog.CatalogError, match="NOT_SUPPORTED"):
        catalog.glue_table(_Glue(_table("s3://lake/t/${day}/")), "db", "t")


def test_hidden_objects_are_not_read() -> None:
    class Key:
        def __init__(self) -> None:
            self.value, self.size, self.etag = b"{}", 2, '"e"'

    class Bucket:
        def __init__(self) -> None:
            self.keys = {"t/day=1/a.json": Key(), "t/day=1/_SUCCESS": Key(), "t/day=1/.p": Key()}

    class S3:
        def get_bucket(self, name: str) -> Any:
            return Bucket()

    table = catalog.glue_table(_Glue(_table(None)), "db", "t")
    assert [o.key for o in catalog.lake_objects(S3(), table)] == ["t/day=1/a.json"]


def test_a_run_that_cannot_be_settled_is_a_409_and_does_not_stop_the_night(parts: Any) -> None:
    _, engine, now, service = parts
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    engine.executions.clear()  # Athena no longer knows the executions (history expired)
    now.at += timedelta(minutes=31)
    with pytest.raises(Conflict):
        service.rerun(ADMIN, DAY.isoformat(), "req-admin")
    assert service.settle_open_runs() == 0  # logged, left for later: no exception
    tonight = service.run_scheduled(now.at + timedelta(days=1), "next-night")
    assert tonight is not None and tonight["date"] == (DAY + timedelta(days=1)).isoformat()
