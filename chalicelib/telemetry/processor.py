"""The Kinesis handler's work: one batch of records in, `batchItemFailures` out.

Steps, for a batch (one shard, in sequence order):

1. decode, validate and encode every record (the window of the timestamp check is the
   record's arrival time, so a replay is not refused for its age); the record must carry
   the sender the ingest verified (`submitted_by`, `submitted_as`), allowed to send that
   event (`model.submitter_problem`); a record that cannot be processed, for whatever
   reason (malformed, invalid, unstamped or not its sender's to send, or any exception of
   its own), is set aside with its reason, to be quarantined: one bad record never fails the
   batch;
2. whose: the lake identities of the batch's users (`pseudonyms`: cached, else one
   BatchGetItem, and a conditional PutItem per new user), before anything is written. The
   events of a user whose identity is a tombstone (erased) are dropped: neither stored,
   alerted, quarantined nor archived, only counted (`TelemetryErasedUserEventsDropped`,
   logged), as the images pipeline removes an upload of an erased owner. A token outlives
   its user's deletion by up to an hour and a record stays on the stream for a day: such a
   late event never brings the user's id, address or details back into the tables after the
   erasure's last pass. If the lookup fails, nothing is done and the whole batch comes back;
   then the producer duplicates (`duplicates`: an event put on the stream twice, as a new
   record) are dropped like those events (`TelemetryDuplicateEventsDropped`): a later record
   with an item seen earlier in the batch, or stored (one consistent BatchGetItem per
   table, keys and stamps only) with the same item under another record's stamp
   (`source_record`, which each item gets). The stored check not done (unreadable, out of
   time) fails its records;
3. detection reads: the metrics' baselines (one BatchGetItem), each transacting user's recent
   transactions (one Query per user on `by-user`: that owner's only);
4. writes: items, 25 per BatchWriteItem per table (a key twice within the batch, a re-sent
   transaction: the last written). An item DynamoDB refuses for good (a call refused for
   its items is split until the bad ones are alone) is set aside like a malformed record:
   quarantined, not retried, neither alerted nor folded into a baseline nor archived;
5. the records whose writes or reads still failed after retries are failures. Lambda
   resumes the shard at the lowest reported sequence number, so every record from the first
   failure on ("the cut") comes back; the side effects below are done only for the records
   before the cut, and are done when those records come back. Each step may move the cut
   earlier, so the steps that cannot be repeated harmlessly come last, once the cut is final;
6. alerts (SNS PublishBatch, `alerting`) for the high and critical anomalies and fraud
   before the cut, a user's fraud alerts within the user's hourly limit (the rest counted,
   not published); an alert not published makes its record a failure (and moves the cut).
   Alerts are at least once: the records after the cut whose alerts did go out are alerted
   again on redelivery;
7. baselines: one conditional UpdateItem per (source, metric), folding in the values of the
   records before the cut, whose alerts are out. A record is folded in only once its alerts
   went out, so a redelivered record is checked against the baseline without its own value
   (its spike is found again). A baseline not stored fails its records (moves the cut);
8. quarantine (SQS) of the set-aside records before the cut; a message not sent fails its
   record (moves the cut). Each message has `dedup_id` = `<shardId>:<sequenceNumber>` (in
   the body and as a message attribute): a record quarantined before a later step moved the
   cut back over it is sent again on redelivery, with the same id, for consumers to drop;
9. archive (one PutObject), last, of the valid events before the final cut, as the lake
   keeps them (`encoding.lake_fields`), each user's under the identity of step 2: the next
   invocation starts at that cut, and the producer duplicates are gone, so no event is
   archived twice. If it fails the whole
   batch comes back (every write and fold is idempotent; its alerts and quarantine messages
   are sent again; the archive key is the same);
10. EMF metrics (counts), printed (no PutMetricData).

Time budget: given `remaining_ms` (the Lambda context's `get_remaining_time_in_millis`), no
write is started (and the writer sleeps into no retry) once less than `DEADLINE_MARGIN_MS`
is left, capped at half the time left when the batch began, so a short invocation still makes
progress. The records not written by then are failures like any write failure: the cut moves
to the first of them and steps 6-9 are done for the records before it, in the time kept back,
instead of Lambda timing out and failing the whole batch without a report.

`batchItemFailures` lists every failed record; the lowest is the cut. Baseline updates are
idempotent per record (`detection.fold` skips sequence numbers already folded in), so a
redelivery does not count a value twice. A record without an `event_id` (another producer
than the ingest API) gets `<shardId>:<sequenceNumber>` as its id, which is as stable as the
record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from chalicelib.core import clock, correlation
from chalicelib.core.observability import logger
from chalicelib.telemetry import alerting, duplicates, encoding, screening
from chalicelib.telemetry.model import (
    SYSTEM_METRIC,
    TRANSACTION,
    USER_ACTIVITY,
    Invalid,
    validate_event,
)
from chalicelib.telemetry.ports import (
    AlertBudget,
    Alerts,
    Archive,
    Baselines,
    ItemWriter,
    Pseudonyms,
    Quarantine,
    TransactionHistory,
)
from chalicelib.telemetry.pseudonyms import LakeIdentity

TABLES = ("activities", "metrics", "transactions")
#: Time kept back for alerts, baselines, quarantine and the archive (the function has 60 s).
DEADLINE_MARGIN_MS = 10_000


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
        pseudonyms: Pseudonyms,
        alert_budget: AlertBudget | None = None,
        emit: Callable[[dict[str, int]], None] = emit_counts,
        stamps: duplicates.ItemStamps | None = None,
    ) -> None:
        """`alert_budget`: the fraud alerts' per-user limit (`alerting`); `stamps`: the
        stored items' stamps (`duplicates`). The app's factory always gives both (None: every
        alert is published; producer duplicates are found within a batch only)."""
        self._tables = tables  # "activities" | "metrics" | "transactions" -> table name
        self._writer = writer
        self._baselines = baselines
        self._history = history
        self._alerts = alerts
        self._quarantine = quarantine
        self._archive = archive
        self._pseudonyms = pseudonyms
        self._budget = alert_budget
        self._emit = emit
        self._stamps = stamps

    def process(
        self,
        records: list[dict[str, Any]],
        remaining_ms: Callable[[], int] | None = None,
    ) -> dict[str, Any]:
        """`remaining_ms`: the invocation's time left (None: no deadline)."""
        out_of_time = _deadline(remaining_ms)
        batch = self._decode_all(records)
        failed: set[int] = set()
        counts = {"TelemetryRecords": len(records)}

        # 2. whose: the lake identities, before anything is done; erased users' events go
        identities = self._identities(batch)
        if identities is None:
            failed.add(batch[0].index)
            return self._report(counts, batch, failed)
        counts["TelemetryErasedUserEventsDropped"] = _drop_erased(batch, identities)
        # 2b. producer duplicates go (an unreadable check fails its records: moves the cut)
        counts["TelemetryDuplicateEventsDropped"], unchecked = duplicates.drop_duplicates(
            [r for r in batch if r.item is not None], self._tables, self._stamps, out_of_time
        )
        failed |= unchecked
        valid = [r for r in batch if r.event is not None]
        by_type: dict[str, list[encoding.Record]] = defaultdict(list)
        for record in valid:
            by_type[record.event["event_type"]].append(record)  # type: ignore[index]

        # 3. reads and detection; 4. item writes
        alerts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        skip = set(unchecked)
        pending_baselines = screening.detect_metrics(
            self._baselines, by_type[SYSTEM_METRIC], alerts, failed, skip
        )
        screening.detect_fraud(self._history, by_type[TRANSACTION], alerts, failed, skip)
        rejected = self._write([r for r in valid if r.index not in skip], failed, out_of_time)
        for record in rejected:  # refused by DynamoDB for good: quarantined, not processed
            alerts.pop(record.index, None)

        # 6. alerts before the cut; one not published moves the cut
        cut = min(failed, default=len(batch))
        sent = alerting.send(alerts, batch, cut, self._alerts, self._budget)
        failed |= sent.failed
        cut = min(failed, default=len(batch))

        # 7. baselines: the records before the cut (their alerts are out)
        screening.store_baselines(self._baselines, pending_baselines, cut, failed)
        cut = min(failed, default=len(batch))

        # 8. quarantine before the cut; a message not sent moves the cut
        quarantined = [r for r in batch if r.reason is not None and r.index < cut]
        if quarantined:
            not_sent = self._quarantine.send(
                [encoding.quarantine_message(r, r.reason or "") for r in quarantined]
            )
            failed.update(quarantined[position].index for position in not_sent)
            cut = min(failed, default=len(batch))

        # 9. archive, last: the cut is final
        if not self._archive_before(batch, cut, identities):
            failed.add(batch[0].index)

        counts.update(
            TelemetryUserActivities=len(by_type[USER_ACTIVITY]),
            TelemetrySystemMetrics=len(by_type[SYSTEM_METRIC]),
            TelemetryTransactions=len(by_type[TRANSACTION]),
            TelemetryQuarantined=len(quarantined),
            TelemetryAnomalies=_found(alerts, "metric_anomaly"),
            TelemetryFraudAlerts=_found(alerts, alerting.FRAUD_ALERT),
            TelemetryFraudAlertsSuppressed=sent.suppressed,
            TelemetryAlertsPublished=sent.published,
        )
        return self._report(counts, batch, failed)

    def _report(
        self, counts: dict[str, int], batch: list[encoding.Record], failed: set[int]
    ) -> dict[str, Any]:
        """Emit the counts (and the failures); the handler's answer."""
        self._emit({**counts, "TelemetryFailedRecords": len(failed)})
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
            except Exception:
                # Without a sequence number it can be neither quarantined nor reported:
                # logged, and skipped (Lambda never delivers such a record).
                logger.error("not a Kinesis record; skipped", position=position)
                continue
            try:
                payload = encoding.decode_payload(record.data)
                record.correlation_id = correlation.of_payload(payload)
                now = clock.from_epoch(record.arrival) if record.arrival else clock.now()
                stable_id = f"{record.shard}:{record.sequence}"
                # stamped: the sender the ingest verified must be allowed to send it
                event = validate_event(payload, now, new_id=lambda i=stable_id: i, stamped=True)
                record.table, record.item = encoding.table_and_item(event)
                record.event = event
            except (encoding.Malformed, Invalid) as problem:
                record.reason = str(problem)
            except Exception as problem:  # anything else: this record's problem, not the batch's
                logger.exception("telemetry record not processable", sequence=record.sequence)
                record.reason = f"{type(problem).__name__}: {problem}"
            batch.append(record)
        # The batch's lines carry the ids of the requests that sent it (`correlation_ids`
        # when several: the invocation keeps its own id).
        correlation.note_batch(r.correlation_id for r in batch)
        return batch

    def _write(
        self,
        records: list[encoding.Record],
        failed: set[int],
        out_of_time: Callable[[], bool],
    ) -> list[encoding.Record]:
        """Write the records' items; the records DynamoDB refused for good (each then has its
        `reason` and no `event`); those not written (or not tried: out of time) are added to
        `failed`."""
        per_table: dict[str, dict[str, tuple[dict[str, Any], list[int]]]] = {t: {} for t in TABLES}
        by_index = {record.index: record for record in records}
        for record in records:
            item = record.item or {}
            key = encoding.item_key(item)
            found = per_table[record.table].get(key)
            # A key twice in a batch (a re-sent transaction; a producer's retry is gone by
            # now): the last one is written, once; its outcome is every duplicate's.
            indexes = found[1] if found else []
            per_table[record.table][key] = (item, [*indexes, record.index])
        rejected: list[encoding.Record] = []
        for table, entries in per_table.items():
            if not entries:
                continue
            rows = list(entries.values())
            if out_of_time():
                logger.warning("out of time; writes left to the redelivery", table=table)
                failed.update(index for _, indexes in rows for index in indexes)
                continue
            outcome = self._writer.put_all(
                self._tables[table], [i for i, _ in rows], should_stop=out_of_time
            )
            for position in outcome.failed:
                failed.update(rows[position][1])
            for position, error in outcome.rejected.items():
                for index in rows[position][1]:
                    record = by_index[index]
                    record.reason = f"refused by DynamoDB: {error}"
                    record.event = None
                    rejected.append(record)
        return rejected

    def _identities(self, batch: list[encoding.Record]) -> dict[str, LakeIdentity] | None:
        """The lake identities of the users whose events the batch holds (one lookup, mostly
        answered by the cache); None if they could not be had."""
        users = {r.event["user_id"] for r in batch if r.event and "user_id" in r.event}
        if not users:
            return {}
        try:
            return self._pseudonyms.identities(users)
        except Exception:
            logger.exception("lake identities unreadable; the whole batch will be redelivered")
            return None

    def _archive_before(
        self, batch: list[encoding.Record], cut: int, identities: dict[str, LakeIdentity]
    ) -> bool:
        """Archive the valid events of the records before the cut, each user's under the
        user's lake identity; False if that failed."""
        head = batch[:cut]
        events = [r.event for r in head if r.event is not None]
        if not events:
            return True
        key = encoding.archive_key(
            head[0].shard, head[0].sequence, head[-1].sequence, head[0].arrival
        )
        try:
            lake = [
                encoding.pseudonymised(
                    encoding.lake_fields(event), identities.get(event.get("user_id", ""))
                )
                for event in events
            ]
            self._archive.put(key, encoding.archive_body(lake))
        except Exception:
            logger.exception("archive failed; the whole batch will be redelivered", key=key)
            return False
        return True


def _drop_erased(batch: list[encoding.Record], identities: dict[str, LakeIdentity]) -> int:
    """Drop (set to nothing: not stored, alerted, quarantined or archived) the events of the
    erased users; how many."""
    dropped = 0
    for record in batch:
        identity = identities.get((record.event or {}).get("user_id", ""))
        if identity is not None and identity.erased:
            record.event = record.item = None
            dropped += 1
    if dropped:
        logger.info("events of erased users dropped", dropped=dropped)
    return dropped


def _found(alerts: dict[int, list[dict[str, Any]]], kind: str) -> int:
    return sum(1 for found in alerts.values() for alert in found if alert["type"] == kind)


def _deadline(remaining_ms: Callable[[], int] | None) -> Callable[[], bool]:
    """True once the time left is under the margin (never, without `remaining_ms`)."""
    if remaining_ms is None:
        return lambda: False
    margin = min(DEADLINE_MARGIN_MS, remaining_ms() // 2)
    return lambda: remaining_ms() < margin
