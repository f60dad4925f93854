"""The daily report's logic (chalicelib/analytics/service.py) on in-memory ports: starting a
run, completing its jobs as Athena's events arrive (at least once), settling runs whose
events were lost, reading reports. The clock is the service's `now` argument."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest

from chalicelib.analytics import model, queries
from chalicelib.analytics.service import AnalyticsService
from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import BadRequest, Conflict, Forbidden, NotFound
from tests.unit.analytics_fakes import MemoryEngine, MemoryJobs

NOW = datetime(2026, 11, 26, 0, 15, tzinfo=UTC)
DAY = date(2026, 11, 25)
ADMIN = Principal("admin-1", frozenset({"admins"}))
USER = Principal("user-1", frozenset())
ROWS = {
    "daily": [{"event_date": "2026-11-25", "events": 7, "unique_users": 2, "sessions": 1,
               "avg_session_seconds": 12.5}],
    "by_kind": [{"event_type": "transaction", "events": 4, "users": 2},
                {"event_type": "user_activity", "events": 3, "users": 1}],
    "transactions": [{"currency": "EUR", "transactions": 4, "total_amount": 100.25,
                      "p50_amount": 20.5, "p95_amount": 40.0, "failed": 1}],
    "alerts": [{"kind": "fraud", "rule": "amount", "events": 0}],
    "top_users": [{"user_id": "u1", "events": 5, "transactions": 3}],
    "metrics": [],
}  # fmt: skip


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def store() -> MemoryJobs:
    return MemoryJobs()


@pytest.fixture
def engine() -> MemoryEngine:
    return MemoryEngine()


@pytest.fixture
def now() -> Clock:
    return Clock(NOW)


@pytest.fixture
def service(store: MemoryJobs, engine: MemoryEngine, now: Clock) -> AnalyticsService:
    return AnalyticsService(store, engine, "lake_db", "telemetry_events", now=now)


def execution_ids(store: MemoryJobs, day: date = DAY, run: int = 1) -> dict[str, str]:
    jobs = store.jobs(day, run)
    return {job["query"]: job["query_execution_id"] for job in jobs if "query_execution_id" in job}


def end_all(service: AnalyticsService, engine: MemoryEngine, store: MemoryJobs,
            day: date = DAY, run: int = 1, skip: tuple[str, ...] = ()) -> None:  # fmt: skip
    for name, execution_id in execution_ids(store, day, run).items():
        if name not in skip:
            engine.end(execution_id, rows=ROWS[name])
            service.query_changed(execution_id)


def test_run_daily_starts_one_job_per_query_with_deterministic_tokens(service, store, engine):
    shown = service.run_daily(DAY, requested_by="schedule", request_id="req-1")

    assert shown["state"] == "running" and shown["run"] == 1 and shown["date"] == "2026-11-25"
    assert [job["query"] for job in shown["jobs"]] == list(queries.QUERY_NAMES)
    assert all(job["state"] == "QUEUED" for job in shown["jobs"])
    expected_tokens = [
        hashlib.sha256(f"2026-11-25/1/{name}".encode()).hexdigest() for name in queries.QUERY_NAMES
    ]
    assert [token for _, token in engine.starts] == expected_tokens
    for sql, _ in engine.starts:
        assert sql.startswith("-- analytics-job: 2026-11-25 run 1 ")
        assert "year = 2026 AND month = 11 AND day = 25" in sql
    assert sorted(execution_ids(store).values()) == sorted(engine.executions)
    report = store.report(DAY)
    assert report["requested_by"] == "schedule" and report["queries"] == list(queries.QUERY_NAMES)
    assert report["requested_at"] == "2026-11-26T00:15:00.000000Z"


def test_a_retried_request_resumes_the_same_run(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    first = execution_ids(store)

    again = service.run_daily(DAY, requested_by="schedule", request_id="req-1")

    assert again["run"] == 1 and execution_ids(store) == first
    assert len(engine.executions) == len(queries.QUERY_NAMES)  # the same executions
    assert len(engine.starts) == 2 * len(queries.QUERY_NAMES)


def test_a_retried_run_after_a_failed_start_starts_the_rest(service, store, engine):
    engine.failing_starts.add("alerts")
    with pytest.raises(ConnectionError):
        service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    engine.failing_starts.clear()

    shown = service.run_daily(DAY, requested_by="schedule", request_id="req-1")

    assert shown["run"] == 1 and set(execution_ids(store)) == set(queries.QUERY_NAMES)
    assert len(engine.executions) == len(queries.QUERY_NAMES)


def test_the_schedule_reports_yesterday_and_then_does_nothing(service, store, engine):
    fired = datetime(2026, 11, 26, 0, 15, tzinfo=UTC)
    assert service.run_scheduled(fired, "event-1")["date"] == "2026-11-25"
    end_all(service, engine, store)
    assert store.report(DAY)["state"] == "complete"
    starts, writes = len(engine.starts), store.writes

    assert service.run_scheduled(fired, "event-2") is None  # another delivery, later

    assert len(engine.starts) == starts and store.writes == writes
    assert store.report(DAY)["state"] == "complete" and store.report(DAY)["run"] == 1


def test_the_schedule_does_not_start_over_a_running_run(service, store, engine):
    service.run_daily(DAY, requested_by="admin-1", request_id="req-1")
    assert service.run_scheduled(NOW, "event-1") is None
    assert len(engine.starts) == len(queries.QUERY_NAMES)


def test_an_admin_reruns_a_day_as_run_2_and_gets_409_while_it_runs(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    end_all(service, engine, store)

    shown = service.rerun(ADMIN, "2026-11-25", "req-2")

    assert shown["run"] == 2 and shown["state"] == "running"
    assert shown["requested_by"] == "admin-1"
    assert all(job["state"] == "QUEUED" for job in shown["jobs"])
    assert "parts" not in store.report(DAY) and shown["daily"] == []
    assert len(set(execution_ids(store, run=2).values()) | set(execution_ids(store).values())) == 12
    with pytest.raises(Conflict) as conflict:
        service.rerun(ADMIN, "2026-11-25", "req-3")
    assert conflict.value.status_code == 409
    assert service.rerun(ADMIN, "2026-11-25", "req-2")["run"] == 2  # its own retry: resumed


def test_non_admins_may_neither_run_nor_read(service, store):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    for call in (lambda: service.rerun(USER, "2026-11-25", "req-9"),
                 lambda: service.get(USER, "2026-11-25"),
                 lambda: service.recent(USER, 7, None)):  # fmt: skip
        with pytest.raises(Forbidden) as refused:
            call()
        assert refused.value.status_code == 403
    assert store.report(DAY)["run"] == 1


def test_a_query_that_is_not_a_report_job_is_ignored(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    writes = store.writes
    for sql in ("SELECT 1", "-- analytics-job: 2026-11-25 run 1 secrets\nSELECT 1",
                "SELECT 2 -- analytics-job: 2026-11-25 run 1 daily\n"):  # fmt: skip
        other = engine.add(sql, state=model.SUCCEEDED)
        assert service.query_changed(other) == "not a report query"
    assert store.writes == writes


def test_a_query_still_running_records_nothing(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    writes = store.writes
    assert service.query_changed(execution_ids(store)["daily"]) == "still QUEUED"
    assert store.writes == writes


def test_a_succeeded_query_stores_its_typed_rows(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    execution_id = execution_ids(store)["transactions"]
    engine.end(execution_id, rows=ROWS["transactions"], bytes_scanned=4321)

    assert service.query_changed(execution_id) == "transactions succeeded"

    (job,) = [j for j in store.jobs(DAY, 1) if j["query"] == "transactions"]
    assert job["state"] == "SUCCEEDED" and job["rows"] == ROWS["transactions"]
    assert job["truncated"] is False and job["bytes_scanned"] == 4321
    assert job["query_execution_id"] == execution_id and job["total_ms"] == 20
    assert store.report(DAY)["state"] == "running"


def test_more_rows_than_a_report_keeps_are_truncated(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    execution_id = execution_ids(store)["top_users"]
    engine.end(execution_id, rows=[{"user_id": f"u{i}", "events": 1} for i in range(250)])
    service.query_changed(execution_id)
    (job,) = [j for j in store.jobs(DAY, 1) if j["query"] == "top_users"]
    assert len(job["rows"]) == 200 and job["truncated"] is True


def test_a_redelivered_completion_changes_nothing(service, store, engine, now):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    end_all(service, engine, store)
    report, jobs, writes = store.report(DAY), store.jobs(DAY, 1), store.writes

    now.at += timedelta(minutes=3)
    for execution_id in execution_ids(store).values():
        assert service.query_changed(execution_id) == "already recorded"

    assert store.report(DAY) == report and store.jobs(DAY, 1) == jobs
    assert store.writes == writes


@pytest.mark.parametrize("state, reason, error", [
    ("FAILED", "SYNTAX_ERROR: line 3:7: Column 'x' cannot be resolved", "SYNTAX_ERROR"),
    ("CANCELLED", None, "cancelled"),
])  # fmt: skip
def test_failed_and_cancelled_jobs_end_the_run_failed(service, store, engine, state, reason, error):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    end_all(service, engine, store, skip=("alerts",))
    alerts = execution_ids(store)["alerts"]
    engine.end(alerts, state=state, reason=reason)

    assert service.query_changed(alerts) == f"alerts {state.lower()}"

    (job,) = [j for j in store.jobs(DAY, 1) if j["query"] == "alerts"]
    assert job["state"] == state and error in job["error"] and "rows" not in job
    shown = service.report_of(DAY)
    assert shown["state"] == "failed" and shown["failed_queries"] == ["alerts"]
    assert list(shown["errors"]) == ["alerts"] and error in shown["errors"]["alerts"]
    assert shown["alerts"] == [] and shown["by_kind"] == ROWS["by_kind"]


def test_the_report_is_written_once_every_job_has_ended(service, store, engine, now):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    end_all(service, engine, store, skip=("metrics",))
    report = store.report(DAY)
    assert report["state"] == "running" and "parts" not in report and "completed_at" not in report

    now.at += timedelta(minutes=1)
    metrics = execution_ids(store)["metrics"]
    engine.end(metrics, rows=ROWS["metrics"])
    service.query_changed(metrics)

    report = store.report(DAY)
    assert report["state"] == "complete" and report["errors"] == {}
    assert report["parts"] == {name: rows for name, rows in ROWS.items()}
    assert report["bytes_scanned"] == 6000
    assert report["completed_at"] == "2026-11-26T00:16:00.000000Z"
    shown = service.get(ADMIN, "2026-11-25")
    assert shown["events"] == 7 and shown["transactions"] == ROWS["transactions"]
    assert [job["state"] for job in shown["jobs"]] == ["SUCCEEDED"] * 6


def test_a_late_completion_of_an_old_run_leaves_the_new_run_alone(service, store, engine):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    end_all(service, engine, store, skip=("daily",))
    old_daily = execution_ids(store)["daily"]
    engine.end(old_daily, state="CANCELLED")
    service.query_changed(old_daily)
    service.rerun(ADMIN, "2026-11-25", "req-2")

    assert service.query_changed(old_daily) == "already recorded"
    assert store.report(DAY)["state"] == "running" and store.report(DAY)["run"] == 2


def test_settling_completes_runs_whose_events_were_lost(service, store, engine, now):
    service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    for name, execution_id in execution_ids(store).items():
        engine.end(execution_id, rows=ROWS[name])  # ... and no event arrives

    assert service.settle_open_runs() == 0  # not yet 30 minutes
    assert store.report(DAY)["state"] == "running"
    now.at += timedelta(minutes=31)
    assert service.settle_open_runs() == 1  # one run, its six jobs asked about

    assert store.report(DAY)["state"] == "complete"
    assert store.report(DAY)["parts"]["top_users"] == ROWS["top_users"]
    assert service.settle_open_runs() == 0


def test_settling_fails_a_job_that_never_started(service, store, engine, now):
    engine.failing_starts.add("metrics")  # the last start: every job has its record
    with pytest.raises(ConnectionError):
        service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    engine.failing_starts.clear()
    end_all(service, engine, store)
    assert store.report(DAY)["state"] == "running"

    now.at += timedelta(hours=23, minutes=59)
    assert service.run_scheduled(now.at, "next-day")["date"] == "2026-11-26"  # settles first

    shown = service.report_of(DAY)
    assert shown["state"] == "failed"
    assert shown["errors"] == {"metrics": "the query was never started"}
    assert shown["daily"] == ROWS["daily"] and shown["top_users"] == ROWS["top_users"]


def test_settling_ends_a_run_whose_start_broke_before_its_last_job_record(
    service, store, engine, now
):
    """A start that fails leaves the later queries without a job record: settling goes by
    the run's list of queries, so the run still ends (and the day can be run again)."""
    engine.failing_starts.add("top_users")
    with pytest.raises(ConnectionError):
        service.run_daily(DAY, requested_by="schedule", request_id="req-1")
    engine.failing_starts.clear()
    end_all(service, engine, store)

    now.at += timedelta(hours=23, minutes=59)
    service.settle_open_runs()

    shown = service.report_of(DAY)
    assert shown["state"] == "failed"
    assert set(shown["errors"]) == {"top_users", "metrics"}
    assert service.rerun(ADMIN, "2026-11-25", "req-admin")["run"] == 2


@pytest.mark.parametrize("text", [
    None, "", "yesterday", "2026-11-5", "2026/11/25", "2026-11-25T00:00", " 2026-11-25",
    "2026-02-30", "2026-13-01", "2026-11-26", "2026-11-27", "2027-01-01", "2026-08-27",
    "1999-01-01", "\uff12\uff10\uff12\uff16-11-25",
])  # fmt: skip
def test_parse_day_refuses_bad_today_future_and_too_old_days(text):
    with pytest.raises(BadRequest) as refused:
        model.parse_day(text, date(2026, 11, 26))
    assert refused.value.status_code == 400


@pytest.mark.parametrize("text", ["2026-11-25", "2026-08-28", "2026-10-01"])
def test_parse_day_takes_days_over_and_at_most_90_days_back(text):
    assert model.parse_day(text, date(2026, 11, 26)) == date.fromisoformat(text)


def test_reading_a_bad_or_unknown_day(service):
    for text in ("2026-11-31", "26-11-2026", "2026-11-20 "):
        with pytest.raises(BadRequest):
            service.get(ADMIN, text)
    for text in ("2026-11-20", "2026-11-26"):  # any real day may be read (none reported)
        with pytest.raises(NotFound) as missing:
            service.get(ADMIN, text)
        assert missing.value.status_code == 404


def test_recent_pages_newest_day_first_with_a_cursor(service, store, engine):
    days = [DAY - timedelta(days=n) for n in range(5)]
    for day in reversed(days):
        service.run_daily(day, requested_by="schedule", request_id=f"req-{day}")

    first = service.recent(ADMIN, 2, None)
    second = service.recent(ADMIN, 2, first["next_cursor"])
    last = service.recent(ADMIN, 2, second["next_cursor"])

    listed = [r["date"] for page in (first, second, last) for r in page["reports"]]
    assert listed == [day.isoformat() for day in days]
    assert first["next_cursor"] == "2026-11-24" and second["next_cursor"] == "2026-11-22"
    assert last["next_cursor"] is None
    assert service.recent(ADMIN, 5, None)["next_cursor"] is None
    assert first["reports"][0] | {"requested_at": None} == {
        "date": "2026-11-25", "state": "running", "run": 1, "requested_at": None,
        "requested_by": "schedule", "completed_at": None, "bytes_scanned": None, "events": None,
        "failed_queries": []}  # fmt: skip
    with pytest.raises(BadRequest):
        service.recent(ADMIN, 2, "not-a-day")
