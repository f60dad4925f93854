"""The processor's detection steps against their stores (`processor`, steps 3 and 7): the
metrics' anomalies against the stored baselines, the transactions' fraud against the user's
recent transactions, and the baselines updated with the values of the records before the
cut. The rules themselves are `detection`'s (pure)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chalicelib.core.observability import logger
from chalicelib.telemetry import detection, encoding
from chalicelib.telemetry.detection import Baseline, Sample
from chalicelib.telemetry.ports import Baselines, TransactionHistory

MAX_BASELINE_CONFLICTS = 5


def detect_metrics(
    baselines: Baselines,
    records: list[encoding.Record],
    alerts: dict[int, list[dict[str, Any]]],
    failed: set[int],
    skip: set[int],
) -> dict[str, tuple[Baseline | None, list[encoding.Record]]]:
    """The metric records' anomalies (into `alerts`), against the baselines stored before
    the batch; those baselines and their records, for `store_baselines`. Baselines not
    read fail (and `skip`: not written) every metric record."""
    if not records:
        return {}
    by_key: dict[str, list[encoding.Record]] = defaultdict(list)
    for record in records:
        event = record.event or {}
        by_key[f"{event['source']}#{event['metric_name']}"].append(record)
    try:
        stored = baselines.get_many(list(by_key))
    except Exception:
        logger.exception("baselines unreadable; metric records will be redelivered")
        for record in records:
            failed.add(record.index)
            skip.add(record.index)
        return {}
    for key, members in by_key.items():
        baseline = stored.get(key)
        for record in members:
            event = record.event or {}
            reasons = detection.metric_anomaly(event["metric_name"], event["value"], baseline)
            if reasons:
                alerts[record.index].append(detection.anomaly_alert(event, reasons))
    return {key: (stored.get(key), members) for key, members in by_key.items()}


def detect_fraud(
    history: TransactionHistory,
    records: list[encoding.Record],
    alerts: dict[int, list[dict[str, Any]]],
    failed: set[int],
    skip: set[int],
) -> None:
    """The transactions' fraud (into `alerts`): amount, and velocity against the user's
    stored transactions (one Query per user). A history not read fails (and `skip`) that
    user's records."""
    by_user: dict[str, list[encoding.Record]] = defaultdict(list)
    for record in records:
        by_user[(record.event or {})["user_id"]].append(record)
    for user_id, members in by_user.items():
        batch = [(r.event["timestamp"], r.event["transaction_id"]) for r in members]  # type: ignore[index]
        start, end = detection.velocity_window(at for at, _ in batch)
        try:
            stored = history.between(user_id, start, end)
        except Exception:
            logger.exception("transaction history unreadable; records will be redelivered")
            for record in members:
                failed.add(record.index)
                skip.add(record.index)
            continue
        counts = detection.velocity_flags(batch, stored)
        for record in members:
            event = record.event or {}
            reasons = detection.fraud_reasons(event["amount"], counts[event["transaction_id"]])
            if reasons:
                alerts[record.index].append(detection.fraud_alert(event, reasons))


def store_baselines(
    baselines: Baselines,
    pending: dict[str, tuple[Baseline | None, list[encoding.Record]]],
    cut: int,
    failed: set[int],
) -> None:
    """Fold the values of the metric records before the cut (and stored: not refused)
    into their baselines; a baseline not stored fails its records."""
    for key, (seen, everyone) in pending.items():
        members = [r for r in everyone if r.index < cut and r.event is not None]
        if not members:
            continue
        samples = [Sample(r.shard, r.sequence, float((r.event or {})["value"])) for r in members]
        current = seen
        try:
            for _ in range(MAX_BASELINE_CONFLICTS):
                new = detection.fold(current, samples)
                if new.samples == (current.samples if current else 0):
                    break  # every sample already folded in (a redelivery)
                newer = baselines.store(key, current, new)
                if newer is None:
                    break
                current = newer
            else:
                raise RuntimeError(f"baseline {key} kept changing")
        except Exception:
            logger.exception("baseline not updated; its records will be redelivered", key=key)
            failed.update(r.index for r in members)
