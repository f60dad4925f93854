"""Anomaly and fraud rules (pure, no AWS).

Metrics:

- threshold: `cpu_usage` > 90, `memory_usage` > 85, `disk_usage` > 90, `response_time` >
  5000 (ms), `error_rate` > 5 (%);
- spike: any metric whose value is over 3x its rolling baseline for the same (source,
  metric), once that baseline has at least `MIN_SAMPLES` samples and a mean above 0. The
  baseline is the one stored before the batch (values of the batch do not hide each other).
- severity, by the raw value: `cpu_usage`, `memory_usage` or `error_rate` above 95 is
  critical; otherwise any value above 90 is high, above 80 medium, else low. The rule looks
  at the raw value whatever the metric, so a `response_time` of 6000 ms or a `request_count`
  spike to 5000 is "high", a `memory_usage` of 86 (over its threshold) "medium", and a
  `request_count` spike from 10 to 40 "low": simple and predictable for whoever reads an
  alert, at the price of those oddities. Only high and critical anomalies are alerted.

Baseline: a mean and a sample count per (source, metric). The mean is the plain average of
the first 1/ALPHA samples, then an exponentially weighted mean (weight ALPHA for each new
value). On a series of zeros the mean decays toward 0 without reaching it: below `TINY_MEAN`
it is 0 (after ~2,800 zeros it would fall under DynamoDB's smallest number, 1e-130, and every
write of the baseline would fail). `applied` holds, per shard, the sequence number of the
last record folded in, so a redelivered record is not counted twice (the fold is idempotent).

Fraud (alert severity high): an amount over 10,000; or velocity: the transaction is the 6th
or later of its user in 10 minutes, i.e. more than 5 distinct transactions (this one
included) have `occurred_at` in [t - 10 min, t]. Transactions are told apart by id, so a
redelivered transaction is counted once. Every such transaction gets its alert here; how many
of a user's are published per hour (the transactions are the user's own claims) is
`alerting`'s.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from chalicelib.core import clock

THRESHOLDS: dict[str, float] = {
    "cpu_usage": 90.0,
    "memory_usage": 85.0,
    "disk_usage": 90.0,
    "response_time": 5000.0,
    "error_rate": 5.0,
}
CRITICAL_METRICS = frozenset({"cpu_usage", "memory_usage", "error_rate"})
SPIKE_FACTOR = 3.0
MIN_SAMPLES = 5
ALPHA = 0.1
TINY_MEAN = 1e-100  # a mean closer to 0 is 0 (DynamoDB stores nothing under 1e-130)
ALERT_SEVERITIES = frozenset({"high", "critical"})

FRAUD_AMOUNT = 10_000
VELOCITY_WINDOW = timedelta(minutes=10)
VELOCITY_MAX = 5  # more than this many in the window is fraud


@dataclass(frozen=True)
class Baseline:
    mean: float = 0.0
    samples: int = 0
    version: int = 0
    applied: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    shard: str
    sequence: str
    value: float


def severity(metric_name: str, value: float) -> str:
    """The severity rule (see the module docstring)."""
    if metric_name in CRITICAL_METRICS and value > 95:
        return "critical"
    if value > 90:
        return "high"
    if value > 80:
        return "medium"
    return "low"


def metric_anomaly(metric_name: str, value: float, baseline: Baseline | None) -> list[str]:
    """The reasons `value` is anomalous (empty when it is not)."""
    reasons = []
    threshold = THRESHOLDS.get(metric_name)
    if threshold is not None and value > threshold:
        reasons.append(f"{metric_name} {value} over threshold {threshold:g}")
    if (
        baseline is not None
        and baseline.samples >= MIN_SAMPLES
        and baseline.mean > 0
        and value > SPIKE_FACTOR * baseline.mean
    ):
        reasons.append(f"{metric_name} {value} over {SPIKE_FACTOR:g}x baseline {baseline.mean:.6g}")
    return reasons


def _after(sequence: str, applied: str | None) -> bool:
    return applied is None or int(sequence) > int(applied)


def fold(baseline: Baseline | None, samples: Iterable[Sample]) -> Baseline:
    """`baseline` with the samples not yet applied folded in, in order (version + 1)."""
    base = baseline or Baseline()
    mean, count, applied = base.mean, base.samples, dict(base.applied)
    for sample in samples:
        if not _after(sample.sequence, applied.get(sample.shard)):
            continue
        count += 1
        weight = max(1.0 / count, ALPHA)
        mean += weight * (float(sample.value) - mean)
        if abs(mean) < TINY_MEAN:
            mean = 0.0
        applied[sample.shard] = sample.sequence
    return Baseline(mean=mean, samples=count, version=base.version + 1, applied=applied)


def velocity_flags(
    batch: Sequence[tuple[str, str]], stored: Iterable[tuple[str, str]]
) -> dict[str, int]:
    """For one user: the number of distinct transactions in the 10 minutes up to each of the
    batch's transactions (inclusive). `batch` and `stored` are (occurred_at, transaction_id)
    with occurred_at as `clock.timestamp` strings; `stored` is what the table already had."""
    times: dict[str, str] = dict((tid, at) for at, tid in stored)
    times.update((tid, at) for at, tid in batch)
    ordered = sorted(times.values())
    counts = {}
    for at, tid in batch:
        start = clock.timestamp(clock.parse(at) - VELOCITY_WINDOW)
        counts[tid] = bisect.bisect_right(ordered, at) - bisect.bisect_left(ordered, start)
    return counts


def velocity_window(occurred: Iterable[str]) -> tuple[str, str]:
    """The range of `occurred_at` to read for a user's batch transactions."""
    ordered = sorted(occurred)
    start = clock.parse(ordered[0]) - VELOCITY_WINDOW
    return clock.timestamp(start), ordered[-1]


def fraud_reasons(amount: float, velocity_count: int) -> list[str]:
    reasons = []
    if amount > FRAUD_AMOUNT:
        reasons.append(f"amount {amount} over {FRAUD_AMOUNT}")
    if velocity_count > VELOCITY_MAX:
        reasons.append(
            f"{velocity_count} transactions by the user within 10 minutes "
            f"(more than {VELOCITY_MAX})"
        )
    return reasons


def anomaly_alert(event: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    value = event["value"]
    return {
        "type": "metric_anomaly",
        "event_id": event["event_id"],
        "source": event["source"],
        "metric_name": event["metric_name"],
        "value": value,
        "timestamp": event["timestamp"],
        "severity": severity(event["metric_name"], value),
        "reasons": reasons,
    }


def fraud_alert(event: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    return {
        "type": "fraud_alert",
        "event_id": event["event_id"],
        "transaction_id": event["transaction_id"],
        "user_id": event["user_id"],
        "amount": event["amount"],
        "currency": event["currency"],
        "timestamp": event["timestamp"],
        "severity": "high",
        "reasons": reasons,
    }
