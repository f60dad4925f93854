"""The stream processor with fake adapters: routing, quarantine, alerts, archive, failures."""

from __future__ import annotations

import gzip
import json

from chalicelib.telemetry.detection import Baseline
from tests.unit.test_telemetry_support import (
    FakeAlerts,
    FakeArchive,
    FakeBaselines,
    FakePseudonyms,
    FakeQuarantine,
    FakeWriter,
    activity,
    archived_lines,
    fake_processor,
    lake_id,
    metric,
    mixed,
    record,
    records,
    transaction,
)


def sequences(result: dict) -> list[str]:
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def test_records_go_to_their_tables_and_the_batch_is_archived() -> None:
    processor, parts = fake_processor()
    batch = records([mixed(n) for n in range(30)])
    assert processor.process(batch) == {"batchItemFailures": []}
    tables = parts["writer"].tables
    assert [len(tables[t]) for t in sorted(tables)] == [10, 10, 10]
    ((key, body),) = parts["archive"].objects.items()
    first, last = batch[0]["kinesis"]["sequenceNumber"], batch[-1]["kinesis"]["sequenceNumber"]
    assert key.endswith(f"shardId-000000000000-{first}-{last}.jsonl.gz")
    lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    expected = [lake_id(parts["pseudonyms"], mixed(n)) for n in range(30)]
    assert [line["event_id"] for line in lines] == expected
    assert parts["alerts"].published == []
    assert parts["metrics"][0]["TelemetryRecords"] == 30


def test_malformed_records_are_quarantined_without_failing_the_batch() -> None:
    processor, parts = fake_processor()
    batch = [
        record(None, 0, raw="@@not base64@@"),
        record(None, 1, raw=b"\xff\xfe not json"),
        record(activity(2, ip_address="nope"), 2),
        record({"event_type": "click", "timestamp": "x"}, 3),
        record(activity(4), 4),
    ]
    assert processor.process(batch) == {"batchItemFailures": []}
    reasons = [m["reason"] for m in parts["quarantine"].messages]
    assert reasons[0] == "data is not valid base64"
    assert reasons[1] == "data is not UTF-8 JSON"
    assert "ip_address" in reasons[2] and "unknown event_type" in reasons[3]
    message = parts["quarantine"].messages[1]
    assert message["sequence_number"] == batch[1]["kinesis"]["sequenceNumber"]
    assert message["shard_id"] == "shardId-000000000000"
    assert message["data"] == batch[1]["kinesis"]["data"]
    assert len(parts["writer"].tables["serverless-app-dev-activities"]) == 1


def test_a_record_without_event_id_gets_a_stable_one() -> None:
    processor, parts = fake_processor()
    event = {k: v for k, v in activity(1).items() if k != "event_id"}
    processor.process([record(event, 7)])
    processor.process([record(event, 7)])
    (item,) = parts["writer"].tables["serverless-app-dev-activities"].values()
    assert item["event_id"]["S"].startswith("shardId-000000000000:")


def test_quarantine_failure_fails_that_record() -> None:
    processor, _ = fake_processor(quarantine=FakeQuarantine(fail=True))
    batch = [record(activity(0), 0), record(None, 1, raw="!!"), record(activity(2), 2)]
    assert sequences(processor.process(batch)) == [batch[1]["kinesis"]["sequenceNumber"]]


def test_threshold_and_fraud_alerts_only_high_and_critical() -> None:
    processor, parts = fake_processor()
    batch = records(
        [
            metric(1, value=97),  # critical
            metric(2, value=86, name="memory_usage"),  # medium: not alerted
            transaction(3, amount=20_000),  # fraud (high)
            metric(4, value=50),
        ]
    )
    assert processor.process(batch) == {"batchItemFailures": []}
    published = parts["alerts"].published
    assert [(a["type"], a["severity"]) for a in published] == [
        ("metric_anomaly", "critical"),
        ("fraud_alert", "high"),
    ]
    assert parts["metrics"][0]["TelemetryAnomalies"] == 2


def test_spike_uses_the_baseline_before_the_batch_and_updates_it() -> None:
    baselines = FakeBaselines()
    baselines.items["host-0#request_count"] = Baseline(mean=1000.0, samples=10, version=3)
    processor, parts = fake_processor(baselines=baselines)
    batch = records([{**metric(0, value=v, name="request_count"), "event_id": f"m{v}"}
                     for v in (3500, 900)])  # fmt: skip
    processor.process(batch)
    (alert,) = parts["alerts"].published
    assert alert["value"] == 3500 and alert["severity"] == "high"
    stored = baselines.items["host-0#request_count"]
    assert stored.samples == 12 and stored.version == 4
    processor.process(batch)  # redelivery: values not counted twice
    assert baselines.items["host-0#request_count"].samples == 12


def test_baseline_conflict_is_retried_on_the_fresh_value() -> None:
    baselines = FakeBaselines()
    processor, _ = fake_processor(baselines=baselines)
    original = baselines.get_many

    def racing_get(keys):  # another batch stores a baseline after ours is read
        found = original(keys)
        baselines.items["host-1#cpu_usage"] = Baseline(mean=50.0, samples=5, version=1)
        return found

    baselines.get_many = racing_get  # type: ignore[method-assign]
    assert processor.process(records([metric(1, value=20)])) == {"batchItemFailures": []}
    stored = baselines.items["host-1#cpu_usage"]
    assert (stored.samples, stored.version) == (6, 2)


def test_velocity_fraud_uses_stored_and_batch_transactions() -> None:
    processor, parts = fake_processor()
    parts["history"].stored["u1"] = [
        (f"2026-11-26T11:5{n}:00.000000Z", f"old-{n}") for n in range(4)
    ]
    batch = records([transaction(n, user="u1") for n in (2, 1)])
    processor.process(batch)
    reasons = [a["reasons"] for a in parts["alerts"].published]
    assert len(reasons) == 1 and "6 transactions" in reasons[0][0]
    assert parts["history"].queries == 1  # one Query per user, not per transaction


def test_write_failures_are_reported_and_side_effects_stop_at_the_first() -> None:
    writer = FakeWriter()
    writer.fail_keys = {"TXN#user-4#t-4"}
    processor, parts = fake_processor(writer=writer)
    events = [metric(0, value=99), activity(1), transaction(2, amount=50_000), None,
              transaction(4, amount=50_000), metric(5, value=99)]  # fmt: skip
    batch = [record(e, i) if e else record(None, i, raw="!!") for i, e in enumerate(events)]
    result = processor.process(batch)
    assert sequences(result) == [batch[4]["kinesis"]["sequenceNumber"]]
    # before the failure: alerted, archived, quarantined; after it: left for the redelivery
    assert [a["event_id"] for a in parts["alerts"].published] == ["met-0", "txn-event-2"]
    (body,) = parts["archive"].objects.values()
    assert len(gzip.decompress(body).splitlines()) == 3
    assert len(parts["quarantine"].messages) == 1


def test_archive_failure_redelivers_the_whole_batch_after_alerting() -> None:
    archive = FakeArchive(fail=True)
    processor, parts = fake_processor(archive=archive)
    batch = [*records([metric(0, value=99), activity(1)]), record(None, 2, raw="!!")]
    assert sequences(processor.process(batch)) == [batch[0]["kinesis"]["sequenceNumber"]]
    # archive is last: the alerts went out, the baseline took the value, nothing archived
    assert [a["event_id"] for a in parts["alerts"].published] == ["met-0"]
    assert parts["baselines"].items["host-0#cpu_usage"].samples == 1
    assert archive.objects == {}
    archive.fail = False
    assert processor.process(batch) == {"batchItemFailures": []}
    assert parts["baselines"].items["host-0#cpu_usage"].samples == 1  # not counted twice
    (body,) = archive.objects.values()
    assert len(gzip.decompress(body).splitlines()) == 2
    # sent again on redelivery, with the same identity for consumers to drop
    ids = [m["dedup_id"] for m in parts["quarantine"].messages]
    assert ids == [f"shardId-000000000000:{batch[2]['kinesis']['sequenceNumber']}"] * 2


def test_alert_failure_fails_the_alerting_record() -> None:
    processor, _ = fake_processor(alerts=FakeAlerts(fail={1}))
    batch = records([metric(0, value=99), activity(1), metric(2, value=99)])
    assert sequences(processor.process(batch)) == [batch[2]["kinesis"]["sequenceNumber"]]


def test_duplicate_keys_in_a_batch_are_written_once() -> None:
    processor, parts = fake_processor()
    batch = records([activity(1), activity(1), transaction(2), transaction(2, amount=99)])
    assert processor.process(batch) == {"batchItemFailures": []}
    assert parts["writer"].calls == 2  # one call per table, each key once
    (txn,) = parts["writer"].tables["serverless-app-dev-transactions"].values()
    assert txn["amount"] == {"N": "99"}


# --- redeliveries: alerts never lost, nothing archived or quarantined twice -------------------


def test_spike_alerted_when_the_archive_failed_and_the_batch_is_redelivered() -> None:
    archive, alerts = FakeArchive(fail=True), FakeAlerts()
    processor, parts = fake_processor(archive=archive, alerts=alerts)
    parts["baselines"].items["host-0#request_count"] = Baseline(mean=30.0, samples=20, version=1)
    batch = records([metric(0, value=100.0, name="request_count")])  # spike only: > 3 x 30
    assert processor.process(batch)["batchItemFailures"]  # the whole batch back
    archive.fail = False
    assert processor.process(batch) == {"batchItemFailures": []}
    assert [a["event_id"] for a in alerts.published] == ["met-0"]


def test_spike_after_the_cut_is_alerted_on_redelivery() -> None:
    writer, alerts = FakeWriter(), FakeAlerts()
    processor, parts = fake_processor(writer=writer, alerts=alerts)
    parts["baselines"].items["host-1#request_count"] = Baseline(mean=30.0, samples=20, version=1)
    batch = records([activity(0), metric(1, value=100.0, name="request_count")])
    writer.fail_keys = {"USER#user-0"}  # the first record's write fails (throttled for good)
    assert sequences(processor.process(batch)) == [batch[0]["kinesis"]["sequenceNumber"]]
    assert parts["baselines"].items["host-1#request_count"].samples == 20  # not folded yet
    writer.fail_keys = set()
    assert processor.process(batch) == {"batchItemFailures": []}
    assert [a["event_id"] for a in alerts.published] == ["met-1"]
    assert parts["baselines"].items["host-1#request_count"].samples == 21


def test_spike_whose_alert_failed_is_alerted_on_redelivery() -> None:
    alerts = FakeAlerts(fail={0})
    processor, parts = fake_processor(alerts=alerts)
    parts["baselines"].items["host-0#request_count"] = Baseline(mean=30.0, samples=20, version=1)
    batch = records([metric(0, value=100.0, name="request_count"), activity(1)])
    assert sequences(processor.process(batch)) == [batch[0]["kinesis"]["sequenceNumber"]]
    alerts.fail = set()
    assert processor.process(batch) == {"batchItemFailures": []}
    assert [a["event_id"] for a in alerts.published] == ["met-0"]


def test_alert_failure_neither_archives_nor_quarantines_twice() -> None:
    alerts = FakeAlerts(fail={0})
    processor, parts = fake_processor(alerts=alerts)
    batch = [record(metric(0, value=99.0), 0), record(None, 1, raw=b"garbage"),
             record(metric(2, value=1.0), 2)]  # fmt: skip
    assert sequences(processor.process(batch)) == [batch[0]["kinesis"]["sequenceNumber"]]
    alerts.fail = set()
    assert processor.process(batch) == {"batchItemFailures": []}  # Lambda resumes at record 0
    assert len(parts["quarantine"].messages) == 1
    lines = sum(gzip.decompress(b).count(b"\n") for b in parts["archive"].objects.values())
    assert lines == 2


def test_alert_failure_mid_batch_archives_each_event_once() -> None:
    alerts = FakeAlerts(fail={0})
    processor, parts = fake_processor(alerts=alerts)
    batch = records([activity(0), metric(1, value=99.0), activity(2), activity(3)])
    failures = sequences(processor.process(batch))
    assert failures == [batch[1]["kinesis"]["sequenceNumber"]]
    alerts.fail = set()
    assert processor.process(batch[1:]) == {"batchItemFailures": []}
    lines = [line["event_id"] for line in archived_lines(parts["archive"])]
    events = [activity(0), metric(1, value=99.0), activity(2), activity(3)]
    assert sorted(lines) == sorted(lake_id(parts["pseudonyms"], e) for e in events)


def test_quarantine_failure_leaves_the_records_after_it_unarchived() -> None:
    processor, parts = fake_processor(quarantine=FakeQuarantine(fail=True))
    batch = [record(activity(0), 0), record(None, 1, raw="!!"), record(activity(2), 2)]
    assert sequences(processor.process(batch)) == [batch[1]["kinesis"]["sequenceNumber"]]
    (line,) = archived_lines(parts["archive"])
    assert line["event_id"] == lake_id(parts["pseudonyms"], activity(0))


# --- records that can never be processed: quarantined, never blocking the shard ----------


def test_unhashable_event_type_is_quarantined() -> None:
    processor, parts = fake_processor()
    batch = [record({"event_type": [1]}, 0), record({"event_type": {}}, 1), record(activity(2), 2)]
    assert processor.process(batch) == {"batchItemFailures": []}
    assert [m["reason"] for m in parts["quarantine"].messages] == [
        "unknown event_type; expected one of user_activity, system_metric, transaction"
    ] * 2


def test_deeply_nested_json_is_quarantined() -> None:
    processor, parts = fake_processor()
    shallow = json.dumps({k: v for k, v in activity(1).items() if k != "details"})
    deep = shallow[:-1] + ', "details": ' + '{"a":' * 500 + "1" + "}" * 500 + "}"
    batch = [
        record(None, 0, raw=b"[" * 200_000 + b"]" * 200_000),  # json.loads: RecursionError
        record(None, 1, raw=deep.encode()),  # decodes, but nested too deeply to be an event
        record(activity(2), 2),
    ]
    assert processor.process(batch) == {"batchItemFailures": []}
    reasons = [m["reason"] for m in parts["quarantine"].messages]
    assert reasons[0] == "data is JSON nested too deeply"
    assert "nested" in reasons[1]
    assert len(parts["writer"].tables["serverless-app-dev-activities"]) == 1


def test_any_exception_of_a_record_quarantines_it_alone(monkeypatch) -> None:
    from chalicelib.telemetry import encoding

    real = encoding.table_and_item

    def broken(event):
        if event["event_id"] == "act-1":
            raise KeyError("boom")
        return real(event)

    monkeypatch.setattr(encoding, "table_and_item", broken)
    processor, parts = fake_processor()
    assert processor.process(records([activity(0), activity(1), activity(2)])) == {
        "batchItemFailures": []
    }
    assert [m["reason"] for m in parts["quarantine"].messages] == ["KeyError: 'boom'"]
    assert len(parts["writer"].tables["serverless-app-dev-activities"]) == 2


def test_items_refused_for_good_are_quarantined_not_failed() -> None:
    writer = FakeWriter()
    writer.reject_keys = {"bad#request_count": "ValidationException: too many digits"}
    processor, parts = fake_processor(writer=writer)
    parts["baselines"].items["bad#request_count"] = Baseline(mean=1.0, samples=20, version=1)
    poison = {**metric(0, value=99.0, name="request_count"), "source": "bad"}  # would alert
    batch = records([poison] + [metric(n, value=1.0) for n in range(1, 30)])
    assert processor.process(batch) == {"batchItemFailures": []}
    (message,) = parts["quarantine"].messages
    assert message["reason"] == "refused by DynamoDB: ValidationException: too many digits"
    assert message["sequence_number"] == batch[0]["kinesis"]["sequenceNumber"]
    assert len(parts["writer"].tables["serverless-app-dev-metrics"]) == 29
    assert parts["alerts"].published == []  # the refused record is not processed further
    assert parts["baselines"].items["bad#request_count"].samples == 20
    (body,) = parts["archive"].objects.values()
    assert len(gzip.decompress(body).splitlines()) == 29


# --- the time budget: stop before Lambda's timeout, and report ---------------------------


class SlowWriter(FakeWriter):
    """Each `put_all` (one per table) takes `cost_ms` of the invocation's time."""

    def __init__(self, clock: dict[str, int], cost_ms: int) -> None:
        super().__init__()
        self.clock = clock
        self.cost_ms = cost_ms
        self.tables_written: list[str] = []

    def put_all(self, table, items, should_stop=None):  # type: ignore[no-untyped-def]
        self.tables_written.append(table)
        self.clock["left"] -= self.cost_ms
        return super().put_all(table, items, should_stop)


def test_deadline_mid_batch_reports_the_unwritten_and_stops_side_effects_at_the_cut() -> None:
    clock = {"left": 60_000}
    writer = SlowWriter(clock, cost_ms=26_000)  # activities, metrics: then 8 s are left
    processor, parts = fake_processor(writer=writer)
    events = [activity(0), metric(1, value=99), transaction(2, amount=50_000),
              metric(3, value=99), None, activity(5), transaction(6)]  # fmt: skip
    batch = [record(e, i) if e else record(None, i, raw="!!") for i, e in enumerate(events)]
    result = processor.process(batch, remaining_ms=lambda: clock["left"])
    # the transactions were never written: reported, the first of them is the cut
    assert sequences(result) == [batch[i]["kinesis"]["sequenceNumber"] for i in (2, 6)]
    assert len(writer.tables_written) == 2
    assert "serverless-app-dev-transactions" not in writer.tables
    # before the cut only: met-1 alerted and folded in; met-3, the bad record and act-5 not
    assert [a["event_id"] for a in parts["alerts"].published] == ["met-1"]
    assert [b.samples for b in parts["baselines"].items.values()] == [1]
    assert parts["quarantine"].messages == []
    lines = archived_lines(parts["archive"])
    assert [line["event_id"] for line in lines] == [
        lake_id(parts["pseudonyms"], activity(0)),
        "met-1",
    ]


def test_deadline_before_the_writes_fails_every_valid_record() -> None:
    processor, parts = fake_processor()
    batch = records([activity(0), metric(1, value=99)])
    remaining = iter([60_000])  # at the start; 5 s by the writes
    result = processor.process(batch, remaining_ms=lambda: next(remaining, 5_000))
    assert len(sequences(result)) == 2
    assert parts["writer"].tables == {}
    assert parts["alerts"].published == [] and parts["archive"].objects == {}


def test_no_deadline_or_time_enough_behaves_as_before() -> None:
    events = [metric(0, value=99), activity(1), None, transaction(3, amount=50_000)]
    batch = [record(e, i) if e else record(None, i, raw="!!") for i, e in enumerate(events)]
    outcomes = []
    pseudonyms = FakePseudonyms()  # the same identities: the same archive bytes
    for remaining_ms in (None, lambda: 60_000, lambda: 3_000):  # 3 s: margin capped at half
        processor, parts = fake_processor(pseudonyms=pseudonyms)
        result = processor.process(batch, remaining_ms=remaining_ms)
        outcomes.append(
            (
                result,
                [a["event_id"] for a in parts["alerts"].published],
                len(parts["quarantine"].messages),
                list(parts["archive"].objects.values()),
            )
        )
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][0] == {"batchItemFailures": []}
    assert outcomes[0][1] == ["met-0", "txn-event-3"]
