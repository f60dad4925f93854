"""The telemetry archive in moto's S3 as the processor writes it, and Athena queries run to
their end, for the analytics tests (in-process Athena on DuckDB: tests/conftest.py)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from chalicelib.telemetry.encoding import archive_body

QUERY_TIMEOUT_SECONDS = 30


def stamp(moment: datetime) -> str:
    """A normalized event timestamp (`YYYY-MM-DDTHH:MM:SS.ffffffZ`)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity(event_id: str, at: datetime, user: str, session: str | None = None) -> dict:
    event = {"event_type": "user_activity", "event_id": event_id, "timestamp": stamp(at),
             "user_id": user, "activity_type": "click"}  # fmt: skip
    return event | ({"session_id": session} if session else {})


def transaction(
    event_id: str, at: datetime, user: str, amount: float, currency: str = "EUR",
    status: str = "completed", transaction_id: str | None = None,
) -> dict:  # fmt: skip
    return {"event_type": "transaction", "event_id": event_id, "timestamp": stamp(at),
            "transaction_id": transaction_id or f"tx-{event_id}", "user_id": user,
            "amount": amount, "currency": currency, "status": status}  # fmt: skip


def metric(event_id: str, at: datetime, source: str, name: str, value: float) -> dict:
    return {"event_type": "system_metric", "event_id": event_id, "timestamp": stamp(at),
            "source": source, "metric_name": name, "value": value}  # fmt: skip


def archive_key(arrival: datetime, name: str) -> str:
    return (
        f"telemetry/year={arrival:%Y}/month={arrival:%m}/day={arrival:%d}/hour={arrival:%H}/"
        f"{name}.jsonl.gz"
    )


def put_events(s3: Any, bucket: str, arrival: datetime, name: str, events: list[dict]) -> int:
    """One archive object of the hour `arrival`; returns its size in bytes."""
    body = archive_body(events)
    s3.put_object(Bucket=bucket, Key=archive_key(arrival, name), Body=body)
    return len(body)


def wait(athena: Any, execution_id: str) -> dict[str, Any]:
    """GetQueryExecution's QueryExecution once the query has ended."""
    deadline = time.monotonic() + QUERY_TIMEOUT_SECONDS
    while True:
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        if execution["Status"]["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return execution
        assert time.monotonic() < deadline, f"query {execution_id} still {execution['Status']}"
        time.sleep(0.05)


def run(athena: Any, workgroup: str, sql: str) -> dict[str, Any]:
    """Start `sql` in `workgroup` and wait for its end."""
    started = athena.start_query_execution(QueryString=sql, WorkGroup=workgroup)
    return wait(athena, started["QueryExecutionId"])
