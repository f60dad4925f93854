"""The processor's and the ingest's outbound AWS adapters: alerts (SNS), the quarantine
(SQS), the archive (S3) and the telemetry stream (Kinesis) (`processor`, `ingest`).

Every adapter takes the client as a callable (the shared lazy client of `chalicelib.core.aws`
by default) and a backoff, so tests and the benchmark can stub either. Batch calls retry
what AWS reports failed or throttles, with exponential backoff and full jitter, a bounded
number of times, and then report what is still not sent instead of raising: the processor
turns it into `batchItemFailures`, the ingest into `accepted: false`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.core import aws, correlation
from chalicelib.core.aws import retryable
from chalicelib.core.backoff import Backoff

PUBLISH_BATCH = 10  # SNS PublishBatch
SEND_BATCH = 10  # SQS SendMessageBatch
PUT_RECORDS_BATCH = 500  # Kinesis PutRecords
PUT_RECORDS_BYTES = 5 * 1024 * 1024
SQS_MAX_BYTES = 256 * 1024


class SnsAlerts:
    """PublishBatch to the alerts topic, 10 per call, `severity`, `type` and `correlation_id`
    (the alert's, else the invocation's) message attributes."""

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
                    **correlation.message_attributes(alert.get("correlation_id")),
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
            attributes = correlation.message_attributes(message.get("correlation_id"))
            if message.get("dedup_id"):
                attributes["dedup_id"] = {"DataType": "String", "StringValue": message["dedup_id"]}
            if attributes:
                entries[str(i)]["MessageAttributes"] = attributes
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
