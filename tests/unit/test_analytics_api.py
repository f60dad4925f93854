"""The daily report through the app's entry points (Chalice's test client, real tokens, each
function's AWS calls checked against its own IAM policy): the admin routes, the completion
handler fed Athena's state-change events, and the 00:30 schedule. The app's clock is pinned
(tests/unit/conftest.py: 2026-11-26 12:00 UTC, or set here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.analytics import queries
from chalicelib.core import clock
from tests.unit.analytics_lake import activity, put_events, transaction
from tests.unit.analytics_lake import wait as wait_query

DAY = "2026-11-25"  # the day before the tests' clock


def seed(aws: dict[str, str], day: str) -> None:
    """A few events that arrived on `day` (one of them twice, in two objects)."""
    arrival = datetime.fromisoformat(day).replace(hour=9, tzinfo=UTC)
    events = [activity("a1", arrival, "u1", "s1"),
              activity("a2", arrival + timedelta(seconds=90), "u1", "s1"),
              transaction("t1", arrival, "u2", 12_500.0),
              transaction("t2", arrival, "u1", 20.0, "USD", "failed")]  # fmt: skip
    s3, bucket = boto3.client("s3"), aws["DataLakeBucketName"]
    put_events(s3, bucket, arrival, "shardId-0-1", events)
    put_events(s3, bucket, arrival + timedelta(hours=1), "shardId-0-2", events[:1])


def complete(client: Any, report: dict[str, Any]) -> None:
    """Wait for each job's query, then deliver Athena's event to the completion handler."""
    athena = boto3.client("athena")
    for job in report["jobs"]:
        execution = wait_query(athena, job["query_execution_id"])
        event = client.events.generate_cw_event(
            source="aws.athena",
            detail_type="Athena Query State Change",
            detail={
                "currentState": execution["Status"]["State"],
                "previousState": "RUNNING",
                "queryExecutionId": job["query_execution_id"],
                "sequenceNumber": "3",
                "statementType": "DML",
                "versionId": "0",
                "workgroupName": execution["WorkGroup"],
            },
            resources=[],
            region="us-east-1",
        )
        client.lambda_.invoke("complete_analytics_query", event)


def check_complete(report: dict[str, Any], day: str) -> None:
    assert report["state"] == "complete", report
    assert report["date"] == day and report["failed_queries"] == [] and report["errors"] == {}
    assert report["events"] == 4
    assert report["by_kind"] == [
        {"event_type": "transaction", "events": 2, "users": 2},
        {"event_type": "user_activity", "events": 2, "users": 1},
    ]
    assert report["daily"] == [{"event_date": day, "events": 4, "unique_users": 2,
                                "sessions": 1, "avg_session_seconds": 90}]  # fmt: skip
    alerts = {(row["kind"], row["rule"]): row["events"] for row in report["alerts"]}
    assert alerts == {("fraud", "amount"): 1, ("fraud", "velocity"): 0,
                      ("anomaly", "threshold"): 0}  # fmt: skip
    assert [row["currency"] for row in report["transactions"]] == ["EUR", "USD"]
    assert report["transactions"][1]["failed"] == 1
    assert [job["query"] for job in report["jobs"]] == list(queries.QUERY_NAMES)
    assert all(job["state"] == "SUCCEEDED" and job["bytes_scanned"] > 0 for job in report["jobs"])


def test_an_admin_runs_a_day_and_reads_its_report(client, api, aws):
    seed(aws, DAY)

    started = api.post(f"/analytics/daily/{DAY}/run", None)

    assert started.status_code == 202, started.body
    assert started.headers["Location"] == f"/analytics/daily/{DAY}"
    assert started.json_body["state"] == "running" and started.json_body["run"] == 1
    assert api.get(f"/analytics/daily/{DAY}").json_body["state"] == "running"
    again = api.post(f"/analytics/daily/{DAY}/run", None)
    assert again.status_code == 409, again.body

    complete(client, started.json_body)

    shown = api.get(f"/analytics/daily/{DAY}")
    assert shown.status_code == 200, shown.body
    check_complete(shown.json_body, DAY)
    listed = api.get("/analytics/daily")
    assert listed.status_code == 200, listed.body
    (summary,) = listed.json_body["reports"]
    assert summary["date"] == DAY and summary["state"] == "complete" and summary["events"] == 4
    assert listed.json_body["next_cursor"] is None

    complete(client, started.json_body)  # redelivered events: nothing changes
    assert api.get(f"/analytics/daily/{DAY}").json_body == shown.json_body
    rerun = api.post(f"/analytics/daily/{DAY}/run", None)
    assert rerun.status_code == 202 and rerun.json_body["run"] == 2, rerun.body


def test_only_admins_may_use_analytics(api, accounts, aws):
    _, token = accounts.register()
    user = api.as_(token)
    for response in (user.get("/analytics/daily"), user.get(f"/analytics/daily/{DAY}"),
                     user.post(f"/analytics/daily/{DAY}/run", None)):  # fmt: skip
        assert response.status_code == 403, response.body
        assert "error" in response.json_body
    assert api.as_(None).get("/analytics/daily").status_code == 401
    assert api.get(f"/analytics/daily/{DAY}").status_code == 404  # nothing was run


@pytest.mark.parametrize("path", [
    "/analytics/daily/2026-11-31", "/analytics/daily/yesterday", "/analytics/daily/20261125",
    "/analytics/daily/2026-11-26/run", "/analytics/daily/2026-12-01/run",
    "/analytics/daily/2026-08-01/run", "/analytics/daily/2026-13-01/run",
    "/analytics/daily?limit=0", "/analytics/daily?limit=abc", "/analytics/daily?cursor=bad",
])  # fmt: skip
def test_bad_dates_are_400_with_a_json_body(api, path):
    response = api.post(path, None) if path.endswith("/run") else api.get(path)
    assert response.status_code == 400, (path, response.body)
    assert response.headers["Content-Type"].startswith("application/json")
    assert isinstance(response.json_body, dict) and response.json_body.get("error"), response.body


@pytest.mark.parametrize("cursor", ["bad", "2026-13-01", "%94"])
def test_a_bad_cursor_is_said_to_be_the_cursor(api, cursor):
    response = api.get(f"/analytics/daily?cursor={cursor}")
    assert response.status_code == 400, response.body
    assert "cursor" in response.json_body["error"]["message"], response.body


def test_an_unknown_day_is_404(api):
    response = api.get("/analytics/daily/2026-11-20")
    assert response.status_code == 404, response.body
    assert "/analytics/daily/2026-11-20/run" in str(response.json_body)


def test_the_schedule_reports_the_day_before_it_fires(client, api, aws):
    seed(aws, "2026-12-05")
    seed(aws, "2026-12-04")  # another day's data, not read
    fired = datetime(2026, 12, 6, 0, 15, tzinfo=UTC)
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/run-daily-analytics"],
        region="us-east-1",
    )  # fmt: skip
    event["time"] = "2026-12-06T00:15:00Z"

    with clock.use(lambda: fired + timedelta(seconds=5)):
        client.lambda_.invoke("run_daily_analytics", event)
        client.lambda_.invoke("run_daily_analytics", event)  # delivered twice: resumed
        listed = api.get("/analytics/daily").json_body["reports"]
        assert [r["date"] for r in listed] == ["2026-12-05"] and listed[0]["run"] == 1
        report = api.get("/analytics/daily/2026-12-05").json_body
        assert report["requested_by"] == "schedule"
        complete(client, report)
        check_complete(api.get("/analytics/daily/2026-12-05").json_body, "2026-12-05")
        event["id"] = "another-delivery"
        client.lambda_.invoke("run_daily_analytics", event)  # the day has its report
        assert api.get("/analytics/daily/2026-12-05").json_body["run"] == 1


def test_a_late_object_in_a_reported_day_counts_once_the_day_is_run_again(client, api, aws):
    """A batch archived into the day after its report ran (the processor retrying past the
    schedule), plus another copy of an object already read: the re-run counts the late
    events, and the copy's events once."""
    seed(aws, DAY)
    first = api.post(f"/analytics/daily/{DAY}/run", None).json_body
    complete(client, first)
    before = api.get(f"/analytics/daily/{DAY}").json_body
    check_complete(before, DAY)

    late = datetime.fromisoformat(DAY).replace(hour=23, minute=59, tzinfo=UTC)
    s3, bucket = boto3.client("s3"), aws["DataLakeBucketName"]
    put_events(
        s3,
        bucket,
        late,
        "shardId-0-9",
        [activity("late-1", late, "u3", "s9"), transaction("t1", late, "u2", 12_500.0)],
    )
    assert api.get(f"/analytics/daily/{DAY}").json_body["events"] == 4  # the report stands

    second = api.post(f"/analytics/daily/{DAY}/run", None).json_body
    complete(client, second)
    report = api.get(f"/analytics/daily/{DAY}").json_body
    assert report["run"] == 2 and report["state"] == "complete"
    assert report["events"] == 5  # t1 again is the same event: counted once
    assert {r["event_type"]: r["events"] for r in report["by_kind"]} == {
        "transaction": 2, "user_activity": 3}  # fmt: skip
    assert report["bytes_scanned"] > before["bytes_scanned"]  # the late object was read
