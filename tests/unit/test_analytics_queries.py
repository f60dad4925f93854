"""The daily report's SQL (chalicelib/analytics/queries.py): the partition predicates, the job
tag, and every figure of every query as Athena computes it (in-process, on DuckDB over moto's
S3 through the Glue table) against the same figure computed here in plain Python from the
raw events: a few hundred random events over two arrival days, with redelivered copies,
late events, sessions, large transactions, velocity bursts and metric breaches."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import boto3
import pytest

from chalicelib.analytics import queries
from chalicelib.analytics.adapters import AthenaQueries
from chalicelib.telemetry import detection
from tests.unit.analytics_lake import (
    activity,
    metric,
    put_events,
    transaction,
    wait,
)

DAY_A, DAY_B, EMPTY = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
READS = {"daily": 2, "by_kind": 1, "transactions": 1, "alerts": 3, "top_users": 1, "metrics": 1}
METRICS = {"cpu_usage": 100, "memory_usage": 100, "disk_usage": 100, "response_time": 8000,
           "error_rate": 10, "request_count": 500}  # fmt: skip


# --- the SQL alone --------------------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 3, 7), date(2026, 12, 31), date(2027, 1, 1)])
def test_every_query_reads_only_the_partitions_of_its_day(day):
    for name, sql in queries.report_queries("db", "telemetry_events", day, 3).items():
        predicate = f"WHERE year = {day.year} AND month = {day.month} AND day = {day.day}\n"
        assert sql.count(predicate) == 1, name
        assert sql.count('FROM "db"."telemetry_events"') == 1, name
        assert sql.count("year =") == 1 and " hour" not in sql, name


def test_the_job_tag_round_trips_and_other_queries_have_none():
    for run in (1, 12):
        for name, sql in queries.report_queries("db", "t", date(2026, 11, 25), run).items():
            assert queries.job_tag(sql) == queries.JobTag("2026-11-25", run, name)
    for other in (
        "", "SELECT 1", "-- analytics-job: 2026-11-25 run 1 secrets\nSELECT 1",
        "-- analytics-job: 2026-11-25 run 1 daily", "SELECT 1\n-- analytics-job: 2026-11-25 "
        "run 1 daily\n", "-- analytics-job: 25-11-2026 run 1 daily\n", " -- analytics-job: "
        "2026-11-25 run 1 daily\n", "-- analytics-job: 2026-11-25 run one daily\n",
    ):  # fmt: skip
        assert queries.job_tag(other) is None, other


# --- the lake -------------------------------------------------------------------------------


def _at(day: date, hour: int = 0, minute: int = 0, ms: int = 0) -> datetime:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return moment + timedelta(hours=hour, minutes=minute, milliseconds=ms)


def _random_event(rng: random.Random, arrival: datetime, event_id: str) -> dict:
    roll = rng.random()
    if roll < 0.15:  # buffered by a client, up to 6 days old
        at = arrival - timedelta(days=rng.randint(1, 6), milliseconds=rng.randint(0, 86_399_999))
    elif roll < 0.2 and arrival.hour == 23:  # a client's clock a little ahead: tomorrow
        at = arrival + timedelta(minutes=59, milliseconds=rng.randint(0, 240_000))
    else:
        at = arrival + timedelta(milliseconds=rng.randint(0, 3_599_999))
    user = f"u{rng.randint(0, 11):02d}"
    kind = rng.random()
    if kind < 0.4:
        session = rng.choice([None, *(f"s{arrival:%d}-{n}" for n in range(8)), "s-shared"])
        return activity(event_id, at, user, session)
    if kind < 0.7:
        amount = round(rng.uniform(10_001, 50_000) if rng.random() < 0.15
                       else rng.uniform(0.01, 3000), 2)  # fmt: skip
        return transaction(event_id, at, user, amount, rng.choice(["EUR", "USD", "GBP"]),
                           rng.choice(["completed", "completed", "pending", "failed"]))  # fmt: skip
    name = rng.choice(sorted(METRICS))
    value = round(rng.uniform(0, METRICS[name]), 1)
    return metric(event_id, at, rng.choice(["api", "worker"]), name, value)


def _bursts(day: date) -> list[dict]:
    """7 transactions of one user in 8 minutes (the 6th and 7th are fraud by velocity) and 6
    of another in exactly 10 minutes (the window includes its start: the 6th is)."""
    seven = [transaction(f"{day}-ba{i}", _at(day, 10, ms=i * 80_000), "burst-a", 25.5)
             for i in range(7)]  # fmt: skip
    six = [transaction(f"{day}-bb{i}", _at(day, 15, minute=2 * i), "burst-b", 12.25, "USD")
           for i in range(6)]  # fmt: skip
    return seven + six


def write_lake(s3: Any, bucket: str, seed: int = 7) -> dict[date, dict[str, Any]]:
    """Both arrival days' objects; per day the raw events (copies included) and the sizes."""
    rng = random.Random(seed)
    lake: dict[date, dict[str, Any]] = {}
    carried: list[dict] = []
    for day in (DAY_A, DAY_B):
        objects: list[tuple[datetime, str, list[dict]]] = []
        for hour in (0, 3, 9, 14, 23):
            arrival = _at(day, hour)
            events = [_random_event(rng, arrival, f"{day}-{hour}-{n}") for n in range(45)]
            objects.append((arrival, f"shardId-0-{hour}", events))
        objects[2][2].extend(_bursts(day))
        everything = [e for _, _, events in objects for e in events]
        copies = rng.sample(everything, 12) + carried  # redelivered, and yesterday's again
        objects.append((_at(day, 23), "shardId-1-redelivered", copies))
        carried = rng.sample(everything, 3)
        sizes = [put_events(s3, bucket, at, name, events) for at, name, events in objects]
        lake[day] = {"events": [e for _, _, events in objects for e in events], "sizes": sizes}
    return lake


# --- the figures, from the raw events -------------------------------------------------------


def _unique(events: list[dict]) -> list[dict]:
    return list({e["event_id"]: e for e in events}.values())


def _when(event: dict) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _rank(values: list[float], p: str) -> float:
    """Nearest rank: the value at index ceil(p * n) - 1 of the sorted values."""
    return sorted(values)[math.ceil(Fraction(p) * len(values)) - 1]


def expected_report(raw: list[dict], day: date) -> dict[str, list[dict]]:
    events = _unique(raw)
    by_type = defaultdict(list)
    for event in events:
        by_type[event["event_type"]].append(event)
    activities, txns = by_type["user_activity"], by_type["transaction"]
    samples = by_type["system_metric"]

    sessions: dict[str, list[datetime]] = defaultdict(list)
    for event in activities:
        if event.get("session_id"):
            sessions[event["session_id"]].append(_when(event))
    lengths: dict[str, list[int]] = defaultdict(list)
    for times in sessions.values():
        span = (max(times) - min(times)) // timedelta(milliseconds=1)
        lengths[min(times).date().isoformat()].append(span)
    on_date = defaultdict(list)
    for event in events:
        on_date[event["timestamp"][:10]].append(event)
    daily = []
    for text in sorted(on_date, reverse=True):  # every event date among the day's arrivals
        ms, users = lengths.get(text, []), {e.get("user_id") for e in on_date[text]} - {None}
        daily.append({"event_date": text, "events": len(on_date[text]),
                      "unique_users": len(users), "sessions": len(ms),
                      "avg_session_seconds": sum(ms) / len(ms) / 1000 if ms else None})  # fmt: skip

    by_kind = [{"event_type": kind, "events": len(by_type[kind]),
                "users": len({e["user_id"] for e in by_type[kind] if "user_id" in e})}
               for kind in sorted(by_type)]  # fmt: skip

    per_currency = defaultdict(list)
    for event in txns:
        per_currency[event["currency"]].append(event)
    transactions = [{
        "currency": currency, "transactions": len(group),
        "total_amount": sum((Decimal(repr(e["amount"])) for e in group), Decimal(0)),
        "p50_amount": _rank([e["amount"] for e in group], "0.5"),
        "p95_amount": _rank([e["amount"] for e in group], "0.95"),
        "failed": sum(e.get("status") == "failed" for e in group),
    } for currency, group in per_currency.items()]  # fmt: skip
    transactions.sort(key=lambda r: (-r["transactions"], r["currency"]))

    velocity = 0
    for event in txns:  # detection.py: distinct transactions of the user in [t - 10 min, t]
        at, window = _when(event), detection.VELOCITY_WINDOW
        same = {o["transaction_id"] for o in txns if o["user_id"] == event["user_id"]
                and at - window <= _when(o) <= at}  # fmt: skip
        velocity += len(same) > detection.VELOCITY_MAX
    alerts = {
        ("fraud", "amount"): sum(e["amount"] > detection.FRAUD_AMOUNT for e in txns),
        ("fraud", "velocity"): velocity,
        ("anomaly", "threshold"): sum(
            bool(detection.metric_anomaly(e["metric_name"], e["value"], None))
            and detection.severity(e["metric_name"], e["value"]) in detection.ALERT_SEVERITIES
            for e in samples
        ),
    }

    counts = Counter(e["user_id"] for e in events if "user_id" in e)
    bought = Counter(e["user_id"] for e in txns)
    top = sorted(counts, key=lambda u: (-counts[u], u))[: queries.TOP_USERS]
    top_users = [{"user_id": u, "events": counts[u], "transactions": bought[u]} for u in top]

    series = defaultdict(list)
    for event in samples:
        series[(event["source"], event["metric_name"])].append(event["value"])
    metrics = [{"service": source, "metric_name": name, "samples": len(values),
                "p95_value": _rank(values, "0.95"), "max_value": max(values)}
               for (source, name), values in sorted(series.items())]  # fmt: skip
    return {"daily": daily, "by_kind": by_kind, "transactions": transactions,
            "alerts": alerts, "top_users": top_users, "metrics": metrics}  # fmt: skip


# --- Athena against Python ------------------------------------------------------------------


def run_report(aws: dict[str, str], day: date) -> dict[str, tuple[dict, list[dict]]]:
    """Every report query of `day`, started together in the workgroup: (execution, rows)."""
    athena = boto3.client("athena")
    engine = AthenaQueries(aws["AnalyticsWorkGroupName"], client=lambda: athena)
    sqls = queries.report_queries(aws["AnalyticsDatabaseName"], "telemetry_events", day, 1)
    started = {name: athena.start_query_execution(QueryString=sql, WorkGroup=aws[
        "AnalyticsWorkGroupName"])["QueryExecutionId"] for name, sql in sqls.items()}  # fmt: skip
    answers = {}
    for name, execution_id in started.items():
        execution = wait(athena, execution_id)
        assert execution["Status"]["State"] == "SUCCEEDED", (name, execution["Status"])
        answers[name] = (execution, engine.results(execution_id, 100_000).rows)
    return answers


@pytest.fixture
def lake(aws: dict[str, str]) -> dict[date, dict[str, Any]]:
    return write_lake(boto3.client("s3"), aws["DataLakeBucketName"])


@pytest.mark.parametrize("day", [DAY_A, DAY_B])
def test_every_figure_equals_the_one_computed_from_the_raw_events(aws, lake, day):
    expected = expected_report(lake[day]["events"], day)
    assert expected["alerts"][("fraud", "velocity")] >= 3  # the data has what it should
    assert all(expected["alerts"].values())
    assert len(expected["daily"]) >= 5 and any(r["sessions"] for r in expected["daily"])
    assert len(_unique(lake[day]["events"])) < len(lake[day]["events"])

    answers = {name: rows for name, (_, rows) in run_report(aws, day).items()}

    assert {(r["kind"], r["rule"]): r["events"] for r in answers["alerts"]} == expected["alerts"]
    assert len(answers["alerts"]) == 3
    for name in ("by_kind", "top_users", "transactions", "metrics"):
        assert answers[name] == expected[name], name
    assert [r | {"avg_session_seconds": None} for r in answers["daily"]] == [
        r | {"avg_session_seconds": None} for r in expected["daily"]]  # fmt: skip
    for got, want in zip(answers["daily"], expected["daily"], strict=True):
        want_avg = want["avg_session_seconds"]
        assert got["avg_session_seconds"] == (
            None if want_avg is None else pytest.approx(want_avg, rel=1e-12)
        )
    assert all(isinstance(r["total_amount"], Decimal) for r in answers["transactions"])


def test_bytes_scanned_are_the_days_objects_times_the_reads(aws, lake):
    sizes = sum(lake[DAY_A]["sizes"])  # DAY_B's objects, the next day's, are not read
    for name, (execution, _) in run_report(aws, DAY_A).items():
        assert execution["Statistics"]["DataScannedInBytes"] == sizes * READS[name], name


def test_an_empty_day_gives_an_empty_report(aws, lake):
    answers = run_report(aws, EMPTY)

    for name, (execution, rows) in answers.items():
        assert execution["Statistics"]["DataScannedInBytes"] == 0
        expected = [] if name != "alerts" else [0, 0, 0]
        assert (rows if name != "alerts" else [r["events"] for r in rows]) == expected, name


def test_velocity_counts_distinct_transactions_as_the_live_rule_does(aws):
    """detection.py counts a user's *distinct transactions* in [t - 10 min, t]: one
    transaction reported twice (pending, then completed: two event ids, one transaction id)
    must not make 5 transactions look like 6."""
    day = DAY_A
    events = [transaction(f"v{i}", _at(day, 8, minute=i), "payer", 40.0) for i in range(5)]
    events.append(transaction("v4-done", _at(day, 8, minute=5), "payer", 40.0,
                              transaction_id="tx-v4"))  # fmt: skip
    put_events(boto3.client("s3"), aws["DataLakeBucketName"], _at(day, 8), "shardId-0-1", events)
    assert expected_report(events, day)["alerts"][("fraud", "velocity")] == 0

    (_, rows) = run_report(aws, day)["alerts"]

    assert {(r["kind"], r["rule"]): r["events"] for r in rows}[("fraud", "velocity")] == 0
