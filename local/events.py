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

SNS, as Lambda's subscription does: every message published to the topic reaches the
handler, one record per invocation, in Lambda's SNS event shape. The runtime subscribes a
queue of its own (`local-events-<handler>`) to the topic and reads from it. Like Lambda's
asynchronous invocation, a failing delivery is tried 3 times in all; then the message moves
to `local-events-<handler>-failed` (an on-failure destination), never dropped.

Schedules fire by their `rate(...)` or `cron(...)` expression (UTC), with the event
EventBridge sends; a failing run is tried 3 times in all, as EventBridge's asynchronous
invocation does. `make fire JOB=<name>` fires any scheduled job now (`local/fire.py`).

Every invocation is logged as one JSON line: handler, source, batch size, duration, outcome.
Other event sources are reported as not delivered locally yet.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
        from chalice.app import ScheduledEventConfig, SNSEventConfig, SQSEventConfig

        for source in self._app.event_sources:
            poller: Any
            if isinstance(source, SQSEventConfig):
                poller = SqsPoller(self, source)
            elif isinstance(source, SNSEventConfig):
                poller = SnsSubscription(self, source)
            elif isinstance(source, ScheduledEventConfig):
                poller = ScheduledJob(self, source)
            else:
                self.unsupported.append(f"{source.name} ({type(source).__name__})")
                continue
            thread = threading.Thread(target=poller.run, name=f"events:{source.name}", daemon=True)
            self._threads.append(thread)
            thread.start()
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

    def scheduled_jobs(self) -> dict[str, Any]:
        from chalice.app import ScheduledEventConfig

        return {s.name: s for s in self._app.event_sources if isinstance(s, ScheduledEventConfig)}

    def fire(self, name: str, at: datetime | None = None, retry_delay: float = 1.0) -> Invocation:
        """Run scheduled job `name` once, as EventBridge would at `at` (default: now): up to
        3 attempts if it fails. Returns the last attempt's invocation."""
        jobs = self.scheduled_jobs()
        if name not in jobs:
            listed = ", ".join(sorted(jobs)) or "none"
            raise KeyError(f"no scheduled job {name!r}; the app has: {listed}")
        event = self._scheduled_event(name, at or datetime.now(UTC))
        for attempt in range(1, ScheduledJob.ATTEMPTS + 1):
            result, invocation = self.invoke(name, "aws.events", event)
            failed = isinstance(result, Exception)
            if failed and attempt < ScheduledJob.ATTEMPTS:
                invocation.outcome += f" (attempt {attempt} of {ScheduledJob.ATTEMPTS}; retried)"
            elif failed:
                invocation.outcome += f" (attempt {attempt}; given up, as EventBridge would)"
            self.report(invocation)
            if not failed or self._stop.wait(retry_delay if attempt < ScheduledJob.ATTEMPTS else 0):
                break
        return invocation

    def _scheduled_event(self, name: str, at: datetime) -> dict[str, Any]:
        account = self._account()
        rule = f"{getattr(self._app, 'app_name', 'app')}-{name}"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": account,
            "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [f"arn:aws:events:{self._region}:{account}:rule/{rule}"],
            "detail": {},
        }

    def _account(self) -> str:
        try:
            return str(self._client("sts").get_caller_identity()["Account"])
        except Exception:
            return "000000000000"


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


class ScheduledJob:
    """Fires a scheduled job by its expression until the runtime stops."""

    ATTEMPTS = 3  # EventBridge invokes asynchronously: the first try and two retries

    def __init__(
        self,
        runtime: EventRuntime,
        source: Any,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        from local.schedules import parse

        expression = source.schedule_expression
        text = expression if isinstance(expression, str) else expression.to_string()
        self._runtime = runtime
        self._source = source
        self._schedule = parse(text)
        self._clock = clock
        self._wait = wait or runtime.stopping.wait

    def run(self) -> None:
        started = self._clock()
        due = self._schedule.next_after(started, started)
        while not self._runtime.stopping.is_set():
            remaining = (due - self._clock()).total_seconds()
            if remaining > 0:
                if self._wait(min(remaining, 60.0)):
                    return
                continue
            try:
                self._runtime.fire(self._source.name, at=due)
            except Exception:
                log.exception("scheduled job %s could not be fired", self._source.name)
            due = self._schedule.next_after(due, started)


class SnsSubscription:
    """A topic's messages to its handler, through a queue subscribed to the topic."""

    ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and two retries
    RETRY_AFTER_SECONDS = 2  # Lambda waits 1-2 min; locally, seconds keep the loop short

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime._client("sqs")
        self._sns = runtime._client("sns")
        self._ready = threading.Event()

    def run(self) -> None:
        queue, failed, subscription = self._subscribe()
        self._ready.set()
        while not self._runtime.stopping.is_set():
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=queue,
                    MaxNumberOfMessages=SQS_MAX_RECEIVE,
                    WaitTimeSeconds=self._runtime._idle_wait,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                for message in messages:
                    self._deliver(queue, failed, subscription, message)
            except Exception:
                log.exception("SNS delivery for %s failed; retrying", self._source.name)
                self._runtime.stopping.wait(1)

    def _subscribe(self) -> tuple[str, str, str]:
        topic = self._source.topic
        if not topic.startswith("arn:"):
            topic = self._sns.create_topic(Name=topic)["TopicArn"]  # finds the existing one
        name = f"local-events-{self._source.name}"
        failed = self._sqs.create_queue(QueueName=f"{name}-failed")["QueueUrl"]
        queue = self._sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": str(self.RETRY_AFTER_SECONDS)}
        )["QueueUrl"]
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        subscription = self._sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn["Attributes"]["QueueArn"],
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        return queue, failed, subscription

    def _deliver(self, queue: str, failed: str, subscription: str, message: dict[str, Any]) -> None:
        envelope = json.loads(message["Body"])
        event = {"Records": [sns_record(envelope, subscription)]}
        result, invocation = self._runtime.invoke(self._source.name, "aws:sns", event)
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if isinstance(result, Exception):
            if attempt < self.ATTEMPTS:
                invocation.outcome += f" (attempt {attempt} of {self.ATTEMPTS}; retried)"
                self._runtime.report(invocation)
                return  # it comes back when its visibility timeout ends
            self._sqs.send_message(QueueUrl=failed, MessageBody=message["Body"])
            invocation.outcome += f" (attempt {attempt}; moved to {failed.rsplit('/', 1)[1]})"
        self._sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        self._runtime.report(invocation)


def sns_record(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """An SNS notification (as SNS delivers it to SQS) as Lambda puts it in an event."""
    keys = ("Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
            "SignatureVersion", "Signature", "SigningCertUrl", "UnsubscribeUrl")  # fmt: skip
    sns = {key: envelope.get(key) for key in keys}
    sns["SigningCertUrl"] = sns["SigningCertUrl"] or envelope.get("SigningCertURL")
    sns["UnsubscribeUrl"] = sns["UnsubscribeUrl"] or envelope.get("UnsubscribeURL")
    sns["MessageAttributes"] = {
        name: {"Type": value.get("Type"), "Value": value.get("Value")}
        for name, value in (envelope.get("MessageAttributes") or {}).items()
    }
    return {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": sns,
    }


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
