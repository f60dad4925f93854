"""Producer duplicates: an event put on the stream twice is stored, alerted, folded and
archived once; a redelivery of the same record is processed again."""

from __future__ import annotations

from typing import Any

import boto3

from chalicelib.telemetry.detection import Baseline
from chalicelib.telemetry.duplicates import SOURCE_RECORD, DynamoItemStamps
from chalicelib.telemetry.encoding import lake_fields
from tests.unit.test_telemetry_support import (
    TABLES,
    FakeArchive,
    activity,
    archived_lines,
    fake_processor,
    metric,
    record,
    stamped,
    transaction,
)

SPIKE = {**metric(0, value=3500, name="request_count"), "event_id": "spike"}


def spiky_processor(**overrides: Any) -> tuple[Any, dict[str, Any]]:
    processor, parts = fake_processor(**overrides)
    parts["baselines"].items["host-0#request_count"] = Baseline(mean=1000.0, samples=10, version=3)
    return processor, parts


def failures(result: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def test_the_same_event_in_two_batches_is_processed_once() -> None:
    processor, parts = spiky_processor()
    assert failures(processor.process([record(SPIKE, 0), record(activity(1), 1)])) == []
    assert failures(processor.process([record(SPIKE, 2), record(activity(1), 3)])) == []
    assert [a["event_id"] for a in parts["alerts"].published] == ["spike"]
    assert parts["baselines"].items["host-0#request_count"].samples == 11
    assert len(archived_lines(parts["archive"])) == 2
    assert len(parts["archive"].objects) == 1  # the second batch had nothing to archive
    assert parts["metrics"][1]["TelemetryDuplicateEventsDropped"] == 2
    assert parts["metrics"][0]["TelemetryDuplicateEventsDropped"] == 0
    (item,) = parts["writer"].tables[TABLES["metrics"]].values()
    assert item[SOURCE_RECORD]["S"].startswith(
        f"shardId-000000000000:{record(SPIKE, 0)['kinesis']['sequenceNumber']}@"
    )


def test_the_same_event_twice_in_one_batch_is_processed_once() -> None:
    processor, parts = spiky_processor()
    batch = [
        record(SPIKE, 0),
        record(transaction(1), 1),
        record(SPIKE, 2),
        record(transaction(1), 3),
    ]
    assert failures(processor.process(batch)) == []
    assert [a["event_id"] for a in parts["alerts"].published] == ["spike"]
    assert parts["baselines"].items["host-0#request_count"].samples == 11
    assert [line["event_type"] for line in archived_lines(parts["archive"])] == [
        "system_metric",
        "transaction",
    ]
    assert parts["metrics"][0]["TelemetryDuplicateEventsDropped"] == 2


def test_a_redelivered_record_is_archived_again() -> None:
    processor, parts = spiky_processor(archive=FakeArchive(fail=True))
    batch = [record(SPIKE, 0)]
    assert failures(processor.process(batch)) == [batch[0]["kinesis"]["sequenceNumber"]]
    parts["archive"].fail = False
    assert failures(processor.process(batch)) == []  # its item is there, under its own stamp
    assert len(archived_lines(parts["archive"])) == 1
    assert parts["metrics"][1]["TelemetryDuplicateEventsDropped"] == 0


def test_a_clients_second_post_of_the_same_event_is_a_duplicate() -> None:
    processor, parts = fake_processor()
    first = {**stamped(activity(1)), "correlation_id": "req-aaaaaaaaaaaa"}
    again = {**first, "correlation_id": "req-bbbbbbbbbbbb"}  # another request, other bytes
    processor.process([record(first, 0, stamp=False)])
    processor.process([record(again, 1, stamp=False)])
    assert len(archived_lines(parts["archive"])) == 1
    assert parts["metrics"][1]["TelemetryDuplicateEventsDropped"] == 1


def test_other_data_under_the_same_key_is_a_new_event() -> None:
    processor, parts = fake_processor()
    processor.process([record(transaction(1), 0)])
    processor.process([record(transaction(1, amount=99), 1)])  # corrected, same event id
    (item,) = parts["writer"].tables[TABLES["transactions"]].values()
    assert item["amount"] == {"N": "99"}
    assert len(archived_lines(parts["archive"])) == 2


def test_an_item_without_a_stamp_is_not_taken_for_the_original() -> None:
    processor, parts = fake_processor()
    processor.process([record(activity(1), 0)])
    for item in parts["writer"].tables[TABLES["activities"]].values():
        del item[SOURCE_RECORD]  # written before the stamps
    processor.process([record(activity(1), 1)])
    assert len(archived_lines(parts["archive"])) == 2


def test_an_unreadable_check_fails_its_records_and_moves_the_cut() -> None:
    processor, parts = spiky_processor()
    parts["stamps"].fail = True
    batch = [record(SPIKE, 0), record(activity(1), 1)]
    result = processor.process(batch)
    assert failures(result) == [r["kinesis"]["sequenceNumber"] for r in batch]
    assert parts["alerts"].published == [] and parts["archive"].objects == {}
    assert parts["writer"].tables == {}
    parts["stamps"].fail = False
    assert failures(processor.process(batch)) == []
    assert len(archived_lines(parts["archive"])) == 2


def test_the_stamp_never_reaches_the_lake() -> None:
    processor, parts = fake_processor()
    processor.process([record(activity(1), 0)])
    (line,) = archived_lines(parts["archive"])
    assert SOURCE_RECORD not in line
    assert SOURCE_RECORD not in lake_fields(activity(1))


# --- the DynamoDB adapter, on moto ------------------------------------------------------------


def test_dynamo_stamps_read_keys_and_stamps_only(aws: dict[str, str]) -> None:
    from chalicelib.telemetry.encoding import item_key

    dynamodb = boto3.client("dynamodb")
    table = TABLES["activities"]
    items = [
        {
            "pk": {"S": f"USER#u{n}"},
            "sk": {"S": f"t#{n}"},
            "event_id": {"S": f"e{n}"},
            "user_id": {"S": f"u{n}"},
            **({SOURCE_RECORD: {"S": f"shard:{n}@d"}} if n % 2 else {}),
        }
        for n in range(150)
    ]
    for item in items:
        dynamodb.put_item(TableName=table, Item=item)
    keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items]
    keys.append({"pk": {"S": "USER#nobody"}, "sk": {"S": "t#0"}})  # over 100: two calls
    found = DynamoItemStamps().stamps(table, keys)
    assert len(found) == 150
    assert found[item_key(items[1])] == "shard:1@d" and found[item_key(items[2])] == ""
    txn = {"pk": {"S": "TXN#u1#t1"}, "event_id": {"S": "x"}, SOURCE_RECORD: {"S": "s:1@d"}}
    dynamodb.put_item(TableName=TABLES["transactions"], Item=txn)
    assert DynamoItemStamps().stamps(TABLES["transactions"], [{"pk": txn["pk"]}]) == {
        "TXN#u1#t1": "s:1@d"
    }
    assert DynamoItemStamps().stamps(table, []) == {}


def test_the_stamp_is_not_in_a_users_export(aws: dict[str, str]) -> None:
    from chalicelib.telemetry.owner_data import DynamoTelemetryOwnerExport

    dynamodb = boto3.client("dynamodb")
    stamp = {SOURCE_RECORD: {"S": "shard:1@d"}}
    activity_item = {"pk": {"S": "USER#u1"}, "sk": {"S": "t#1"}, "event_id": {"S": "e1"}}
    dynamodb.put_item(TableName=TABLES["activities"], Item={**activity_item, **stamp})
    txn = {"pk": {"S": "TXN#u1#t1"}, "user_id": {"S": "u1"}, "occurred_at": {"S": "t"}}
    dynamodb.put_item(TableName=TABLES["transactions"], Item={**txn, **stamp})
    export = DynamoTelemetryOwnerExport(TABLES["activities"], TABLES["transactions"], "by-user")
    exported = export.export("u1")
    assert [a["event_id"] for a in exported["activities"]] == ["e1"]
    assert len(exported["transactions"]) == 1
    assert all(SOURCE_RECORD not in row for rows in exported.values() for row in rows)
