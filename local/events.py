"""The local event runtime: delivers events from the emulator to the app's own handlers, the
way Lambda's event source mappings do, so that no handler knows it runs locally.

It reads what the Chalice decorators registered (`app.event_sources`) and runs one poller
per source. SQS, as Lambda polls it:

- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- the Lambda event shape (`Records` with `messageId`, `receiptHandle`, `body`, `attributes`,
  `messageAttributes`, `eventSourceARN`, ...);
- a handler that returns `batchItemFailures` has only the other messages deleted; one that
  raises has none deleted. Messages left behind reappear after the queue's visibility timeout
  and, after the redrive policy's maxReceiveCount, land in the dead-letter queue (the
  emulator's SQS does the redrive, as SQS does).

Every invocation is logged as one JSON line: handler, source, batch size, duration, outcome.
Other event sources are reported as not delivered locally yet.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("local.events")

#: SQS returns at most 10 messages a call, and long-polls at most 20 s.
SQS_MAX_RECEIVE = 10
SQS_MAX_WAIT_SECONDS = 20


@dataclass
class Invocation:
    handler: str
    source: str
    batch_size: int
    duration_ms: float
    outcome: str
    failed_ids: list[str] = field(default_factory=list)

    def as_log_line(self) -> str:
        return json.dumps({"event_runtime": "invocation", **self.__dict__}, sort_keys=True)


class EventRuntime:
    """Pollers for every event source of `app`, run on daemon threads until `stop()`."""

    def __init__(
        self,
        app: Any,
        client: Callable[[str], Any],
        region: str,
        on_invocation: Callable[[Invocation], None] | None = None,
        idle_wait_seconds: int = 1,
    ) -> None:
        self._app = app
        self._client = client
        self._region = region
        self._on_invocation = on_invocation or (lambda inv: print(inv.as_log_line(), flush=True))
        self._idle_wait = idle_wait_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.unsupported: list[str] = []

    def start(self) -> None:
        from chalice.app import SQSEventConfig

        for source in self._app.event_sources:
            if isinstance(source, SQSEventConfig):
                poller = SqsPoller(self, source)
                thread = threading.Thread(target=poller.run, name=f"sqs:{source.name}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self.unsupported.append(f"{source.name} ({type(source).__name__})")
        if self.unsupported:
            log.warning("not delivered locally yet: %s", ", ".join(self.unsupported))

    def stop(self, timeout: float = 25.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def invoke(self, name: str, source: str, event: dict[str, Any]) -> tuple[Any, Invocation]:
        """Run handler `name` on `event` as Lambda would; never raises."""
        from chalice.local import LambdaContext

        context = LambdaContext(function_name=name, memory_size=512, max_runtime_ms=60_000)
        started = time.perf_counter()
        batch = len(event.get("Records", []))
        try:
            result = self._app.handler_map[name](event, context)
            outcome = "ok"
        except Exception as exc:
            result = exc
            outcome = f"error: {exc.__class__.__name__}: {exc}"
            log.debug("handler %s raised:\n%s", name, traceback.format_exc())
        invocation = Invocation(
            name, source, batch, (time.perf_counter() - started) * 1000, outcome
        )
        return result, invocation

    def report(self, invocation: Invocation) -> None:
        self._on_invocation(invocation)


class SqsPoller:
    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime._client("sqs")
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
                wait = self._runtime._idle_wait
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
        event = {"Records": [lambda_record(m, arn, self._runtime._region) for m in messages]}
        result, invocation = self._runtime.invoke(self._source.name, "aws:sqs", event)
        if isinstance(result, Exception):
            done: list[dict[str, Any]] = []
            invocation.failed_ids = [m["MessageId"] for m in messages]
        else:
            failed = failed_message_ids(result)
            invocation.failed_ids = sorted(failed)
            done = [m for m in messages if m["MessageId"] not in failed]
            if failed:
                invocation.outcome = f"partial: {len(failed)} of {len(messages)} failed"
        for start in range(0, len(done), SQS_MAX_RECEIVE):
            chunk = done[start : start + SQS_MAX_RECEIVE]
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        self._runtime.report(invocation)


def failed_message_ids(result: Any) -> set[str]:
    """The `batchItemFailures` of a handler's answer (Lambda's partial batch response)."""
    if not isinstance(result, dict):
        return set()
    return {
        str(item["itemIdentifier"])
        for item in result.get("batchItemFailures") or []
        if isinstance(item, dict) and item.get("itemIdentifier")
    }


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
