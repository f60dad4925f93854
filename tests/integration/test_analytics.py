"""Analytics on the running local stack: events posted over HTTP reach the lake, the daily job
(fired as the schedule would) starts its Athena queries, the emulator's Athena runs them on
DuckDB, its state-change events reach the completion handler through EventBridge and the
local runtime, and the report equals what the lake's objects hold."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from chalicelib.telemetry.pseudonyms import user_digest
from infra.paths import PROJECT_DIR

pytestmark = pytest.mark.integration


def fire_daily(stack: dict[str, Any], at: datetime) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "local.fire", "run_daily_analytics"]
    command += ["--at", at.strftime("%Y-%m-%dT%H:%M:%SZ"), "--state-dir", str(stack["state_dir"])]
    return subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def lake_events(emulator: Any, stack: dict[str, Any], day: str) -> list[dict[str, Any]]:
    """Every event archived in `day`'s partitions, one copy per event_id (as the report)."""
    s3 = emulator("s3")
    bucket = stack["resources"]["DataLakeBucketName"]
    year, month, dom = day.split("-")
    prefix = f"telemetry/year={year}/month={month}/day={dom}/"
    found: dict[str, dict[str, Any]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            for line in gzip.decompress(body).splitlines():
                event = json.loads(line)
                found.setdefault(event["event_id"], event)
    return list(found.values())


def wait_for_report(api: str, headers: dict[str, str], day: str, run: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        report = requests.get(f"{api}/analytics/daily/{day}", headers=headers, timeout=10).json()
        if report.get("run") == run and report.get("state") != "running":
            return dict(report)
        time.sleep(0.2)
    pytest.fail(f"the report of {day} run {run} did not finish: {report}")


@pytest.fixture(scope="module")
def archived_today(api: str, emulator: Any, stack: dict[str, Any], token_for: Any) -> str:
    """A few events of each kind posted through the API and archived; today's date (UTC)."""
    # an admin: it sends another user's events and a system metric (POST /events rules)
    headers = {"Authorization": f"Bearer {token_for('it-analytics@example.com', admin=True)}"}
    now = datetime.now(UTC)
    marker = uuid.uuid4().hex[:8]
    stamp = (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events = [
        {"event_type": "user_activity", "user_id": f"an-{marker}", "activity_type": "login",
         "session_id": f"s-{marker}", "timestamp": stamp},
        {"event_type": "transaction", "transaction_id": f"t-{marker}", "user_id": f"an-{marker}",
         "amount": 12_000.5, "currency": "EUR", "timestamp": stamp},
        {"event_type": "system_metric", "source": "api", "metric_name": "cpu_usage",
         "value": 97.5, "timestamp": stamp},
    ]  # fmt: skip
    answer = requests.post(f"{api}/events", json={"events": events}, headers=headers, timeout=10)
    assert answer.status_code in (200, 202), answer.text
    today = now.strftime("%Y-%m-%d")
    deadline = time.monotonic() + 30
    pseudonyms = stack["environment"]["TELEMETRY_PSEUDONYMS_TABLE_NAME"]
    while time.monotonic() < deadline:
        # the lake names the user by its pseudonym (the pseudonyms table maps it)
        key = {"user_digest": {"S": user_digest(f"an-{marker}")}}
        item = emulator("dynamodb").get_item(TableName=pseudonyms, Key=key).get("Item", {})
        alias = item.get("pseudonym", {}).get("S")
        if alias and any(e.get("user_id") == alias for e in lake_events(emulator, stack, today)):
            return today
        time.sleep(0.3)
    pytest.fail("the posted events never reached the lake")


def test_the_daily_job_reports_what_the_lake_holds(
    api: str, stack: dict[str, Any], emulator: Any, admin_headers: dict[str, str],
    archived_today: str,
) -> None:  # fmt: skip
    day = archived_today
    tomorrow = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    fired = fire_daily(stack, tomorrow.replace(minute=15))
    assert fired.returncode == 0, fired.stdout + fired.stderr
    report = wait_for_report(api, admin_headers, day, run=1)
    assert report["state"] == "complete", report
    lake = lake_events(emulator, stack, day)  # read after the report: nothing arrived since
    kinds = Counter(e["event_type"] for e in lake)
    assert {row["event_type"]: row["events"] for row in report["by_kind"]} == dict(kinds)
    assert report["events"] == len(lake)
    amounts = [
        e["amount"] for e in lake if e["event_type"] == "transaction" and e["amount"] > 10_000
    ]
    fraud = {(r["kind"], r["rule"]): r["events"] for r in report["alerts"]}
    assert fraud[("fraud", "amount")] == len(amounts) >= 1
    assert {job["query"] for job in report["jobs"]} == {
        "daily", "by_kind", "transactions", "alerts", "top_users", "metrics"}  # fmt: skip
    assert all(job["state"] == "SUCCEEDED" and job["bytes_scanned"] > 0 for job in report["jobs"])
    # users are pseudonyms in the lake, so in the report too
    assert report["top_users"] and all(r["user_id"].startswith("p-") for r in report["top_users"])
    listed = requests.get(f"{api}/analytics/daily", headers=admin_headers, timeout=10).json()
    assert listed["reports"][0]["date"] == day


def test_an_admin_reruns_a_day_and_a_second_schedule_does_not(
    api: str, stack: dict[str, Any], admin_headers: dict[str, str], archived_today: str
) -> None:
    day = archived_today
    first = wait_for_report(api, admin_headers, day, run=1)
    tomorrow = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1, minutes=15)
    assert fire_daily(stack, tomorrow).returncode == 0  # already reported: nothing new
    again = requests.get(f"{api}/analytics/daily/{day}", headers=admin_headers, timeout=10).json()
    assert again["run"] == 1
    started = requests.post(f"{api}/analytics/daily/{day}/run", headers=admin_headers, timeout=10)
    # a day that is not over yet cannot be run from the API (only the schedule's AT can)
    assert started.status_code == 400 and "over" in started.json()["error"]["message"]
    assert first["state"] == "complete"


def test_reports_are_for_admins_and_bad_days_are_refused(
    api: str, token_for: Any, admin_headers: dict[str, str]
) -> None:
    user = {"Authorization": f"Bearer {token_for('it-analytics-user@example.com')}"}
    denied = requests.get(f"{api}/analytics/daily", headers=user, timeout=10)
    assert denied.status_code == 403 and denied.json()["error"]["message"]
    for bad in ("2026-13-01", "yesterday", "2026-02-30"):
        answer = requests.get(f"{api}/analytics/daily/{bad}", headers=admin_headers, timeout=10)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["message"]
    missing = requests.get(f"{api}/analytics/daily/2001-01-01", headers=admin_headers, timeout=10)
    assert missing.status_code == 404


def test_the_emulators_athena_fails_bad_sql_with_the_engines_reason(
    emulator: Any, stack: dict[str, Any]
) -> None:
    athena = emulator("athena")
    resources = stack["resources"]
    started = athena.start_query_execution(
        QueryString="SELECT no_such_column FROM telemetry_events WHERE day = 1",
        WorkGroup=resources["AnalyticsWorkGroupName"],
        QueryExecutionContext={"Database": resources["AnalyticsDatabaseName"]},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        execution = athena.get_query_execution(QueryExecutionId=started["QueryExecutionId"])
        status = execution["QueryExecution"]["Status"]
        if status["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.05)
    assert status["State"] == "FAILED"
    assert "no_such_column" in status["StateChangeReason"]
