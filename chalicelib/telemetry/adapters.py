"""AWS behind the processor's and the ingest's small interfaces (`processor`, `ingest`).

Every adapter takes the client as a callable (the shared lazy client of `chalicelib.core.aws`
by default) and a `sleep`, so tests and the benchmark can stub either. Batch calls retry
what AWS leaves unprocessed or throttles, with exponential backoff and full jitter, a bounded
number of times, and then report what is still not done instead of raising: the processor
turns it into `batchItemFailures`, the ingest into `accepted: false`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core import aws
from chalicelib.core.aws import error_code, retryable
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import WRITE_BATCH, batch_get, batch_write
from chalicelib.telemetry.detection import Baseline
from chalicelib.telemetry.encoding import computed_number

PUBLISH_BATCH = 10  # SNS PublishBatch
SEND_BATCH = 10  # SQS SendMessageBatch
PUT_RECORDS_BATCH = 500  # Kinesis PutRecords
PUT_RECORDS_BYTES = 5 * 1024 * 1024
SQS_MAX_BYTES = 256 * 1024


def _dynamodb() -> Any:
    return aws.client("dynamodb")


#: Errors about the items themselves (a number DynamoDB cannot store, an item too large, a
#: string botocore cannot encode): the same items fail the same way every time, but the
#: other items of their call would be written on their own.
ITEM_ERRORS = frozenset({"ValidationException", "SerializationException", "ParamValidationError"})


def item_error(exc: BaseException) -> bool:
    return error_code(exc) in ITEM_ERRORS or isinstance(exc, ValueError | TypeError)


@dataclass
class PutOutcome:
    """What `put_all` could not write: `failed` (throttled or unprocessed after every retry,
    or a fault of the table itself: worth a redelivery) and `rejected` (refused for good,
    each alone in its call: position -> the error, never worth another try)."""

    failed: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)


class DynamoItemWriter:
    """BatchWriteItem (`core.dynamo.batch_write`), 25 puts per call, retrying UnprocessedItems
    and throttled calls. A call refused for its items (`item_error`) is split in halves until
    the items refused are alone: those are `rejected`, the others written."""

    def __init__(
        self, client: Callable[[], Any] = _dynamodb, backoff: Backoff | None = None
    ) -> None:
        self._client = client
        self._backoff = backoff or Backoff()

    def put_all(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        should_stop: Callable[[], bool] | None = None,
    ) -> PutOutcome:
        """Put `items` (no primary key twice); what is still not written, and why. Once
        `should_stop()` (the deadline) is true no call is started nor backoff slept: what
        is left is `failed`."""
        outcome = PutOutcome()
        for start in range(0, len(items), WRITE_BATCH):
            chunk = list(range(start, min(start + WRITE_BATCH, len(items))))
            self._put_chunk(table, items, chunk, outcome, should_stop)
        outcome.failed.sort()
        return outcome

    def _put_chunk(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        chunk: list[int],
        outcome: PutOutcome,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        requests = [{"PutRequest": {"Item": items[i]}} for i in chunk]
        left = batch_write(self._client(), table, requests, self._backoff, should_stop)
        # What is left comes back as the same requests: find their positions by key.
        positions = {_key(items[i]): i for i in chunk}
        keys = (_key(request["PutRequest"]["Item"]) for request in left.requests)
        unwritten = sorted({positions[key] for key in keys if key in positions})
        if left.error is None or not item_error(left.error):
            outcome.failed += unwritten
        elif len(unwritten) == 1:
            outcome.rejected[unwritten[0]] = f"{error_code(left.error)}: {left.error}"
        else:
            half = len(unwritten) // 2
            self._put_chunk(table, items, unwritten[:half], outcome, should_stop)
            self._put_chunk(table, items, unwritten[half:], outcome, should_stop)


def _key(item: dict[str, Any]) -> tuple[str, str]:
    sk = item.get("sk")
    return item["pk"]["S"], sk["S"] if sk else ""


class DynamoBaselines:
    """The baselines table: `pk` = `<source>#<metric>`, with `mean`, `samples`, `version`
    and `applied` (a map of shard to the last sequence number folded in)."""

    def __init__(
        self,
        table: str,
        client: Callable[[], Any] = _dynamodb,
        backoff: Backoff | None = None,
        max_conflicts: int = 5,
    ) -> None:
        self._table = table
        self._client = client
        self._backoff = backoff or Backoff()
        self._max_conflicts = max_conflicts

    def get_many(self, keys: Sequence[str]) -> dict[str, Baseline]:
        """The stored baselines of `keys` (missing ones are absent); raises when reads stay
        throttled after every retry."""
        requested = [{"pk": {"S": key}} for key in keys]
        found = batch_get(
            self._client(), self._table, requested, self._backoff, ConsistentRead=True
        )
        return {item["pk"]["S"]: _baseline(item) for item in found}

    def store(self, key: str, seen: Baseline | None, new: Baseline) -> Baseline | None:
        """Write `new` if the stored baseline is still `seen` (by version): None when
        written, else the baseline stored now (another writer got there first)."""
        values = {
            ":mean": {"N": computed_number(new.mean)},
            ":samples": {"N": str(new.samples)},
            ":version": {"N": str(new.version)},
            ":applied": {"M": {shard: {"S": seq} for shard, seq in new.applied.items()}},
        }
        if seen is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "version = :seen"
            values[":seen"] = {"N": str(seen.version)}
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                self._client().update_item(
                    TableName=self._table,
                    Key={"pk": {"S": key}},
                    UpdateExpression=(
                        "SET mean = :mean, samples = :samples, version = :version, "
                        "applied = :applied"
                    ),
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
                return None
            except Exception as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return self._get(key)
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")

    def _get(self, key: str) -> Baseline:
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                response = self._client().get_item(
                    TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True
                )
            except Exception as exc:
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
                continue
            item = response.get("Item")
            return _baseline(item) if item else Baseline()
        raise RuntimeError("unreachable")


def _baseline(item: dict[str, Any]) -> Baseline:
    return Baseline(
        mean=float(item.get("mean", {}).get("N", "0")),
        samples=int(item.get("samples", {}).get("N", "0")),
        version=int(item.get("version", {}).get("N", "0")),
        applied={k: v["S"] for k, v in item.get("applied", {}).get("M", {}).items()},
    )


class DynamoTransactionHistory:
    """The transactions table's `by-user` index (KEYS_ONLY): a user's transactions by time."""

    def __init__(
        self,
        table: str,
        index: str = "by-user",
        client: Callable[[], Any] = _dynamodb,
        backoff: Backoff | None = None,
    ) -> None:
        self._table = table
        self._index = index
        self._client = client
        self._backoff = backoff or Backoff()

    def between(self, user_id: str, start: str, end: str) -> list[tuple[str, str]]:
        """(occurred_at, transaction_id) of the user's stored transactions in [start, end].
        Keys, not a COUNT: a redelivered transaction must be counted once, by its id."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._index,
            "KeyConditionExpression": "user_id = :u AND occurred_at BETWEEN :a AND :b",
            "ExpressionAttributeValues": {
                ":u": {"S": user_id},
                ":a": {"S": start},
                ":b": {"S": end},
            },
        }
        found: list[tuple[str, str]] = []
        attempt = 0
        while True:
            try:
                response = self._client().query(**request)
            except Exception as exc:
                attempt += 1
                if not retryable(exc) or attempt >= self._backoff.max_attempts:
                    raise
                self._backoff.wait(attempt)
                continue
            found += [
                (item["occurred_at"]["S"], item["pk"]["S"].removeprefix("TXN#"))
                for item in response.get("Items", [])
            ]
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            request["ExclusiveStartKey"] = last


class SnsAlerts:
    """PublishBatch to the alerts topic, 10 per call, a `severity` message attribute."""

    def __init__(
        self,
        topic_arn: Callable[[], str],
        client: Callable[[], Any] = lambda: aws.client("sns"),
        backoff: Backoff | None = None,
    ) -> None:
        self._topic_arn = topic_arn
        self._client = client
        self._backoff = backoff or Backoff(max_attempts=3)

    def send_alerts(self, alerts: Sequence[dict[str, Any]]) -> list[int]:
        """The positions of the alerts not published."""
        entries = {
            str(i): {
                "Id": str(i),
                "Message": json.dumps(alert, separators=(",", ":"), default=str),
                "Subject": f"{alert['severity'].upper()} {alert['type'].replace('_', ' ')}",
                "MessageAttributes": {
                    "severity": {"DataType": "String", "StringValue": alert["severity"]},
                    "type": {"DataType": "String", "StringValue": alert["type"]},
                },
            }
            for i, alert in enumerate(alerts)
        }
        return _send_batches(
            entries,
            PUBLISH_BATCH,
            lambda batch: self._client().publish_batch(
                TopicArn=self._topic_arn(), PublishBatchRequestEntries=batch
            ),
            self._backoff,
        )


class SqsQuarantine:
    """SendMessageBatch to the quarantine queue, 10 per call: one message per record."""

    def __init__(
        self,
        queue_url: Callable[[], str],
        client: Callable[[], Any] = lambda: aws.client("sqs"),
        backoff: Backoff | None = None,
    ) -> None:
        self._queue_url = queue_url
        self._client = client
        self._backoff = backoff or Backoff(max_attempts=3)

    def send(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """The positions of the messages not sent. A message over SQS's 256 KB has its
        `data` cut (and `data_truncated` set); the record stays readable in the stream."""
        entries = {}
        for i, message in enumerate(messages):
            body = json.dumps(message, separators=(",", ":"))
            if len(body) > SQS_MAX_BYTES - 1024:
                cut = {**message, "data": message["data"][: SQS_MAX_BYTES // 2]}
                body = json.dumps({**cut, "data_truncated": True}, separators=(",", ":"))
            entries[str(i)] = {"Id": str(i), "MessageBody": body}
            if message.get("dedup_id"):
                entries[str(i)]["MessageAttributes"] = {
                    "dedup_id": {"DataType": "String", "StringValue": message["dedup_id"]}
                }
        return _send_batches(
            entries,
            SEND_BATCH,
            lambda batch: self._client().send_message_batch(
                QueueUrl=self._queue_url(), Entries=batch
            ),
            self._backoff,
        )


def _send_batches(
    entries: dict[str, dict[str, Any]],
    size: int,
    call: Callable[[list[dict[str, Any]]], Any],
    backoff: Backoff,
) -> list[int]:
    """Send entries (by Id) in batches; retry the failed ones the service marks as its own
    fault (`SenderFault` false) or a throttled call; the positions of those never sent."""
    pending = dict(entries)
    failed: set[str] = set()
    for attempt in range(backoff.max_attempts):
        if not pending:
            break
        if attempt:
            backoff.wait(attempt)
        retry: dict[str, dict[str, Any]] = {}
        ids = list(pending)
        for start in range(0, len(ids), size):
            batch = [pending[i] for i in ids[start : start + size]]
            try:
                response = call(batch)
            except Exception as exc:
                target = retry if retryable(exc) else None
                for entry in batch:
                    if target is None:
                        failed.add(entry["Id"])
                    else:
                        target[entry["Id"]] = entry
                continue
            for problem in response.get("Failed", []):
                if problem.get("SenderFault"):
                    failed.add(problem["Id"])
                else:
                    retry[problem["Id"]] = pending[problem["Id"]]
        pending = retry
    return sorted(int(i) for i in failed | set(pending))


class S3Archive:
    def __init__(
        self,
        bucket: str,
        client: Callable[[], Any] = lambda: aws.client("s3"),
    ) -> None:
        self._bucket = bucket
        self._client = client

    def put(self, key: str, body: bytes) -> None:
        """One PutObject (botocore retries it; a failure raises)."""
        self._client().put_object(
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )


class KinesisStream:
    """PutRecords, at most 500 records and 5 MB per call, retrying the records reported
    failed (and throttled calls) with backoff."""

    def __init__(
        self,
        stream_name: str,
        client: Callable[[], Any] = lambda: aws.client("kinesis"),
        backoff: Backoff | None = None,
    ) -> None:
        self._stream = stream_name
        self._client = client
        self._backoff = backoff or Backoff(max_attempts=4)

    def put(self, records: Sequence[tuple[bytes, str]]) -> list[int]:
        """Put (data, partition key) records; the positions of those never accepted."""
        pending = list(range(len(records)))
        for attempt in range(self._backoff.max_attempts):
            if not pending:
                return []
            if attempt:
                self._backoff.wait(attempt)
            retry: list[int] = []
            for chunk in _record_chunks(records, pending):
                entries = [{"Data": records[i][0], "PartitionKey": records[i][1]} for i in chunk]
                try:
                    response = self._client().put_records(StreamName=self._stream, Records=entries)
                except Exception as exc:
                    if not retryable(exc):
                        return sorted(set(pending))
                    retry += chunk
                    continue
                results = response.get("Records", [])
                retry += [
                    i for i, result in zip(chunk, results, strict=False) if result.get("ErrorCode")
                ]
                retry += chunk[len(results) :]
            pending = retry
        return sorted(pending)


def _record_chunks(records: Sequence[tuple[bytes, str]], positions: list[int]) -> list[list[int]]:
    chunks: list[list[int]] = [[]]
    size = 0
    for i in positions:
        data, key = records[i]
        length = len(data) + len(key.encode())
        if chunks[-1] and (
            len(chunks[-1]) >= PUT_RECORDS_BATCH or size + length > PUT_RECORDS_BYTES
        ):
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += length
    return [c for c in chunks if c]


def quarantine_message(record: Any, reason: str) -> dict[str, Any]:
    """The quarantine message of a record (`encoding.Record`). `dedup_id`
    (`<shardId>:<sequenceNumber>`, also a message attribute) is the record's identity: a
    record redelivered after its message was sent is quarantined again, with the same id,
    for consumers to drop."""
    return {
        "dedup_id": f"{record.shard}:{record.sequence}",
        "reason": reason,
        "data": record.data,
        "shard_id": record.shard,
        "sequence_number": record.sequence,
        "partition_key": record.partition_key,
        "approximate_arrival_timestamp": record.arrival,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
