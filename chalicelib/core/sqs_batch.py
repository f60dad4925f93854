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
that fully succeeds costs nothing extra; a failed message costs one DeleteMessageBatch call
for its batch.

Each message is handled with its own correlation id bound (`core.correlation.of_sqs_record`:
its `correlation_id` attribute, or the SNS envelope's), so the lines about one message carry
the id of the request that caused it; the invocation's lines carry the batch's ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.core import aws, correlation
from chalicelib.core.observability import logger

#: DeleteMessageBatch takes at most 10 entries.
SQS_DELETE_BATCH = 10


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
) -> None:
    """Like `process_sqs_batch`, also telling the handler how often the message has been
    received (1 the first time), so its last attempt before the dead-letter queue can record
    the failure."""
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
