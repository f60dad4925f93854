"""SQS batches that lose nothing, whichever way the function was deployed.

Lambda deletes a whole batch when the handler returns, unless the event source mapping has
`ReportBatchItemFailures` turned on, and Chalice never turns it on (`chalice deploy` cannot,
and `chalice package` does not). A handler that answered with `batchItemFailures` on such a
mapping would have its failed messages deleted with the rest.

So a partly failed batch is settled here, the way Powertools v1's `PartialSQSProcessor` did:
the messages that succeeded are deleted explicitly, then the invocation raises, and Lambda
leaves the failed ones in the queue. They come back after the visibility timeout, and after
the queue's maxReceiveCount the redrive policy moves them to the dead-letter queue. This is
correct with or without `ReportBatchItemFailures`, on both deploy paths and locally. A batch
that fully succeeds costs nothing extra.

A failed message comes back sooner than the queue's visibility timeout, which is sized for
the function's longest run (minutes): its visibility is set to 10 s, 30 s, 90 s... by its
receive count (with jitter), never longer than the queue's own. A throttled write is retried
in seconds, a lasting outage still backs off, and maxReceiveCount still ends in the
dead-letter queue. If that change fails, the queue's timeout applies: nothing is lost. A
failed batch costs one DeleteMessageBatch and one ChangeMessageVisibilityBatch call, and
the queue's timeout is read once per process.

Each message is handled with its own correlation id bound (`core.correlation.of_sqs_record`:
its `correlation_id` attribute, or the SNS envelope's), so the lines about one message carry
the id of the request that caused it; the invocation's lines carry the batch's ids.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache
from typing import Any

from chalicelib.core import aws, correlation
from chalicelib.core.observability import logger

#: DeleteMessageBatch and ChangeMessageVisibilityBatch take at most 10 entries.
SQS_DELETE_BATCH = 10
#: A failed message's next try: FIRST * FACTOR ** (receives - 1) seconds, capped by the
#: queue's own visibility timeout (itself at most SQS's 12 hours).
RETRY_DELAY_FIRST_S = 10
RETRY_DELAY_FACTOR = 3


class BatchItemsFailed(Exception):
    """Some messages failed: raised after the others were deleted, so that Lambda keeps (and
    retries) only the failed ones."""


def process_sqs_batch(
    event: dict[str, Any],
    handle_body: Callable[[str], None],
    client: Callable[[str], Any] = aws.client,
) -> None:
    """Run `handle_body` on each message's body; settle the batch as the module says."""
    process_sqs_messages(event, lambda body, _receive_count: handle_body(body), client)


def process_sqs_messages(
    event: dict[str, Any],
    handle_message: Callable[[str, int], None],
    client: Callable[[str], Any] = aws.client,
    jitter: Callable[[], float] = random.random,
) -> None:
    """Like `process_sqs_batch`, also telling the handler how often the message has been
    received (1 the first time), so its last attempt before the dead-letter queue can record
    the failure. `jitter()` is in [0, 1): a failed message's wait is between half and all
    of its backoff."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    records = event.get("Records") or []

    def handle(record: Any) -> None:
        with correlation.bound(correlation.of_sqs_record(record.raw_event)):
            try:
                attributes = record.raw_event.get("attributes") or {}
                handle_message(record.body, int(attributes.get("ApproximateReceiveCount") or 1))
            except Exception:
                logger.exception(
                    "message failed; it stays in the queue", message_id=record.message_id
                )
                raise

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(records=records, handler=handle):
        processor.process()
    failed_ids = {f["itemIdentifier"] for f in processor.response()["batchItemFailures"]}
    if not failed_ids:
        return
    succeeded = [r for r in records if r["messageId"] not in failed_ids]
    _delete(succeeded, client)
    _retry_sooner([r for r in records if r["messageId"] in failed_ids], client, jitter)
    raise BatchItemsFailed(
        f"{len(failed_ids)} of {len(records)} messages failed ({sorted(failed_ids)}); the "
        f"{len(succeeded)} others were deleted, the failed ones stay in the queue for a retry"
    )


def _delete(records: list[dict[str, Any]], client: Callable[[str], Any]) -> None:
    """Delete processed messages; one that cannot be deleted is merely processed again."""
    for start in range(0, len(records), SQS_DELETE_BATCH):
        chunk = records[start : start + SQS_DELETE_BATCH]
        queue_name = chunk[0]["eventSourceARN"].rsplit(":", 1)[1]
        answer = client("sqs").delete_message_batch(
            QueueUrl=aws.queue_url(queue_name),
            Entries=[
                {"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)
            ],
        )
        for failure in answer.get("Failed") or []:
            logger.warning(
                "a processed message could not be deleted; it will come again",
                code=failure.get("Code"),
                message_id=chunk[int(failure["Id"])]["messageId"],
            )


def retry_delay(receive_count: int, queue_visibility: int, jitter: float) -> int:
    """Seconds until a message that failed on its `receive_count`th receive is tried again:
    an exponential backoff with jitter in [half, all] of it, at most the queue's timeout."""
    backoff = RETRY_DELAY_FIRST_S * RETRY_DELAY_FACTOR ** max(receive_count - 1, 0)
    backoff = min(backoff, queue_visibility)
    return int(backoff / 2 + backoff / 2 * jitter)


def _retry_sooner(
    records: list[dict[str, Any]], client: Callable[[str], Any], jitter: Callable[[], float]
) -> None:
    """Shorten the failed messages' visibility (module docstring); best effort."""
    for start in range(0, len(records), SQS_DELETE_BATCH):
        chunk = records[start : start + SQS_DELETE_BATCH]
        try:
            queue_url = aws.queue_url(chunk[0]["eventSourceARN"].rsplit(":", 1)[1])
            visibility = _visibility_timeout(queue_url, client)
            entries = []
            for i, record in enumerate(chunk):
                received = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
                delay = retry_delay(received, visibility, jitter())
                if delay < visibility:
                    entries.append({"Id": str(i), "ReceiptHandle": record["receiptHandle"],
                                    "VisibilityTimeout": delay})  # fmt: skip
            if not entries:
                continue
            answer = client("sqs").change_message_visibility_batch(
                QueueUrl=queue_url, Entries=entries
            )
        except Exception as exc:  # the queue's own timeout applies: slower, nothing lost
            logger.warning("failed messages keep the queue's visibility timeout",
                           error=aws.error_code(exc))  # fmt: skip
            continue
        for failure in answer.get("Failed") or []:
            logger.warning(
                "a failed message keeps the queue's visibility timeout",
                code=failure.get("Code"),
                message_id=chunk[int(failure["Id"])]["messageId"],
            )


@cache
def _visibility_timeout(queue_url: str, client: Callable[[str], Any]) -> int:
    """The queue's visibility timeout in seconds, read once per process."""
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    return int(attributes["VisibilityTimeout"])
