"""The analytics adapters on moto (chalicelib/analytics/adapters.py): the analytics-jobs
table's conditional writes, and Athena's answers (paging, truncation, an execution's fields)
from the in-process Athena over moto's S3."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from chalicelib.analytics import model
from chalicelib.analytics.adapters import AthenaQueries, DynamoAnalyticsJobs
from chalicelib.analytics.ports import RunExists
from local.provision import provision
from tests.unit.analytics_lake import metric, put_events, run, wait

DAY = date(2026, 11, 25)
NAMES = ["daily", "by_kind"]
NOW = "2026-11-26T00:15:00.000000Z"


@pytest.fixture
def jobs(aws: dict[str, str]) -> DynamoAnalyticsJobs:
    return DynamoAnalyticsJobs(aws["AnalyticsJobsTableName"])


def begin(jobs: DynamoAnalyticsJobs, request: str, force: bool = False, day: date = DAY) -> int:
    return jobs.begin_run(day, NAMES, "someone", request, force, NOW)


def finish(jobs: DynamoAnalyticsJobs, run: int, day: date = DAY) -> None:
    for name in NAMES:
        jobs.add_job(day, run, name, NOW)
        assert jobs.finish_job(day, run, name, {"state": model.SUCCEEDED, "rows": []})
    assert jobs.finish_run(day, run, {"state": model.COMPLETE, "parts": {}, "errors": {}})


# --- the jobs table -------------------------------------------------------------------------


def test_begin_run_new_retried_existing_and_forced(jobs):
    assert begin(jobs, "req-1") == 1
    assert begin(jobs, "req-1") == 1  # the same request, retried: the same run
    for force in (False, True):  # another request while it runs
        with pytest.raises(RunExists) as exists:
            begin(jobs, "req-2", force)
        assert exists.value.report["state"] == "running" and exists.value.report["run"] == 1

    finish(jobs, 1)
    with pytest.raises(RunExists) as exists:
        begin(jobs, "req-3")  # the schedule: the day has a report
    assert exists.value.report["state"] == "complete"
    with pytest.raises(RunExists):
        begin(jobs, "req-1")  # the first request again, once its run is over

    assert begin(jobs, "req-4", force=True) == 2
    report = jobs.report(DAY)
    assert report["run"] == 2 and report["state"] == "running" and report["request_id"] == "req-4"
    assert not {"parts", "errors", "completed_at"} & set(report)  # the old run's report is gone
    assert report["queries"] == NAMES and report["report_date"] == "2026-11-25"


def test_jobs_are_kept_per_run_and_added_once(jobs):
    begin(jobs, "req-1")
    jobs.add_job(DAY, 1, "daily", NOW)
    jobs.set_execution(DAY, 1, "daily", "exec-1")
    jobs.add_job(DAY, 1, "daily", "2026-11-26T00:20:00.000000Z")  # a retried start
    (job,) = jobs.jobs(DAY, 1)
    assert job["state"] == "QUEUED" and job["query_execution_id"] == "exec-1"
    assert job["created_at"] == NOW
    assert jobs.jobs(DAY, 2) == [] and jobs.report(DAY + timedelta(days=1)) is None


def test_a_job_ends_once(jobs):
    begin(jobs, "req-1")
    jobs.add_job(DAY, 1, "daily", NOW)
    rows = [{"event_date": "2026-11-25", "events": 3, "total": Decimal("1.50"), "avg": 0.25}]
    first = {"state": "FAILED", "error": "boom", "bytes_scanned": 10}

    assert jobs.finish_job(DAY, 1, "daily", first)
    assert not jobs.finish_job(DAY, 1, "daily", {"state": "SUCCEEDED", "rows": rows})
    assert not jobs.finish_job(DAY, 1, "by_kind", first)  # no such job: nothing made

    (job,) = jobs.jobs(DAY, 1)
    assert job["state"] == "FAILED" and job["error"] == "boom" and "rows" not in job
    jobs.add_job(DAY, 1, "by_kind", NOW)
    assert jobs.finish_job(DAY, 1, "by_kind", {"state": "SUCCEEDED", "rows": rows})
    assert jobs.jobs(DAY, 1)[0]["rows"] == [rows[0] | {"total": 1.5}]


def test_finish_run_only_for_the_days_current_running_run(jobs):
    begin(jobs, "req-1")
    finish(jobs, 1)
    assert begin(jobs, "req-2", force=True) == 2
    outcome = {"state": model.COMPLETE, "parts": {"daily": []}, "errors": {}}

    assert not jobs.finish_run(DAY, 1, outcome)  # a late end of the old run
    assert jobs.report(DAY)["state"] == "running"
    assert jobs.finish_run(DAY, 2, outcome | {"state": model.INCOMPLETE})
    assert not jobs.finish_run(DAY, 2, outcome)  # once
    assert jobs.report(DAY)["state"] == "failed"
    assert not jobs.finish_run(DAY - timedelta(days=1), 1, outcome)


def test_recent_pages_newest_day_first(jobs):
    days = [DAY - timedelta(days=n) for n in (0, 1, 2, 5, 9)]
    for day in reversed(days):
        begin(jobs, f"req-{day}", day=day)

    pages, before = [], None
    while True:
        items, before = jobs.recent(2, before)
        pages.append([item["report_date"] for item in items])
        if before is None:
            break

    assert pages == [["2026-11-25", "2026-11-24"], ["2026-11-23", "2026-11-20"], ["2026-11-16"]]
    assert [i["report_date"] for i in jobs.recent(5, None)[0]] == [d.isoformat() for d in days]
    assert jobs.recent(5, None)[1] is None
    assert jobs.recent(3, "2026-11-23") == (jobs.recent(3, "2026-11-23")[0], None)


# --- Athena ---------------------------------------------------------------------------------


def lake_query(aws: dict[str, str], select: str) -> str:
    return (
        f'{select} FROM "{aws["AnalyticsDatabaseName"]}"."telemetry_events"'
        " WHERE year = 2026 AND month = 11 AND day = 25"
    )


@pytest.fixture
def samples(aws: dict[str, str]) -> int:
    """2500 metrics in two objects of the day; the objects' total size."""
    s3, moment = boto3.client("s3"), datetime(2026, 11, 25, 6, tzinfo=UTC)
    events = [metric(f"m{n:05d}", moment, "api", "cpu_usage", n / 4) for n in range(2500)]
    return sum(put_events(s3, aws["DataLakeBucketName"], moment + timedelta(hours=i),
                          f"shardId-{i}", events[i::2]) for i in range(2))  # fmt: skip


def test_results_page_through_more_than_1000_rows(aws, samples):
    athena = boto3.client("athena")
    sql = lake_query(aws, "SELECT event_id, value, hour") + " ORDER BY event_id"
    execution = run(athena, aws["AnalyticsWorkGroupName"], sql)
    queries = AthenaQueries(aws["AnalyticsWorkGroupName"])

    everything = queries.results(execution["QueryExecutionId"], 10_000)
    exactly = queries.results(execution["QueryExecutionId"], 2500)
    cut = queries.results(execution["QueryExecutionId"], 1200)

    expected = [{"event_id": f"m{n:05d}", "value": n / 4, "hour": 6 + n % 2} for n in range(2500)]
    assert everything.rows == expected and not everything.truncated
    assert exactly.rows == expected and not exactly.truncated
    assert cut.rows == expected[:1200] and cut.truncated
    assert everything.columns == [{"name": "event_id", "type": "varchar"},
                                  {"name": "value", "type": "double"},
                                  {"name": "hour", "type": "integer"}]  # fmt: skip


def test_describe_gives_the_executions_fields(aws, samples):
    athena = boto3.client("athena")
    queries = AthenaQueries(aws["AnalyticsWorkGroupName"])
    sql = lake_query(aws, "SELECT count(*) AS n")
    execution_id = queries.start(sql, "t" * 32)
    assert queries.start(sql, "t" * 32) == execution_id  # the same token: the same query
    wait(athena, execution_id)

    found = queries.describe(execution_id)

    assert (found.id, found.query, found.state) == (execution_id, sql, "SUCCEEDED")
    assert found.reason is None
    assert found.bytes_scanned == samples
    assert found.total_ms >= found.engine_ms >= 0 and found.queue_ms >= 0
    assert found.submitted_at <= found.completed_at
    assert all(map(datetime.fromisoformat, (found.submitted_at, found.completed_at)))
    assert queries.results(execution_id, 10).rows == [{"n": 2500}]

    bad = queries.start(lake_query(aws, "SELECT no_such_column"), "u" * 32)
    wait(athena, bad)
    failed = queries.describe(bad)
    assert failed.state == "FAILED" and "no_such_column" in failed.reason
    assert failed.completed_at is not None


def test_athena_answers_in_a_second_moto_session(stage_env):
    """A later mock_aws session (the next test) has new moto backends: the local Athena reads
    that session's Glue and S3, not the first one's (which gave TABLE_NOT_FOUND)."""
    states = []
    for _ in range(2):
        with mock_aws():
            outputs = provision("dev", boto3.client("cloudformation"))
            execution = run(boto3.client("athena"), outputs["AnalyticsWorkGroupName"],
                            lake_query(outputs, "SELECT count(*) AS n"))  # fmt: skip
            status = execution["Status"]
            states.append((status["State"], status.get("StateChangeReason")))
    assert states == [("SUCCEEDED", None)] * 2


def test_a_client_token_of_an_earlier_moto_session_is_not_remembered(stage_env):
    """Each moto session (each test) is a new AWS: a ClientRequestToken used in an earlier
    one must start a new query on this one's data, not answer with the earlier execution."""
    counts = []
    for rows in (1, 3):
        with mock_aws():
            outputs = provision("dev", boto3.client("cloudformation"))
            at = datetime(2026, 11, 25, 9, tzinfo=UTC)
            events = [metric(f"m{n}", at, "api", "cpu_usage", 1.0) for n in range(rows)]
            put_events(boto3.client("s3"), outputs["DataLakeBucketName"], at, "s-1", events)
            athena = boto3.client("athena")
            started = athena.start_query_execution(
                QueryString=lake_query(outputs, "SELECT count(*) AS n"),
                WorkGroup=outputs["AnalyticsWorkGroupName"],
                ClientRequestToken="the-same-token-in-both-sessions-0001",
            )
            wait(athena, started["QueryExecutionId"])
            page = athena.get_query_results(QueryExecutionId=started["QueryExecutionId"])
            counts.append(int(page["ResultSet"]["Rows"][1]["Data"][0]["VarCharValue"]))
    assert counts == [1, 3]
