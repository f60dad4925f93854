"""The Kinesis handler's work: one batch of records in, `batchItemFailures` out.

Steps, for a batch (one shard, in sequence order):

1. decode and validate every record (the window of the timestamp check is the record's
   arrival time, so a replay is not refused for its age); a malformed one is set aside with
   its reason;
2. detection reads: the metrics' baselines (one BatchGetItem), each transacting user's recent
   transactions (one Query per user on `by-user`);
3. writes: items, 25 per BatchWriteItem per table (duplicates of a key within the batch
   written once), then one conditional UpdateItem per (source, metric) baseline;
4. the records whose writes or reads still failed after retries are failures. Lambda
   resumes the shard at the lowest reported sequence number, so every record from the first
   failure on ("the cut") comes back; the non-idempotent side effects below are done only for
   the records before the cut, and are done when those records come back;
5. quarantine (SQS) of the malformed records before the cut; one whose message is not sent
   becomes a failure (and moves the cut);
6. archive (one PutObject) of the valid events before the cut; if it fails the cut moves to
   the first record, so the whole batch comes back (every write is idempotent, the archive
   key is the same) and nothing is alerted now;
7. alerts (SNS PublishBatch) for the high and critical anomalies and fraud before the cut;
   an alert not published makes its record a failure. Alerts are at least once: the
   records after such a failure whose alerts did go out are alerted again on redelivery;
8. EMF metrics (counts), printed (no PutMetricData).

`batchItemFailures` lists every failed record; the lowest is the cut. Baseline updates are
idempotent per record (`detection.fold` skips sequence numbers already folded in), so a
redelivery does not count a value twice; detection then sees the updated baseline.
A record without an `event_id` (another producer than the ingest API) gets
`<shardId>:<sequenceNumber>` as its id, which is as stable as the record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from chalicelib.core.observability import logger
from chalicelib.telemetry import detection, encoding
from chalicelib.telemetry.adapters import quarantine_message
from chalicelib.telemetry.detection import Baseline, Sample
from chalicelib.telemetry.model import (
    SYSTEM_METRIC,
    TRANSACTION,
    USER_ACTIVITY,
    Invalid,
    validate_event,
)

TABLES = ("activities", "metrics", "transactions")
MAX_BASELINE_CONFLICTS = 5


class ItemWriter(Protocol):
    def put_all(self, table: str, items: Sequence[dict[str, Any]]) -> list[int]: ...


class Baselines(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Baseline]: ...
    def store(self, key: str, seen: Baseline | None, new: Baseline) -> Baseline | None: ...


class TransactionHistory(Protocol):
    def between(self, user_id: str, start: str, end: str) -> list[tuple[str, str]]: ...


class Alerts(Protocol):
    def send_alerts(self, alerts: Sequence[dict[str, Any]]) -> list[int]: ...


class Quarantine(Protocol):
    def send(self, messages: Sequence[dict[str, Any]]) -> list[int]: ...


class Archive(Protocol):
    def put(self, key: str, body: bytes) -> None: ...


def emit_counts(counts: dict[str, int]) -> None:
    """The counts as one EMF document (Powertools, printed to stdout: no AWS call)."""
    from aws_lambda_powertools.metrics import MetricUnit

    from chalicelib.core.observability import emit_metrics

    emit_metrics(
        [(name, MetricUnit.Count, value) for name, value in counts.items()],
        pipeline="telemetry",
    )


class TelemetryProcessor:
    def __init__(
        self,
        tables: dict[str, str],
        writer: ItemWriter,
        baselines: Baselines,
        history: TransactionHistory,
        alerts: Alerts,
        quarantine: Quarantine,
        archive: Archive,
        emit: Callable[[dict[str, int]], None] = emit_counts,
    ) -> None:
        self._tables = tables  # "activities" | "metrics" | "transactions" -> table name
        self._writer = writer
        self._baselines = baselines
        self._history = history
        self._alerts = alerts
        self._quarantine = quarantine
        self._archive = archive
        self._emit = emit

    def process(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._decode_all(records)
        failed: set[int] = set()
        valid = [r for r in batch if r.event is not None]
        by_type: dict[str, list[encoding.Record]] = defaultdict(list)
        for record in valid:
            by_type[record.event["event_type"]].append(record)  # type: ignore[index]

        alerts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        skip: set[int] = set()
        pending_baselines = self._detect_metrics(by_type[SYSTEM_METRIC], alerts, failed, skip)
        self._detect_fraud(by_type[TRANSACTION], alerts, failed, skip)
        self._write([r for r in valid if r.index not in skip], failed)
        self._store_baselines(pending_baselines, failed)

        cut = min(failed) if failed else len(batch)
        quarantined = [r for r in batch if r.reason is not None and r.index < cut]
        if quarantined:
            not_sent = self._quarantine.send(
                [quarantine_message(r, r.reason or "") for r in quarantined]
            )
            for position in not_sent:
                failed.add(quarantined[position].index)
            if not_sent:
                cut = min(failed)
        archived = self._archive_before(batch, cut)
        if not archived and cut > 0:
            failed.add(0)
            cut = 0
        to_alert = [
            (index, alert)
            for index in sorted(alerts)
            if index < cut
            for alert in alerts[index]
            if alert["severity"] in detection.ALERT_SEVERITIES
        ]
        if to_alert:
            for position in self._alerts.send_alerts([alert for _, alert in to_alert]):
                failed.add(to_alert[position][0])
        counts = {
            "TelemetryRecords": len(records),
            "TelemetryUserActivities": len(by_type[USER_ACTIVITY]),
            "TelemetrySystemMetrics": len(by_type[SYSTEM_METRIC]),
            "TelemetryTransactions": len(by_type[TRANSACTION]),
            "TelemetryQuarantined": len(quarantined),
            "TelemetryAnomalies": sum(
                1 for found in alerts.values() for a in found if a["type"] == "metric_anomaly"
            ),
            "TelemetryFraudAlerts": sum(
                1 for found in alerts.values() for a in found if a["type"] == "fraud_alert"
            ),
            "TelemetryAlertsPublished": len(to_alert),
            "TelemetryFailedRecords": len(failed),
        }
        self._emit(counts)
        if failed:
            logger.warning(
                "telemetry records to be redelivered", failed=len(failed), first=min(failed)
            )
        return {
            "batchItemFailures": [{"itemIdentifier": batch[i].sequence} for i in sorted(failed)]
        }

    # --- steps ------------------------------------------------------------------------------

    def _decode_all(self, records: list[dict[str, Any]]) -> list[encoding.Record]:
        batch: list[encoding.Record] = []
        for position, raw in enumerate(records):
            try:
                record = encoding.parse_record(len(batch), raw)
            except encoding.Malformed:
                # Without a sequence number it can be neither quarantined nor reported:
                # logged, and skipped (Lambda never delivers such a record).
                logger.error("not a Kinesis record; skipped", position=position)
                continue
            try:
                payload = encoding.decode_payload(record.data)
                now = datetime.fromtimestamp(record.arrival, UTC) if record.arrival else _now()
                stable_id = f"{record.shard}:{record.sequence}"
                record.event = validate_event(payload, now, new_id=lambda i=stable_id: i)
            except (encoding.Malformed, Invalid) as problem:
                record.reason = str(problem)
            batch.append(record)
        return batch

    def _detect_metrics(
        self,
        records: list[encoding.Record],
        alerts: dict[int, list[dict[str, Any]]],
        failed: set[int],
        skip: set[int],
    ) -> dict[str, tuple[Baseline | None, list[encoding.Record]]]:
        if not records:
            return {}
        by_key: dict[str, list[encoding.Record]] = defaultdict(list)
        for record in records:
            event = record.event or {}
            by_key[f"{event['source']}#{event['metric_name']}"].append(record)
        try:
            stored = self._baselines.get_many(list(by_key))
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

    def _detect_fraud(
        self,
        records: list[encoding.Record],
        alerts: dict[int, list[dict[str, Any]]],
        failed: set[int],
        skip: set[int],
    ) -> None:
        by_user: dict[str, list[encoding.Record]] = defaultdict(list)
        for record in records:
            by_user[(record.event or {})["user_id"]].append(record)
        for user_id, members in by_user.items():
            batch = [(r.event["timestamp"], r.event["transaction_id"]) for r in members]  # type: ignore[index]
            start, end = detection.velocity_window(at for at, _ in batch)
            try:
                stored = self._history.between(user_id, start, end)
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

    def _write(self, records: list[encoding.Record], failed: set[int]) -> None:
        per_table: dict[str, dict[str, tuple[dict[str, Any], list[int]]]] = {t: {} for t in TABLES}
        for record in records:
            table, item = encoding.table_and_item(record.event or {})
            key = encoding.item_key(item)
            found = per_table[table].get(key)
            # A key twice in a batch (a producer's retry, a re-sent transaction): the last
            # one is written, once; its outcome is every duplicate's.
            indexes = found[1] if found else []
            per_table[table][key] = (item, [*indexes, record.index])
        for table, entries in per_table.items():
            if not entries:
                continue
            rows = list(entries.values())
            for position in self._writer.put_all(self._tables[table], [i for i, _ in rows]):
                failed.update(rows[position][1])

    def _store_baselines(
        self,
        pending: dict[str, tuple[Baseline | None, list[encoding.Record]]],
        failed: set[int],
    ) -> None:
        for key, (seen, members) in pending.items():
            samples = [
                Sample(r.shard, r.sequence, float((r.event or {})["value"])) for r in members
            ]
            current = seen
            try:
                for _ in range(MAX_BASELINE_CONFLICTS):
                    new = detection.fold(current, samples)
                    if new.samples == (current.samples if current else 0):
                        break  # every sample already folded in (a redelivery)
                    newer = self._baselines.store(key, current, new)
                    if newer is None:
                        break
                    current = newer
                else:
                    raise RuntimeError(f"baseline {key} kept changing")
            except Exception:
                logger.exception("baseline not updated; its records will be redelivered", key=key)
                failed.update(r.index for r in members)

    def _archive_before(self, batch: list[encoding.Record], cut: int) -> bool:
        """Archive the valid events of the records before the cut; False if that failed."""
        head = batch[:cut]
        events = [r.event for r in head if r.event is not None]
        if not events:
            return True
        key = encoding.archive_key(
            head[0].shard, head[0].sequence, head[-1].sequence, head[0].arrival
        )
        try:
            self._archive.put(key, encoding.archive_body(events))
        except Exception:
            logger.exception("archive failed; the whole batch will be redelivered", key=key)
            return False
        return True


def _now() -> datetime:
    return datetime.now(UTC)
