"""The daily report's queries: Athena SQL over the telemetry archive (pure, no AWS).

The archive is partitioned by the hour each batch reached the lake (UTC), so a day's report
covers the events that *arrived* that day: every query reads that day's partitions only
(`year`, `month`, `day` are constants), and a report never changes once the day is over.
Events stamped on an earlier day (a client that buffered them; up to 7 days, the API's
limit) are counted on the day they arrive, and `daily` shows them under their own date.

Every query first keeps one copy of each `event_id` (`events`): the archive is written at
least once, so a redelivered batch may sit in two objects.

A query starts with a comment naming its job (`-- analytics-job: <date> run <n> <name>`):
Athena keeps the text, so the completion handler finds the job from the query execution
alone, even if the event comes before the job's record knows the execution's id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from chalicelib.telemetry import detection

#: The report's parts, in the order a report lists them.
QUERY_NAMES = ("daily", "by_kind", "transactions", "alerts", "top_users", "metrics")
TOP_USERS = 10

_JOB_TAG = re.compile(r"^-- analytics-job: (\d{4}-\d{2}-\d{2}) run (\d+) ([a-z_]+)\n")


@dataclass(frozen=True)
class JobTag:
    day: str
    run: int
    name: str


def job_tag(query: str) -> JobTag | None:
    """The job a query belongs to, from its first line; None for any other query."""
    match = _JOB_TAG.match(query or "")
    if not match or match[3] not in QUERY_NAMES:
        return None
    return JobTag(match[1], int(match[2]), match[3])


def report_queries(database: str, table: str, day: date, run: int) -> dict[str, str]:
    """Each part of the report for `day` (run `run`) as Athena SQL, by name."""
    source = f'"{database}"."{table}"'
    events = (
        "WITH events AS (\n"
        "  SELECT * FROM (\n"
        '    SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY "timestamp") AS copy\n'
        f"    FROM {source}\n"
        f"    WHERE year = {day.year} AND month = {day.month} AND day = {day.day}\n"
        "  ) WHERE copy = 1\n"
        ")\n"
    )
    bodies = {
        "daily": _daily(),
        "by_kind": (
            "SELECT event_type, count(*) AS events, count(DISTINCT user_id) AS users\n"
            "FROM events GROUP BY event_type ORDER BY event_type"
        ),
        "transactions": (
            "SELECT currency, count(*) AS transactions,\n"
            "  sum(CAST(amount AS decimal(38, 6))) AS total_amount,\n"
            "  approx_percentile(amount, 0.5) AS p50_amount,\n"
            "  approx_percentile(amount, 0.95) AS p95_amount,\n"
            "  count_if(status = 'failed') AS failed\n"
            "FROM events WHERE event_type = 'transaction'\n"
            "GROUP BY currency ORDER BY transactions DESC, currency"
        ),
        "alerts": _alerts(),
        "top_users": (
            "SELECT user_id, count(*) AS events,\n"
            "  count_if(event_type = 'transaction') AS transactions\n"
            "FROM events WHERE user_id IS NOT NULL\n"
            f"GROUP BY user_id ORDER BY events DESC, user_id LIMIT {TOP_USERS}"
        ),
        "metrics": (
            "SELECT source AS service, metric_name, count(*) AS samples,\n"
            "  approx_percentile(value, 0.95) AS p95_value, max(value) AS max_value\n"
            "FROM events WHERE event_type = 'system_metric'\n"
            "GROUP BY source, metric_name ORDER BY source, metric_name"
        ),
    }
    return {
        name: f"-- analytics-job: {day.isoformat()} run {run} {name}\n{events}{bodies[name]}"
        for name in QUERY_NAMES
    }


def _daily() -> str:
    """The seeds' query: per event date, the events, the distinct users and the average
    session (first to last event of a `session_id`, in seconds). The day's arrivals are
    stamped within the API's limits (7 days back, 5 minutes ahead), so this is the last 7
    days (and the first minutes of the next)."""
    return (
        ", sessions AS (\n"
        "  SELECT session_id, min(at) AS started, max(at) AS ended FROM (\n"
        '    SELECT session_id, from_iso8601_timestamp("timestamp") AS at FROM events\n'
        "    WHERE event_type = 'user_activity' AND session_id IS NOT NULL\n"
        "  ) GROUP BY session_id\n"
        "), per_date AS (\n"
        '  SELECT CAST(substr("timestamp", 1, 10) AS date) AS event_date, count(*) AS events,\n'
        "    count(DISTINCT user_id) AS unique_users\n"
        "  FROM events GROUP BY 1\n"
        "), session_dates AS (\n"
        "  SELECT CAST(started AS date) AS event_date, count(*) AS sessions,\n"
        "    avg(date_diff('millisecond', started, ended)) / 1000.0 AS avg_session_seconds\n"
        "  FROM sessions GROUP BY 1\n"
        ")\n"
        "SELECT p.event_date, p.events, p.unique_users, coalesce(s.sessions, 0) AS sessions,\n"
        "  s.avg_session_seconds\n"
        "FROM per_date p LEFT JOIN session_dates s ON s.event_date = p.event_date\n"
        "ORDER BY p.event_date DESC"
    )


def _alerts() -> str:
    """The events the live alert rules flag (telemetry/detection.py): a threshold breach
    severe enough to alert (high or critical), a transaction over the fraud amount, the 6th
    or later transaction of a user within 10 minutes. Spikes are judged against the live
    baselines, which the lake does not hold, so they are not counted here."""
    breaches = " OR ".join(
        f"(metric_name = '{name}' AND value > {limit})"
        for name, limit in sorted(detection.THRESHOLDS.items())
    )
    window = int(detection.VELOCITY_WINDOW.total_seconds() // 60)
    return (
        ", transactions AS (\n"
        "  SELECT user_id, transaction_id, amount,\n"
        '    from_iso8601_timestamp("timestamp") AS at\n'
        "  FROM events WHERE event_type = 'transaction'\n"
        # the live rule tells transactions apart by id: one row per transaction
        "), distinct_transactions AS (\n"
        "  SELECT user_id, min(at) AS at FROM transactions GROUP BY user_id, transaction_id\n"
        "), velocity AS (\n"
        "  SELECT count(*) OVER (PARTITION BY user_id ORDER BY at\n"
        f"    RANGE BETWEEN INTERVAL '{window}' MINUTE PRECEDING AND CURRENT ROW) AS recent\n"
        "  FROM distinct_transactions\n"
        ")\n"
        "SELECT 'fraud' AS kind, 'amount' AS rule, count(*) AS events\n"
        f"FROM transactions WHERE amount > {detection.FRAUD_AMOUNT}\n"
        "UNION ALL\n"
        "SELECT 'fraud', 'velocity', count(*)\n"
        f"FROM velocity WHERE recent > {detection.VELOCITY_MAX}\n"
        "UNION ALL\n"
        "SELECT 'anomaly', 'threshold', count(*)\n"
        "FROM events WHERE event_type = 'system_metric'\n"
        f"  AND ({breaches}) AND value > 90\n"
        "ORDER BY kind DESC, rule"
    )
