"""Telemetry against in-process moto: idempotency, velocity Query, quarantine, the fault test,
and the ingest's retries of records PutRecords reports failed.

The resources are created here (the names of the stage's contract), not by the `aws`
fixture: infra/resources.json may not hold them yet.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.core import clock
from chalicelib.core.backoff import Backoff
from chalicelib.core.quotas import counter_subject
from chalicelib.telemetry import encoding
from chalicelib.telemetry.delivery import KinesisStream, S3Archive, SnsAlerts, SqsQuarantine
from chalicelib.telemetry.model import validate_event
from chalicelib.telemetry.pseudonyms import (
    CachedPseudonyms,
    DynamoPseudonyms,
    LakeIdentity,
    user_digest,
)
from chalicelib.telemetry.tables import (
    DynamoAlertBudget,
    DynamoBaselines,
    DynamoItemWriter,
    DynamoTransactionHistory,
)
from tests.unit.test_telemetry_support import (
    ADMIN,
    BASELINES_TABLE,
    BUCKET,
    NOW,
    QUEUE,
    STREAM,
    TABLES,
    TOPIC,
    activity,
    make_ingest,
    metric,
    mixed,
    record,
    records,
    transaction,
    user,
)

QUOTAS_TABLE = "serverless-app-dev-quotas"
PSEUDONYMS_TABLE = "serverless-app-dev-telemetry-pseudonyms"

ENV = {
    "TELEMETRY_STREAM_NAME": STREAM,
    "ACTIVITIES_TABLE_NAME": TABLES["activities"],
    "METRICS_TABLE_NAME": TABLES["metrics"],
    "BASELINES_TABLE_NAME": BASELINES_TABLE,
    "TRANSACTIONS_TABLE_NAME": TABLES["transactions"],
    "ANOMALY_ALERTS_TOPIC_NAME": TOPIC,
    "DATA_LAKE_BUCKET_NAME": BUCKET,
    "TELEMETRY_QUARANTINE_QUEUE_NAME": QUEUE,
    "QUOTAS_TABLE_NAME": QUOTAS_TABLE,
    "TELEMETRY_PSEUDONYMS_TABLE_NAME": PSEUDONYMS_TABLE,
}


def _table(client: Any, name: str, sk: bool = True, **extra: Any) -> None:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sk:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "S"})
    attributes += extra.pop("more_attributes", [])
    client.create_table(
        TableName=name,
        KeySchema=keys,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


@pytest.fixture
def telemetry(stage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the telemetry resources; yields a namespace of handy clients and names."""
    from chalicelib.core import aws
    from chalicelib.telemetry import telemetry_ingest, telemetry_processor

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        _table(dynamodb, TABLES["activities"])
        _table(dynamodb, TABLES["metrics"])
        _table(dynamodb, BASELINES_TABLE, sk=False)
        _table(
            dynamodb,
            TABLES["transactions"],
            sk=False,
            more_attributes=[
                {"AttributeName": "user_id", "AttributeType": "S"},
                {"AttributeName": "occurred_at", "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-user",
                    "KeySchema": [
                        {"AttributeName": "user_id", "KeyType": "HASH"},
                        {"AttributeName": "occurred_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
        )
        for name, key in ((QUOTAS_TABLE, "id"), (PSEUDONYMS_TABLE, "user_digest")):
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        boto3.client("kinesis").create_stream(StreamName=STREAM, ShardCount=1)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs")
        quarantine_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        alerts_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
        alerts_arn = sqs.get_queue_attributes(QueueUrl=alerts_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        topic_arn = boto3.client("sns").create_topic(Name=TOPIC)["TopicArn"]
        boto3.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=alerts_arn)
        telemetry_ingest.cache_clear()
        telemetry_processor.cache_clear()
        yield type(
            "Telemetry",
            (),
            {
                "dynamodb": dynamodb,
                "sqs": sqs,
                "quarantine_url": quarantine_url,
                "alerts_url": alerts_url,
            },
        )
        telemetry_ingest.cache_clear()
        telemetry_processor.cache_clear()
    aws.reset_clients()


def scan_all(client: Any, table: str, projection: str = "event_id") -> list[dict[str, Any]]:
    items, request = [], {"TableName": table, "ProjectionExpression": projection}
    while True:
        page = client.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return messages
        messages += [json.loads(m["Body"]) for m in got]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def test_redelivered_records_leave_one_item_each(telemetry: Any) -> None:
    from chalicelib.telemetry import telemetry_processor

    batch = records([mixed(n) for n in range(60)])
    assert telemetry_processor().process(batch) == {"batchItemFailures": []}
    assert telemetry_processor().process(batch) == {"batchItemFailures": []}
    counts = {kind: len(scan_all(telemetry.dynamodb, name)) for kind, name in TABLES.items()}
    assert counts == {"activities": 20, "metrics": 20, "transactions": 20}
    baselines = scan_all(telemetry.dynamodb, BASELINES_TABLE, "samples")
    assert sum(int(b["samples"]["N"]) for b in baselines) == 20  # not counted twice
    objects = boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]
    assert len(objects) == 1 and objects[0]["Key"].startswith("telemetry/year=2026/month=11/")
    activity_item = scan_all(telemetry.dynamodb, TABLES["activities"], "expires_at")[0]
    assert int(activity_item["expires_at"]["N"]) > NOW.timestamp() + 89 * 86400


def test_malformed_records_go_to_the_quarantine_queue(telemetry: Any) -> None:
    from chalicelib.telemetry import telemetry_processor

    batch = [record(None, 0, raw="%%%"), record(activity(1), 1), record({"x": 1}, 2)]
    assert telemetry_processor().process(batch) == {"batchItemFailures": []}
    messages = drain(telemetry.sqs, telemetry.quarantine_url)
    assert [m["reason"] for m in messages] == [
        "data is not valid base64",
        "event_type is required",
    ]
    assert base64.b64decode(messages[1]["data"]) == b'{"x": 1}'
    assert messages[1]["sequence_number"] == batch[2]["kinesis"]["sequenceNumber"]


def test_velocity_fraud_found_by_a_query_and_alerted(telemetry: Any) -> None:
    from chalicelib.telemetry import telemetry_processor

    processor = telemetry_processor()
    first = records([transaction(n, user="u-9") for n in (500, 400, 300, 200, 100)])
    processor.process(first)
    assert drain(telemetry.sqs, telemetry.alerts_url) == []
    processor.process(records([transaction(0, user="u-9")], start=10))
    (envelope,) = drain(telemetry.sqs, telemetry.alerts_url)
    alert = json.loads(envelope["Message"])
    assert alert["type"] == "fraud_alert" and alert["transaction_id"] == "t-0"
    assert "6 transactions" in alert["reasons"][0]
    assert envelope["MessageAttributes"]["severity"]["Value"] == "high"
    # the same first batch again (a redelivery) is not counted as 5 more transactions
    processor.process(first)
    assert drain(telemetry.sqs, telemetry.alerts_url) == []


class Faults:
    """Makes about 30% of BatchWriteItem's items come back unprocessed and throttles some
    calls outright, on the app's DynamoDB client (botocore hooks)."""

    def __init__(self, rate: float = 0.3, throttle: float = 0.1, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.throttle = throttle
        self.held: list[tuple[str, list[dict[str, Any]]]] = []
        self.calls = 0
        self.throttled = 0
        self.unprocessed = 0

    def before(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        if self.rng.random() < self.throttle:
            self.throttled += 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "BatchWriteItem",
            )
        ((table, requests),) = params["RequestItems"].items()
        kept = [r for r in requests if self.rng.random() >= self.rate] or requests[:1]
        held = [r for r in requests if not any(r is k for k in kept)]
        self.unprocessed += len(held)
        self.held.append((table, held))
        params["RequestItems"] = {table: kept}

    def after(self, parsed: dict[str, Any], **_: Any) -> None:
        table, held = self.held.pop()
        if held:
            parsed.setdefault("UnprocessedItems", {}).setdefault(table, []).extend(held)


THROTTLED = ("UpdateItem", "BatchGetItem", "Query", "GetItem")


class Throttle:
    """Throttles about 30% of the calls it is registered on (botocore hook)."""

    def __init__(self, rate: float = 0.3, seed: int = 3) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.count = 0

    def __call__(self, **_: Any) -> None:
        if self.rng.random() < self.rate:
            self.count += 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "op")


def fast_processor() -> Any:
    """The processor on the app's clients, without backoff sleeps."""
    from chalicelib.core import aws
    from chalicelib.telemetry.processor import TelemetryProcessor

    fast = Backoff(sleep=lambda _: None)
    return TelemetryProcessor(
        TABLES,
        DynamoItemWriter(backoff=fast),
        DynamoBaselines(BASELINES_TABLE, backoff=fast),
        DynamoTransactionHistory(TABLES["transactions"], backoff=fast),
        SnsAlerts(lambda: aws.topic_arn(TOPIC), backoff=fast),
        SqsQuarantine(lambda: aws.queue_url(QUEUE), backoff=fast),
        S3Archive(BUCKET),
        CachedPseudonyms(DynamoPseudonyms(PSEUDONYMS_TABLE, backoff=fast)),
        alert_budget=DynamoAlertBudget(QUOTAS_TABLE, limit=10, backoff=fast),
        emit=lambda counts: None,
    )


def archived() -> list[dict[str, Any]]:
    s3 = boto3.client("s3")
    events = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for listed in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=listed["Key"])["Body"].read()
            events += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return events


def test_fault_5000_records_with_30_percent_unprocessed_stored_exactly_once(
    telemetry: Any,
) -> None:
    from chalicelib.core import aws

    client = aws.client("dynamodb")
    faults, throttle = Faults(), Throttle()
    client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", faults.before)
    client.meta.events.register("after-call.dynamodb.BatchWriteItem", faults.after)
    for operation in THROTTLED:
        client.meta.events.register(f"before-parameter-build.dynamodb.{operation}", throttle)
    sns, sns_throttle = aws.client("sns"), Throttle(rate=0.6, seed=5)  # some alerts fail
    sns.meta.events.register("before-parameter-build.sns.PublishBatch", sns_throttle)
    processor = fast_processor()
    events = [mixed(n) for n in range(5000)]
    for n in range(2, 5000, 3):  # 50 users: a few velocity alerts, 50 Queries a batch
        events[n]["user_id"] = f"user-{n % 50}"
    for n in range(1, 5000, 3 * 7):  # a cpu_usage metric in 7 critical: alerts to publish
        events[n]["value"] = 99.0
    stream = records(events)
    position, invocations, redelivered = 0, 0, 0
    while position < len(stream):  # Lambda: batches of 500, resume at the lowest failure
        batch = stream[position : position + 500]
        invocations += 1
        assert invocations < 100
        failures = processor.process(batch)["batchItemFailures"]
        if not failures:
            position += len(batch)
            continue
        lowest = min(int(f["itemIdentifier"]) for f in failures)
        advanced = next(
            i for i, r in enumerate(batch) if int(r["kinesis"]["sequenceNumber"]) == lowest
        )
        redelivered += len(batch) - advanced
        position += advanced
    client.meta.events.unregister("before-parameter-build.dynamodb.BatchWriteItem", faults.before)
    client.meta.events.unregister("after-call.dynamodb.BatchWriteItem", faults.after)
    for operation in THROTTLED:
        client.meta.events.unregister(f"before-parameter-build.dynamodb.{operation}", throttle)
    sns.meta.events.unregister("before-parameter-build.sns.PublishBatch", sns_throttle)

    assert faults.unprocessed > 0.2 * 5000 and faults.throttled > 0 and throttle.count > 0
    stored = {kind: scan_all(telemetry.dynamodb, name) for kind, name in TABLES.items()}
    ids = sorted(item["event_id"]["S"] for items in stored.values() for item in items)
    assert ids == sorted(e["event_id"] for e in events)  # every record, each once
    assert len(stored["transactions"]) == len(
        {e["transaction_id"] for e in events if "amount" in e}
    )
    assert invocations >= 10
    # every metric value folded into its baseline exactly once
    baselines = scan_all(telemetry.dynamodb, BASELINES_TABLE, "samples")
    metrics = sum(1 for e in events if e["event_type"] == "system_metric")
    assert sum(int(b["samples"]["N"]) for b in baselines) == metrics
    # every event archived exactly once (a user's under the user's identity: its digest)
    identities = {
        item["user_digest"]["S"]: LakeIdentity(item["pseudonym"]["S"], bytes(item["secret"]["B"]))
        for item in telemetry.dynamodb.scan(TableName=PSEUDONYMS_TABLE)["Items"]
    }
    assert sorted(e["event_id"] for e in archived()) == sorted(
        identities[user_digest(e["user_id"])].digest("event_id", e["event_id"]) if "user_id" in e
        else e["event_id"] for e in events
    )  # fmt: skip
    print(
        f"fault: {faults.calls} calls, {faults.unprocessed} unprocessed, "
        f"{faults.throttled} throttled, {throttle.count} reads/updates throttled, "
        f"{sns_throttle.count} PublishBatch throttled, "
        f"{invocations} invocations, {redelivered} redelivered"
    )


class FlakyKinesis:
    """PutRecords answering that some records failed (throttled), the rest put for real."""

    def __init__(self, real: Any, fail_first: int = 1, fail_every: int = 3) -> None:
        self.real = real
        self.calls = 0
        self.fail_first = fail_first
        self.fail_every = fail_every

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        failing = self.calls <= self.fail_first
        results: list[dict[str, Any]] = []
        for i, entry in enumerate(Records):
            if failing and i % self.fail_every == 0:
                results.append(
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "x"}
                )
            else:
                put = self.real.put_records(StreamName=StreamName, Records=[entry])
                results.append(put["Records"][0])
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedRecordCount": failed, "Records": results}


def stream_events() -> list[dict[str, Any]]:
    kinesis = boto3.client("kinesis")
    shard = kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return [json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator)["Records"]]


def _ingest(flaky: FlakyKinesis) -> Any:
    from datetime import UTC, datetime

    stream = KinesisStream(STREAM, client=lambda: flaky, backoff=Backoff(sleep=lambda _: None))
    return make_ingest(stream, clock=lambda: datetime.fromtimestamp(NOW.timestamp(), UTC))


def test_ingest_retries_records_putrecords_reports_failed(telemetry: Any) -> None:
    flaky = FlakyKinesis(boto3.client("kinesis"))
    body = {"events": [mixed(n) for n in range(9)] + [{"event_type": "nope"}]}
    result = _ingest(flaky).ingest(body, ADMIN)
    assert (result["accepted"], result["rejected"]) == (9, 1)
    assert result["results"][9] == {
        "index": 9,
        "accepted": False,
        "event_id": None,
        "reason": "unknown event_type; expected one of user_activity, system_metric, transaction",
    }
    assert flaky.calls == 2  # the failed third retried once, only they
    assert sorted(e["event_id"] for e in stream_events()) == sorted(
        e["event_id"] for e in body["events"][:9]
    )


def test_ingest_reports_records_the_stream_never_took(telemetry: Any) -> None:
    flaky = FlakyKinesis(boto3.client("kinesis"), fail_first=100, fail_every=2)
    result = _ingest(flaky).ingest({"events": [metric(n) for n in range(4)]}, ADMIN)
    # every call fails its first record: record 0 each time, record 2 only the first time
    assert [r["accepted"] for r in result["results"]] == [False, True, True, True]
    assert result["results"][0]["reason"] == "stream unavailable, retry"


def test_ingest_factory_puts_on_the_stream(telemetry: Any) -> None:
    from chalicelib.telemetry import telemetry_ingest

    event = {k: v for k, v in activity(1).items() if k != "event_id"}
    event["timestamp"] = clock.now().astimezone(timezone(timedelta(hours=-5))).isoformat()
    result = telemetry_ingest().ingest({"events": [event]}, user(event["user_id"]))
    assert result["accepted"] == 1
    (stored,) = stream_events()
    assert stored["event_id"] == result["results"][0]["event_id"]
    assert (stored["submitted_by"], stored["submitted_as"]) == (event["user_id"], "user")
    # counted against the user's quotas (events and their bytes), in the quotas table
    counters = telemetry.dynamodb.scan(TableName=QUOTAS_TABLE)["Items"]
    used = {c["id"]["S"].split("#")[1]: int(c["used"]["N"]) for c in counters}
    assert used["events"] == 1 and 200 < used["event-bytes"] < 1000
    subject = counter_subject(event["user_id"])
    assert all(c["id"]["S"].startswith(f"{subject}#") for c in counters)


@pytest.mark.parametrize(
    "body", [None, [], "x", {"events": []}, {"events": "x"}, {"events": [{}] * 501}, {"x": 1}]
)
def test_ingest_refuses_a_body_of_the_wrong_shape(body: Any) -> None:
    from chalicelib.core.errors import ApiError

    with pytest.raises(ApiError) as raised:
        make_ingest(stream=None).ingest(body, ADMIN)
    assert raised.value.status_code == 400


def test_missing_setting_raises_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.settings import SettingsError
    from chalicelib.telemetry import telemetry_processor

    monkeypatch.delenv("METRICS_TABLE_NAME", raising=False)
    telemetry_processor.cache_clear()
    with pytest.raises(SettingsError, match="METRICS_TABLE_NAME"):
        telemetry_processor()
    telemetry_processor.cache_clear()


def test_ingest_with_nothing_accepted_is_an_error_with_every_reason() -> None:
    from chalicelib.core.errors import ServiceUnavailable, ValidationFailed

    class DownStream:
        def put(self, records: Any) -> list[int]:
            return list(range(len(records)))

    ingest = make_ingest(DownStream(), clock=lambda: NOW)
    with pytest.raises(ValidationFailed) as refused:
        ingest.ingest({"events": [{"event_type": "nope"}]}, ADMIN)
    assert refused.value.details[0]["field"] == "events[0]"
    with pytest.raises(ServiceUnavailable) as down:
        ingest.ingest({"events": [activity(1), {"event_type": "nope"}]}, ADMIN)
    assert [d["field"] for d in down.value.details] == ["events[0]", "events[1]"]


# --- records DynamoDB can never take: quarantined, the shard never blocked -------------------


def test_a_lone_surrogate_is_quarantined_and_the_other_29_records_stored(telemetry: Any) -> None:
    poison = dict(metric(0), tags={"a": "\ud800"})  # `POST /events` used to accept it
    batch = records([poison] + [metric(n) for n in range(1, 30)])
    processor = fast_processor()
    assert processor.process(batch) == {"batchItemFailures": []}
    assert len(scan_all(telemetry.dynamodb, TABLES["metrics"])) == 29
    (message,) = drain(telemetry.sqs, telemetry.quarantine_url)
    assert "tags must be valid Unicode" in message["reason"]
    assert message["dedup_id"] == f"{batch[0]['eventID']}"


def test_the_writer_isolates_an_item_botocore_cannot_encode(telemetry: Any) -> None:
    """The model refuses lone surrogates now; the writer still must not let such an item
    (or any item refused for itself) fail the 24 others of its call, on every retry."""
    items = [encoding.table_and_item(validate_event(metric(n), NOW))[1] for n in range(30)]
    items[3]["tags"] = {"M": {"a": {"S": "\ud800"}}}
    writer = DynamoItemWriter(backoff=Backoff(sleep=lambda _: None))
    outcome = writer.put_all(TABLES["metrics"], items)
    assert outcome.failed == []
    assert list(outcome.rejected) == [3] and "UnicodeEncodeError" in outcome.rejected[3]
    assert len(scan_all(telemetry.dynamodb, TABLES["metrics"])) == 29


def test_the_writer_reports_a_table_fault_as_failed_not_rejected(telemetry: Any) -> None:
    items = [encoding.table_and_item(validate_event(metric(n), NOW))[1] for n in range(3)]
    writer = DynamoItemWriter(backoff=Backoff(sleep=lambda _: None))
    outcome = writer.put_all("no-such-table", items)  # ResourceNotFoundException
    assert (outcome.failed, outcome.rejected) == ([0, 1, 2], {})


TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits"


class RefuseItems:
    """Refuses a BatchWriteItem holding an item with a tag `refuse` the way DynamoDB refuses
    a number of more than 38 digits (moto does not check digits)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        for requests in params["RequestItems"].values():
            for request in requests:
                if "refuse" in request["PutRequest"]["Item"].get("tags", {}).get("M", {}):
                    error = {"Code": "ValidationException", "Message": TOO_MANY_DIGITS}
                    raise ClientError({"Error": error}, "BatchWriteItem")


def test_an_item_dynamodb_refuses_is_quarantined_and_the_others_stored(telemetry: Any) -> None:
    from chalicelib.core import aws

    refuse = RefuseItems()
    client = aws.client("dynamodb")
    client.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", refuse)
    try:
        batch = records([metric(n, tags={"refuse": "1"} if n == 7 else {}) for n in range(30)])
        processor = fast_processor()
        for _ in range(2):  # a redelivery changes nothing
            assert processor.process(batch) == {"batchItemFailures": []}
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.BatchWriteItem", refuse)
    stored = scan_all(telemetry.dynamodb, TABLES["metrics"])
    assert sorted(i["event_id"]["S"] for i in stored) == sorted(
        f"met-{n}" for n in range(30) if n != 7
    )
    messages = drain(telemetry.sqs, telemetry.quarantine_url)
    assert [m["sequence_number"] for m in messages] == [batch[7]["kinesis"]["sequenceNumber"]] * 2
    assert messages[0]["reason"].startswith("refused by DynamoDB: ValidationException")
    assert len(archived()) == 29 and refuse.calls < 30


def test_a_baseline_decaying_under_dynamodbs_smallest_number_is_still_stored(
    telemetry: Any,
) -> None:
    """A mean of 1e-128 times 0.9 for each of 50 zeros is 5e-131: DynamoDB (and moto) refuse
    it ("Number underflow") and every UpdateItem of the baseline failed."""
    telemetry.dynamodb.put_item(
        TableName=BASELINES_TABLE,
        Item={"pk": {"S": "api#error_rate"}, "mean": {"N": "1E-128"}, "samples": {"N": "100"},
              "version": {"N": "1"}, "applied": {"M": {}}},
    )  # fmt: skip
    zeros = [dict(metric(0, value=0, name="error_rate"), source="api", event_id=f"z{n}")
             for n in range(50)]  # fmt: skip
    assert fast_processor().process(records(zeros)) == {"batchItemFailures": []}
    item = telemetry.dynamodb.get_item(
        TableName=BASELINES_TABLE, Key={"pk": {"S": "api#error_rate"}}
    )["Item"]
    assert (item["mean"]["N"], item["samples"]["N"]) == ("0", "150")


def test_the_writer_stops_retrying_at_the_deadline_and_reports_the_rest() -> None:
    """Throttled for good: without a deadline it would back off 5 times per chunk."""

    class Throttled:
        calls = 0

        def batch_write_item(self, **_: Any) -> dict[str, Any]:
            self.calls += 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException"}}
            raise ClientError(error, "BatchWriteItem")

    client = Throttled()
    sleeps: list[float] = []
    items = [encoding.table_and_item(validate_event(metric(n), NOW))[1] for n in range(30)]
    writer = DynamoItemWriter(client=lambda: client, backoff=Backoff(sleep=sleeps.append))
    outcome = writer.put_all(TABLES["metrics"], items, should_stop=lambda: client.calls >= 2)
    assert (outcome.failed, outcome.rejected) == (list(range(30)), {})
    assert client.calls == 2 and len(sleeps) == 1  # the second chunk was never tried
