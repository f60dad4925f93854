"""What the system sent and computed, for the console: mails SES sent, messages published to
the alert topics, and analytics reports with their Athena jobs.

Mails and published messages are what the emulator kept (SES's sent messages, each topic's
sent notifications: `local/outbox.py`); reports and jobs are the analytics jobs table
and Athena's own query executions, read through the AWS APIs.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

#: The topics whose messages are alerts: the telemetry's anomaly alerts, and the operations
#: topic the alarms notify (infra/resources.json, infra/monitoring.json).
ALERT_TOPICS = ("anomaly-alerts", "operations")
_TAGS = re.compile(r"<[^>]+>")


class Outbox:
    """What SES and SNS sent, from the emulator's `/_local/outbox` (local/outbox.py), fetched
    at most once per `max_age` seconds: the mail and alerts panels share one fetch."""

    def __init__(self, emulator_url: str, max_age: float = 1.5) -> None:
        self.url = f"{emulator_url}/_local/outbox?limit=200"
        self.max_age = max_age
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._at = float("-inf")

    def get(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    self._data = json.load(answer)
                self._at = time.monotonic()
            return self._data


@dataclass
class Mail:
    to: str
    sender: str
    subject: str
    text: str


def mails(outbox: dict[str, Any], limit: int = 100) -> list[Mail]:
    """The newest mails SES sent, newest first."""
    found = []
    for message in reversed(outbox.get("mails", [])[-limit:]):
        to = ", ".join(
            a for addresses in message.get("destinations", {}).values() for a in addresses
        )
        found.append(
            Mail(to, message.get("source", ""), message.get("subject", ""),
                 plain_text(message.get("body", "")))
        )  # fmt: skip
    return found


def plain_text(body: Any) -> str:
    """A mail body as a reader sees it: an HTML body without its tags."""
    text = body if isinstance(body, str) else json.dumps(body)
    return " ".join(html.unescape(_TAGS.sub(" ", text)).split())


@dataclass
class Published:
    topic: str
    message_id: str
    message: Any
    subject: str | None


def published(
    outbox: dict[str, Any], prefix: str, topics: tuple[str, ...] = ALERT_TOPICS, limit: int = 100
) -> list[Published]:
    """Messages published to `topics` (names without the stage's prefix), newest first
    within each topic."""
    found = []
    for name, sent in outbox.get("published", {}).items():
        short = str(name).removeprefix(prefix)
        if short not in topics:
            continue
        for item in reversed(sent[-limit:]):
            try:
                body = json.loads(item.get("message"))
            except (TypeError, ValueError):
                body = item.get("message")
            found.append(Published(short, str(item.get("message_id")), body, item.get("subject")))
    return found[:limit]


def reports(target: Any, jobs_table: str) -> list[dict[str, Any]]:
    """Each analytics report (newest day first) with its runs' jobs: the jobs table as the
    analytics service writes it (`REPORT#<day>`, sk `REPORT`, and `RUN#<n>#<query>`)."""
    from chalicelib.core.dynamo import from_item

    dynamodb = target.client("dynamodb")
    by_day: dict[str, dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=jobs_table):
        for raw in page.get("Items", []):
            item = from_item(raw)
            day = str(item.get("pk", "")).removeprefix("REPORT#")
            entry = by_day.setdefault(day, {"day": day, "report": {}, "jobs": []})
            if item.get("sk") == "REPORT":
                entry["report"] = item
            else:
                entry["jobs"].append(item)
    for entry in by_day.values():
        entry["jobs"].sort(key=lambda job: (str(job.get("sk")), str(job.get("created_at"))))
    return sorted(by_day.values(), key=lambda e: e["day"], reverse=True)


def athena_queries(target: Any, work_group: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest Athena query executions of `work_group`: state, scanned bytes, the SQL's
    first line."""
    athena = target.client("athena")
    ids = athena.list_query_executions(WorkGroup=work_group, MaxResults=50).get(
        "QueryExecutionIds", []
    )
    if not ids:
        return []
    found = []
    for item in athena.batch_get_query_execution(QueryExecutionIds=ids[:50]).get(
        "QueryExecutions", []
    ):
        status = item.get("Status", {})
        found.append(
            {
                "id": item.get("QueryExecutionId"),
                "state": status.get("State"),
                "reason": status.get("StateChangeReason", ""),
                "submitted": status.get("SubmissionDateTime"),
                "completed": status.get("CompletionDateTime"),
                "scanned": item.get("Statistics", {}).get("DataScannedInBytes"),
                "sql": " ".join(str(item.get("Query", "")).split())[:160],
            }
        )
    found.sort(key=lambda q: str(q["submitted"] or ""), reverse=True)
    return found[:limit]
