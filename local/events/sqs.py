"""SQS queues (`@app.on_sqs_message`), polled as Lambda's event source mapping polls them:

- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- the Lambda event shape (`Records` with `messageId`, `receiptHandle`, `body`, `attributes`,
  `messageAttributes`, `eventSourceARN`, ...);
- a handler that raises has none of its batch deleted; one that returns has all of it
  deleted. Messages left behind reappear after the queue's visibility timeout and, after the
  redrive policy's maxReceiveCount, land in the dead-letter queue (the emulator's SQS does the
  redrive, as SQS does);
- a handler's `batchItemFailures` answer (a partial batch response) counts only where the
  mapping reports item failures (see core.py): then only the other messages are deleted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from local.events.core import EventRuntime, reported_identifiers

log = logging.getLogger(__name__)

#: SQS returns at most 10 messages a call, and long-polls at most 20 s.
SQS_MAX_RECEIVE = 10
SQS_MAX_WAIT_SECONDS = 20


class SqsPoller:
    """One SQS event source mapping: the queue's messages, in batches, to the handler."""

    READS_BATCH_ITEM_FAILURES = True

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime.client("sqs")
        self._queue_name = source.queue or source.queue_arn.rsplit(":", 1)[1]

    def run(self) -> None:
        url = self._sqs.get_queue_url(QueueName=self._queue_name)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        while not self._runtime.stopping.is_set():
            try:
                messages = self._collect(url)
                if messages:
                    self._deliver(url, arn, messages)
            except Exception:
                log.exception("SQS poller for %s failed; retrying", self._source.name)
                self._runtime.stopping.wait(1)

    def _collect(self, url: str) -> list[dict[str, Any]]:
        """One batch: wait for a first message, then fill the batch for up to the window."""
        size = self._source.batch_size
        window = self._source.maximum_batching_window_in_seconds
        batch: list[dict[str, Any]] = []
        deadline: float | None = None
        while len(batch) < size and not self._runtime.stopping.is_set():
            if deadline is None:
                wait = self._runtime.idle_wait_seconds
            else:
                wait = int(max(0, min(SQS_MAX_WAIT_SECONDS, deadline - time.monotonic())))
            received = self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(SQS_MAX_RECEIVE, size - len(batch)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            # A message whose visibility ran out while the batch filled comes again: keep
            # one copy, with the newest receipt handle (the only one that can delete it).
            seen = {m["MessageId"]: i for i, m in enumerate(batch)}
            for message in received:
                if message["MessageId"] in seen:
                    batch[seen[message["MessageId"]]] = message
                else:
                    seen[message["MessageId"]] = len(batch)
                    batch.append(message)
            if batch and deadline is None:
                deadline = time.monotonic() + window
            if batch and (window == 0 or time.monotonic() >= deadline):
                break
        return batch

    def _deliver(self, url: str, arn: str, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [lambda_record(m, arn, self._runtime.region) for m in messages]}
        result, invocation = self._runtime.invoke(self._source.name, "aws:sqs", event)
        if isinstance(result, Exception):
            done: list[dict[str, Any]] = []
            invocation.failed_ids = [m["MessageId"] for m in messages]
        elif not self._runtime.reports_item_failures(self._source.name):
            done = messages  # a success, whatever the answer: every message is deleted
            reported = reported_identifiers(result)
            if reported:
                self._runtime.item_failures_ignored(invocation, reported, "message")
        else:
            failed = set(reported_identifiers(result))
            ids = {m["MessageId"] for m in messages}
            if failed - ids:  # an empty or unknown itemIdentifier: Lambda fails the whole batch
                failed = ids
                invocation.outcome = "error: batchItemFailures names no message of the batch"
            elif failed:
                invocation.outcome = f"partial: {len(failed)} of {len(messages)} failed"
            invocation.failed_ids = sorted(failed)
            done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), SQS_MAX_RECEIVE):
            chunk = done[start : start + SQS_MAX_RECEIVE]
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        self._runtime.report(invocation)


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS ReceiveMessage result as Lambda puts it in an event."""
    attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value["DataType"],
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
