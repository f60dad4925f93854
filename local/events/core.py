"""The local event runtime: delivers events from the emulator to the app's own handlers, the
way Lambda's event source mappings do, so that no handler knows it runs locally.

It reads what the Chalice decorators registered (`app.event_sources`) and runs one poller
per source. SQS, as Lambda polls it:

- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- the Lambda event shape (`Records` with `messageId`, `receiptHandle`, `body`, `attributes`,
  `messageAttributes`, `eventSourceARN`, ...);
- a handler that raises has none of its batch deleted; one that returns has all of it
  deleted. Messages left behind reappear after the queue's visibility timeout and, after the
  redrive policy's maxReceiveCount, land in the dead-letter queue (the emulator's SQS does the
  redrive, as SQS does);
- a handler's `batchItemFailures` answer (a partial batch response) counts only where the
  mapping reports item failures (see below): then only the other messages are deleted.

Partial batch responses. Lambda reads a handler's `{"batchItemFailures": [...]}` only on an
event source mapping with `FunctionResponseTypes: ["ReportBatchItemFailures"]`. Chalice
never sets it (neither `chalice deploy` nor `chalice package`), so by default no mapping here
has it either: a returned `batchItemFailures` is a success, as in AWS. The SQS batch is
deleted whole, a stream's checkpoint moves past the whole batch, and the messages or records
the handler said failed are gone. As that is data loss a developer must see, the invocation's
outcome says so (`ok, but batchItemFailures ignored: ...`) and a warning names the handler
and the identifiers. `EventRuntime(report_batch_item_failures=...)` turns it on for every
mapping (True) or for the named handlers' mappings (as a deploy could, through a
CloudFormation merge).

SNS, S3 and EventBridge, which invoke a function asynchronously, one event per invocation.
The runtime has each source send to a queue of its own, `local-events-<handler>`, and reads
from it:

- SNS (`@app.on_sns_message`): the queue is subscribed to the topic; every message published
  reaches the handler, in Lambda's SNS event shape;
- S3 (`@app.on_s3_event`): a QueueConfiguration `local-events-<handler>` (its events, prefix
  and suffix) is added to the bucket's notification configuration, the others kept; each
  record is one invocation, `{"Records": [record]}` in S3's shape (the key URL-encoded as S3
  does; what the emulator leaves out of a record, such as the `sequencer`, filled in); S3's
  `s3:TestEvent` is not delivered. A bucket that does not exist yet is waited for;
- EventBridge (`@app.on_cw_event`): a rule `local-events-<handler>` on the default bus, with
  the handler's event pattern, targets the queue; the handler gets the event as EventBridge
  sends it (its `account` filled in if the emulator leaves it out).

As with Lambda's asynchronous invocation, a failing event is tried 3 times in all (seconds
apart, not minutes); then its message moves to `local-events-<handler>-failed` (an on-failure
destination), never dropped.

Schedules fire by their `rate(...)` or `cron(...)` expression (UTC), with the event
EventBridge sends; a failing run is tried 3 times in all, as EventBridge's asynchronous
invocation does. `make fire JOB=<name>` fires any scheduled job now (`local/fire.py`).

Kinesis streams (`@app.on_kinesis_record`) and DynamoDB streams (`@app.on_dynamodb_record`),
as Lambda's stream event source mappings read them:

- each shard by a thread of its own, its records in order; a shard's children (after a split
  or a merge) only once the shard itself is read to its end. `TRIM_HORIZON` starts at the
  oldest record; `LATEST` at the records written after the runtime started the poller
  (`EventRuntime.wait_until_ready()` returns once every starting position is taken);
- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- Lambda's event shapes: `kinesis` records (`data` base64, `approximateArrivalTimestamp` in
  epoch seconds, `eventID` `shardId-...:<sequence number>`), and DynamoDB stream records
  (`eventName` INSERT/MODIFY/REMOVE, `dynamodb` with `Keys`, `NewImage`, `OldImage` as
  AttributeValue JSON, `ApproximateCreationDateTime` in epoch seconds);
- a checkpoint per handler and shard, in memory: a batch that succeeds moves it past its last
  record. Two handlers on one stream are two consumers, each with its own checkpoints;
- a handler that raises gets the same records again, after a backoff (0.5 s, doubling up to
  5 s), never skipped and never reordered; as with BisectBatchOnFunctionError, the failed
  batch is split in halves, each retried as a batch of its own, first half first (and halved
  again while it fails, down to the one record that fails), then reading goes on. Nothing
  that raises is given up on;
- one that returns `batchItemFailures`, on a mapping that reports item failures, is
  checkpointed just before the lowest failed sequence number, and the next batch starts
  there; on one that does not (Chalice's), past the whole batch, with the warning above;
- a DynamoDB stream ARN whose label is not the table's current stream (the table was created
  again, or the ARN was written down before it was) is replaced, with a warning, by the
  table's `LatestStreamArn`.

Every invocation is logged as one JSON line: handler, source, batch size, duration, outcome.
Any other kind of event source is reported as not delivered locally.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from chalicelib.core import clock

log = logging.getLogger("local.events")

#: SQS returns at most 10 messages a call, and long-polls at most 20 s.
SQS_MAX_RECEIVE = 10
SQS_MAX_WAIT_SECONDS = 20
#: An idle shard's reads slow down by doubling, this many times (0.25 s -> 1 s by default).
IDLE_BACKOFF_STEPS = 2
#: GetRecords returns at most this many records a call.
KINESIS_MAX_RECORDS = 10_000
DYNAMODB_STREAMS_MAX_RECORDS = 1_000


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
        *,
        handlers: Collection[str] | None = None,
        retry_backoff_seconds: float = 0.5,
        max_retry_backoff_seconds: float = 5.0,
        stream_poll_seconds: float = 0.25,
        async_retry_seconds: int = 2,
        report_batch_item_failures: bool | Collection[str] = False,
    ) -> None:
        """`handlers`: the names of the handlers to deliver to (default: all of them).
        A stream batch that fails is retried after `retry_backoff_seconds`, doubling up to
        `max_retry_backoff_seconds`; a shard is read every `stream_poll_seconds` while records
        come, and up to 4 times less often while it is idle. A failed SNS, S3 or EventBridge
        event is tried again after `async_retry_seconds` (Lambda
        waits a minute or two; locally, seconds keep the loop short).

        `report_batch_item_failures`: which SQS and stream mappings have
        `FunctionResponseTypes: ["ReportBatchItemFailures"]`, so that a handler's
        `batchItemFailures` answer counts. False (the default, as Chalice deploys them): none;
        True: all; a collection of handler names (or one name): those handlers' mappings."""
        self._app = app
        self._client = client
        self._region = region
        self._on_invocation = on_invocation or (lambda inv: print(inv.as_log_line(), flush=True))
        self._idle_wait = idle_wait_seconds
        self._handlers = None if handlers is None else set(handlers)
        self.retry_backoff = (retry_backoff_seconds, max_retry_backoff_seconds)
        self.stream_poll_seconds = stream_poll_seconds
        self.async_retry_seconds = async_retry_seconds
        self._report_item_failures: bool | frozenset[str]
        if isinstance(report_batch_item_failures, bool):
            self._report_item_failures = report_batch_item_failures
        elif isinstance(report_batch_item_failures, str):  # one name, not its letters
            self._report_item_failures = frozenset([report_batch_item_failures])
        else:
            self._report_item_failures = frozenset(report_batch_item_failures)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pollers: list[Any] = []
        self.unsupported: list[str] = []
        self._account_id: str | None = None
        #: (handler, stream ARN, shard id) -> the sequence number of the last record handled.
        self.checkpoints: dict[tuple[str, str, str], str] = {}

    def start(self) -> None:
        from chalice.app import (
            CloudWatchEventConfig,
            DynamoDBEventConfig,
            KinesisEventConfig,
            S3EventConfig,
            ScheduledEventConfig,
            SNSEventConfig,
            SQSEventConfig,
        )

        for source in self._app.event_sources:
            if self._handlers is not None and source.name not in self._handlers:
                continue
            poller: Any
            if isinstance(source, SQSEventConfig):
                poller = SqsPoller(self, source)
            elif isinstance(source, SNSEventConfig):
                poller = SnsSubscription(self, source)
            elif isinstance(source, S3EventConfig):
                poller = S3Notification(self, source)
            elif isinstance(source, CloudWatchEventConfig):
                poller = EventBridgeRule(self, source)
            elif isinstance(source, ScheduledEventConfig):
                poller = ScheduledJob(self, source)
            elif isinstance(source, KinesisEventConfig):
                poller = KinesisPoller(self, source)
            elif isinstance(source, DynamoDBEventConfig):
                poller = DynamoDBStreamPoller(self, source)
            else:
                self.unsupported.append(f"{source.name} ({type(source).__name__})")
                continue
            thread = threading.Thread(target=poller.run, name=f"events:{source.name}", daemon=True)
            self._pollers.append(poller)
            self._threads.append(thread)
            thread.start()
        if self.unsupported:
            log.warning("not delivered locally yet: %s", ", ".join(self.unsupported))
        if isinstance(self._report_item_failures, frozenset):
            batched = {
                source.name
                for source in self._app.event_sources
                if isinstance(source, SQSEventConfig | KinesisEventConfig | DynamoDBEventConfig)
            }
            unknown = sorted(self._report_item_failures - batched)
            if unknown:
                log.warning("report_batch_item_failures names no SQS or stream handler: %s",
                            ", ".join(unknown))  # fmt: skip

    def wait_until_ready(self, timeout: float = 10.0) -> bool:
        """Wait until every stream poller has found its stream and taken its starting
        positions (from then on, `LATEST` means "written after now"), and every SNS, S3 and
        EventBridge source sends to the runtime's queue (from then on, no event is missed).
        False on timeout."""
        deadline = time.monotonic() + timeout
        for poller in self._pollers:
            ready = getattr(poller, "ready", None)
            if ready is not None and not ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

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
        batch = len(event["Records"]) if "Records" in event else 1  # EventBridge: one event
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

    def reports_item_failures(self, name: str) -> bool:
        """Whether handler `name`'s mapping has ReportBatchItemFailures, so that Lambda reads
        its `batchItemFailures` answer."""
        if isinstance(self._report_item_failures, bool):
            return self._report_item_failures
        return name in self._report_item_failures

    def item_failures_ignored(self, invocation: Invocation, reported: list[str], noun: str) -> None:
        """A handler whose mapping has no ReportBatchItemFailures answered with
        `batchItemFailures` (identifiers `reported`): Lambda takes that for a success, and
        the `noun`s (messages, records) it names are lost. Says so, in the outcome and in a
        warning."""
        count = len(reported)
        lost = f"{count} {noun if count == 1 else noun + 's'}"
        invocation.failed_ids = reported
        invocation.outcome = (
            f"ok, but batchItemFailures ignored: {lost} would be lost in AWS "
            "(the mapping has no ReportBatchItemFailures)"
        )
        log.warning("%s returned batchItemFailures %s, which Lambda ignores on a mapping "
                    "without ReportBatchItemFailures (Chalice never sets it): the whole batch "
                    "counts as handled, and in AWS %s would be lost",
                    invocation.handler, reported, lost)  # fmt: skip

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
        event = self._scheduled_event(name, at or clock.now())
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
        if self._account_id is None:
            try:
                self._account_id = str(self._client("sts").get_caller_identity()["Account"])
            except Exception:
                return "000000000000"
        return self._account_id


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


class ScheduledJob:
    """Fires a scheduled job by its expression until the runtime stops."""

    ATTEMPTS = 3  # EventBridge invokes asynchronously: the first try and two retries

    def __init__(
        self,
        runtime: EventRuntime,
        source: Any,
        clock: Callable[[], datetime] = clock.now,
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


# --- asynchronous invocation ----------------------------------------------------------------


class AsyncDelivery:
    """Lambda's asynchronous invocation, for the sources that push events to a function (SNS,
    S3, EventBridge): the source sends its events to a queue of the runtime's own,
    `local-events-<handler>`; each event is one invocation. A failing one is tried again after
    `async_retry_seconds`, 3 times in all (the queue's receive count counts the attempts);
    then the message moves to `local-events-<handler>-failed` (an on-failure destination),
    never dropped. Until the source can be connected to the queue (a bucket not created yet),
    it is tried again every SETUP_RETRY_SECONDS."""

    SOURCE = ""
    ATTEMPTS = 3  # the first try and two retries
    #: How long a message stays hidden while its handler runs: longer than the 60 s the
    #: runtime gives a handler, so that no message comes back while it is being handled.
    HANDLING_SECONDS = 90
    SETUP_RETRY_SECONDS = 2.0

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime._client("sqs")
        self.queue_name = f"local-events-{source.name}"
        self.ready = threading.Event()
        self._queue = self._failed = ""
        #: MessageId -> the events built from it: a retry delivers the very same events.
        self._pending: dict[str, list[dict[str, Any]]] = {}

    @property
    def name(self) -> str:
        return str(self._source.name)

    # What each kind of source does its own way.

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        """Have the source send its events to the queue (again: it may be connected)."""
        raise NotImplementedError

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The Lambda events one message of the queue holds, each one invocation ([]: none)."""
        raise NotImplementedError

    # The queue.

    def run(self) -> None:
        if not self._set_up():
            return
        stopping = self._runtime.stopping
        while not stopping.is_set():
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self._queue,
                    MaxNumberOfMessages=1,  # one at a time: none waits, hidden, for another
                    WaitTimeSeconds=self._runtime._idle_wait,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                for message in messages:
                    self._deliver(message)
            except Exception:
                log.exception("%s: delivery failed; retrying", self.name)
                stopping.wait(1)

    def _set_up(self) -> bool:
        warned = False
        while not self._runtime.stopping.is_set():
            try:
                self._failed = self._create_queue(f"{self.queue_name}-failed", {})
                self._queue = self._create_queue(
                    self.queue_name, {"VisibilityTimeout": str(self.HANDLING_SECONDS)}
                )
                arn = self._sqs.get_queue_attributes(
                    QueueUrl=self._queue, AttributeNames=["QueueArn"]
                )["Attributes"]["QueueArn"]
                self._connect(self._queue, arn)
            except Exception as exc:
                report = log.debug if warned else log.warning
                report("%s: its events cannot be delivered yet (%s); trying again every %g s",
                       self.name, exc, self.SETUP_RETRY_SECONDS)  # fmt: skip
                warned = True
                self._runtime.stopping.wait(self.SETUP_RETRY_SECONDS)
                continue
            self.ready.set()
            return True
        return False

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        """The queue `name`, with `attributes` (also if it exists with others)."""
        try:
            return str(self._sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        except Exception as exc:
            if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
        url = str(self._sqs.get_queue_url(QueueName=name)["QueueUrl"])
        if attributes:
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

    def _allow(self, queue_url: str, queue_arn: str, service: str, source_arn: str) -> None:
        """The queue policy that lets `service` send the events of `source_arn`, as AWS
        requires of a queue an SNS topic, an S3 bucket or an EventBridge rule sends to."""
        statement = {
            "Sid": "local-events",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self._sqs.set_queue_attributes(
            QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
        )

    def _deliver(self, message: dict[str, Any]) -> None:
        """Invokes the handler with each event of `message`; the message is done when all
        succeeded, tried again (from its first event) after a failure, and moved to the failed
        queue after the last attempt's failure."""
        key = message["MessageId"]
        if key not in self._pending:
            self._pending[key] = self._events(message)
        attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        for event in self._pending[key]:
            result, invocation = self._runtime.invoke(self.name, self.SOURCE, event)
            if not isinstance(result, Exception):
                self._runtime.report(invocation)
                continue
            if attempt < self.ATTEMPTS:
                retry = self._runtime.async_retry_seconds
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=retry,
                )
                invocation.outcome += (
                    f" (attempt {attempt} of {self.ATTEMPTS}; retried in {retry} s)"
                )
                self._runtime.report(invocation)
                return
            self._sqs.send_message(QueueUrl=self._failed, MessageBody=message["Body"])
            invocation.outcome += f" (attempt {attempt}; moved to {self.queue_name}-failed)"
            self._runtime.report(invocation)
            break
        self._sqs.delete_message(QueueUrl=self._queue, ReceiptHandle=message["ReceiptHandle"])
        self._pending.pop(key, None)


class SnsSubscription(AsyncDelivery):
    """A topic's messages, through the runtime's queue subscribed to the topic: one record
    per invocation, in Lambda's SNS event shape."""

    SOURCE = "aws:sns"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._sns = runtime._client("sns")
        self._subscription = ""

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        topic = self._source.topic
        if not topic.startswith("arn:"):
            topic = self._sns.create_topic(Name=topic)["TopicArn"]  # finds the existing one
        self._allow(queue_url, queue_arn, "sns.amazonaws.com", topic)
        self._subscription = self._sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True
        )["SubscriptionArn"]

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        envelope = json.loads(message["Body"])
        return [{"Records": [sns_record(envelope, self._subscription)]}]


#: One process's handlers on one bucket change its notification configuration one at a time.
_BUCKET_CONFIGURATION = threading.Lock()


class S3Notification(AsyncDelivery):
    """A bucket's object events, through a QueueConfiguration added to (never replacing) the
    bucket's notification configuration: one record per invocation, in S3's shape."""

    SOURCE = "aws:s3"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._s3 = runtime._client("s3")

    def configuration(self, queue_arn: str) -> dict[str, Any]:
        """The QueueConfiguration of the handler's events, prefix and suffix."""
        mine: dict[str, Any] = {
            "Id": self.queue_name,
            "QueueArn": queue_arn,
            "Events": list(self._source.events),
        }
        rules = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", self._source.prefix), ("suffix", self._source.suffix))
            if value
        ]
        if rules:
            mine["Filter"] = {"Key": {"FilterRules": rules}}
        return mine

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        bucket = self._source.bucket
        self._allow(queue_url, queue_arn, "s3.amazonaws.com", f"arn:aws:s3:::{bucket}")
        mine = self.configuration(queue_arn)
        with _BUCKET_CONFIGURATION:
            current = self._s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)
            queues = current.get("QueueConfigurations") or []
            if mine in queues:
                return
            others = [q for q in queues if q.get("Id") != self.queue_name]
            current["QueueConfigurations"] = [*others, mine]
            self._s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=current
            )

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        body = json.loads(message["Body"])
        if body.get("Event") == "s3:TestEvent":  # sent when a configuration is put
            return []
        account = self._runtime._account()
        return [{"Records": [s3_record(r, account)]} for r in body.get("Records") or []]


class EventBridgeRule(AsyncDelivery):
    """The default bus's events that match the handler's pattern, through a rule
    `local-events-<handler>` that targets the runtime's queue: each event as it is."""

    SOURCE = "aws.events"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._events_client = runtime._client("events")

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        rule = self._events_client.put_rule(
            Name=self.queue_name,
            EventPattern=json.dumps(self._source.event_pattern),
            State="ENABLED",
            Description=f"The local event runtime: events for {self.name}",
        )["RuleArn"]
        self._allow(queue_url, queue_arn, "events.amazonaws.com", rule)
        self._events_client.put_targets(
            Rule=self.queue_name, Targets=[{"Id": "local-events", "Arn": queue_arn}]
        )

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        event = json.loads(message["Body"])
        event.setdefault("account", self._runtime._account())  # moto's targets leave it out
        return [event]


# --- streams ------------------------------------------------------------------------------


@dataclass
class StreamShard:
    shard_id: str
    #: ParentShardId and AdjacentParentShardId (a merge has two parents).
    parents: tuple[str, ...] = ()
    #: The last sequence number of a closed shard; None while it is open.
    ending: str | None = None


class StreamPoller:
    """One stream event source mapping: finds the stream, runs a `ShardReader` per shard (a
    shard's children only once the shard is read to its end), and lists the shards again
    every RELIST_SECONDS, or as soon as a shard ends, to find new ones."""

    SOURCE = ""
    MAX_RECORDS = 1
    RELIST_SECONDS = 10.0
    SETUP_RETRY_SECONDS = 2.0

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self.ready = threading.Event()
        self.arn = ""
        self._shards: dict[str, StreamShard] = {}
        self._latest: dict[str, str] = {}  # shard id -> its LATEST iterator, taken at start
        self._finished: set[str] = set()
        self._readers: dict[str, threading.Thread] = {}
        self._changed = threading.Event()
        self._lock = threading.Lock()

    # What each kind of stream does its own way.

    def _find_stream(self) -> str:
        raise NotImplementedError

    def _list_shards(self) -> list[StreamShard]:
        raise NotImplementedError

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        raise NotImplementedError

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        """One GetRecords: the records, the next iterator (None at the end of a closed
        shard) and how many milliseconds the reader is behind the shard's newest record."""
        raise NotImplementedError

    def sequence_number(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        raise NotImplementedError

    # The shards.

    @property
    def name(self) -> str:
        return str(self._source.name)

    def run(self) -> None:
        if not self._set_up():
            return
        listed = time.monotonic()
        self._start_readers()
        stopping = self._runtime.stopping
        while not stopping.wait(0.1):
            if self._changed.is_set() or time.monotonic() - listed >= self.RELIST_SECONDS:
                self._changed.clear()
                listed = time.monotonic()
                try:
                    self._update_shards(self._list_shards())
                except Exception:
                    log.warning("%s: could not list the shards of %s", self.name, self.arn)
                    log.debug("listing failed:\n%s", traceback.format_exc())
                self._start_readers()
        for thread in list(self._readers.values()):
            thread.join()

    def _set_up(self) -> bool:
        """Find the stream and its shards, and take the LATEST positions: until it works."""
        warned = False
        while not self._runtime.stopping.is_set():
            try:
                self.arn = self._find_stream()
                shards = self._list_shards()
                latest: dict[str, str] = {}
                closed: set[str] = set()
                if self._source.starting_position == "LATEST":
                    for shard in shards:
                        if shard.ending is None:
                            latest[shard.shard_id] = self._iterator(shard.shard_id, "LATEST")
                        else:  # closed before we started: nothing in it is "after now"
                            closed.add(shard.shard_id)
            except Exception as exc:
                report = log.debug if warned else log.warning
                report("%s: its stream cannot be read yet (%s); trying again every %g s",
                       self.name, exc, self.SETUP_RETRY_SECONDS)  # fmt: skip
                warned = True
                self._runtime.stopping.wait(self.SETUP_RETRY_SECONDS)
                continue
            self._update_shards(shards)
            with self._lock:
                self._latest = latest
                self._finished |= closed
            self.ready.set()
            return True
        return False

    def _update_shards(self, shards: list[StreamShard]) -> None:
        with self._lock:
            self._shards = {shard.shard_id: shard for shard in shards}

    def _start_readers(self) -> None:
        with self._lock:
            for shard_id, shard in sorted(self._shards.items()):
                if shard_id in self._readers or shard_id in self._finished:
                    continue
                if any(p in self._shards and p not in self._finished for p in shard.parents):
                    continue  # its parents first
                iterator = self._latest.pop(shard_id, None)
                # A shard found later holds only records written after we started.
                start = "TRIM_HORIZON" if iterator is None else "LATEST"
                reader = ShardReader(self, shard_id, start, iterator)
                thread = threading.Thread(
                    target=reader.run, name=f"events:{self.name}:{shard_id}", daemon=True
                )
                self._readers[shard_id] = thread
                thread.start()

    def shard_finished(self, shard_id: str) -> None:
        with self._lock:
            self._finished.add(shard_id)
        self._changed.set()

    def read_to_its_end(self, shard_id: str, last_read: str | None) -> bool:
        """For emulators that never end a closed shard's iterator: whether the listing says
        the shard is closed and nothing after `last_read` is left in it."""
        with self._lock:
            shard = self._shards.get(shard_id)
        if shard is None or shard.ending is None:
            return False
        return last_read is None or sequence_key(last_read) >= sequence_key(shard.ending)

    def iterator_from(self, shard_id: str, start: str, last_read: str | None) -> str:
        if last_read is not None:
            return self._iterator(shard_id, "AFTER_SEQUENCE_NUMBER", last_read)
        return self._iterator(shard_id, start)


class ShardReader:
    """One shard for one handler: batches in order, each retried until it succeeds."""

    def __init__(
        self, poller: StreamPoller, shard_id: str, start: str, iterator: str | None
    ) -> None:
        self._poller = poller
        self._runtime = poller._runtime
        self._source = poller._source
        self.shard_id = shard_id
        self._start = start  # where to begin again while nothing is read yet
        self._iterator = iterator
        self._last_read: str | None = None
        self._buffer: list[dict[str, Any]] = []  # read, not handled yet, in shard order
        self._idle_reads = 0  # empty reads in a row: they space out (IDLE_BACKOFF_STEPS)
        # After a failure: the sizes of the parts of the buffer's head still to retry, each
        # as a batch of its own (the halves of a failed batch, and their halves).
        self._spans: list[int] = []
        self._ended = False
        self._delay = self._runtime.retry_backoff[0]

    def run(self) -> None:
        stopping = self._runtime.stopping
        while not stopping.is_set():
            try:
                batch = self._buffer[: self._spans[0]] if self._spans else self._collect()
                if stopping.is_set():
                    break
                if batch:
                    self._deliver(batch)
                elif self._ended:
                    self._poller.shard_finished(self.shard_id)
                    return
            except Exception:
                log.exception("%s: shard %s failed; trying again", self._poller.name, self.shard_id)
                stopping.wait(1)

    def _collect(self) -> list[dict[str, Any]]:
        """One batch: wait for a first record, then fill the batch for up to the window."""
        size = self._source.batch_size
        window = self._source.maximum_batching_window_in_seconds
        poll = self._runtime.stream_poll_seconds
        stopping = self._runtime.stopping
        deadline: float | None = None
        while len(self._buffer) < size and not self._ended and not stopping.is_set():
            fetched, behind = self._fetch(size - len(self._buffer))
            if self._buffer and deadline is None:
                deadline = time.monotonic() + window
            if deadline is not None and time.monotonic() >= deadline:
                break
            if fetched or behind:
                self._idle_reads = 0
            else:
                # An idle shard is read less often (up to 4 x `poll`): every read costs the
                # API's process and the emulator CPU that requests then wait for.
                idle = poll * 2 ** min(self._idle_reads, IDLE_BACKOFF_STEPS)
                self._idle_reads += 1
                wait = idle if deadline is None else min(poll, deadline - time.monotonic())
                stopping.wait(max(0.0, wait))
        return self._buffer[:size]

    def _fetch(self, limit: int) -> tuple[int, bool]:
        poller = self._poller
        try:
            if self._iterator is None:
                self._iterator = poller.iterator_from(self.shard_id, self._start, self._last_read)
            records, following, behind = poller._read(
                self._iterator, min(limit, poller.MAX_RECORDS)
            )
        except Exception as exc:
            code = error_code(exc)
            if code == "TrimmedDataAccessException":
                log.warning("%s: records of shard %s after %s were trimmed; reading from the "
                            "oldest left", poller.name, self.shard_id, self._last_read)  # fmt: skip
                self._last_read, self._start = None, "TRIM_HORIZON"
            elif code != "ExpiredIteratorException":
                log.warning("%s: reading shard %s failed (%s); trying again",
                            poller.name, self.shard_id, exc)  # fmt: skip
                self._runtime.stopping.wait(max(1.0, self._runtime.stream_poll_seconds))
            self._iterator = None  # taken again, after the last record read
            return 0, False
        self._buffer.extend(records)
        if records:
            self._last_read = poller.sequence_number(records[-1])
        self._iterator = following
        if following is None:
            self._ended = True
        elif not records and not behind:
            self._ended = poller.read_to_its_end(self.shard_id, self._last_read)
        return len(records), behind > 0

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        poller = self._poller
        numbers = [poller.sequence_number(record) for record in batch]
        event = {"Records": [poller.lambda_record(record, self.shard_id) for record in batch]}
        result, invocation = self._runtime.invoke(self._source.name, poller.SOURCE, event)
        if isinstance(result, Exception):
            # BisectBatchOnFunctionError: the halves, each retried as a batch, first one first.
            halves = [len(batch) // 2, len(batch) - len(batch) // 2] if len(batch) > 1 else [1]
            if self._spans:
                self._spans.pop(0)
            self._spans[:0] = halves
            split = f", split into {halves[0]} + {halves[1]}" if len(halves) == 2 else ""
            invocation.failed_ids = numbers
            invocation.outcome += f" (retried in {self._delay:g} s{split})"
            self._runtime.report(invocation)
            self._back_off()
            return
        first_failed, reported = stream_batch_failures(result, numbers)
        if reported and not self._runtime.reports_item_failures(self._source.name):
            # A success, whatever the answer: the checkpoint moves past the whole batch.
            self._runtime.item_failures_ignored(invocation, reported, "record")
            first_failed = None
        done = len(batch) if first_failed is None else first_failed
        if done:
            del self._buffer[:done]
            key = (self._source.name, poller.arn, self.shard_id)
            self._runtime.checkpoints[key] = numbers[done - 1]
            self._delay = self._runtime.retry_backoff[0]
            if self._spans:
                self._spans[0] -= done
                if self._spans[0] <= 0:
                    self._spans.pop(0)
        if first_failed is None:
            self._runtime.report(invocation)
            return
        invocation.failed_ids = reported
        invocation.outcome = (
            f"partial: {len(reported)} of {len(batch)} failed "
            f"(retried from sequence number {numbers[first_failed]} in {self._delay:g} s)"
        )
        self._runtime.report(invocation)
        self._back_off()

    def _back_off(self) -> None:
        self._runtime.stopping.wait(self._delay)
        self._delay = min(self._delay * 2, self._runtime.retry_backoff[1])


class KinesisPoller(StreamPoller):
    SOURCE = "aws:kinesis"
    MAX_RECORDS = KINESIS_MAX_RECORDS

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._kinesis = runtime._client("kinesis")
        stream = str(source.stream)
        self._stream = stream.rsplit("/", 1)[1] if stream.startswith("arn:") else stream
        self._role_arn = ""

    def _find_stream(self) -> str:
        summary = self._kinesis.describe_stream_summary(StreamName=self._stream)
        app_name = getattr(self._runtime._app, "app_name", "app")
        self._role_arn = f"arn:aws:iam::{self._runtime._account()}:role/{app_name}-local"
        return str(summary["StreamDescriptionSummary"]["StreamARN"])

    def _list_shards(self) -> list[StreamShard]:
        shards: list[StreamShard] = []
        page = self._kinesis.list_shards(StreamName=self._stream)
        while True:
            shards += [stream_shard(shard) for shard in page.get("Shards", [])]
            if not page.get("NextToken"):
                return shards
            page = self._kinesis.list_shards(NextToken=page["NextToken"])

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        position = {"StartingSequenceNumber": after} if after is not None else {}
        return str(
            self._kinesis.get_shard_iterator(
                StreamName=self._stream, ShardId=shard_id, ShardIteratorType=kind, **position
            )["ShardIterator"]
        )

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        page = self._kinesis.get_records(ShardIterator=iterator, Limit=limit)
        behind = int(page.get("MillisBehindLatest") or 0)
        return page.get("Records", []), page.get("NextShardIterator"), behind

    def sequence_number(self, record: dict[str, Any]) -> str:
        return str(record["SequenceNumber"])

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        return kinesis_lambda_record(
            record, shard_id, self.arn, self._runtime._region, self._role_arn
        )


class DynamoDBStreamPoller(StreamPoller):
    SOURCE = "aws:dynamodb"
    MAX_RECORDS = DYNAMODB_STREAMS_MAX_RECORDS

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._streams = runtime._client("dynamodbstreams")
        self._dynamodb = runtime._client("dynamodb")

    def _find_stream(self) -> str:
        """The source's stream ARN; or, if that is not the table's stream (any more), the
        table's current one."""
        arn = str(self._source.stream_arn)
        try:
            found = self._streams.describe_stream(StreamArn=arn, Limit=1)["StreamDescription"]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            found = None
        # AWS does not know an ARN with another label; moto answers with the current label.
        if found is not None and found.get("StreamLabel") in (None, arn.rsplit("/", 1)[-1]):
            return arn
        table = dynamodb_table_of(arn)
        current = self._dynamodb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
        if not current:
            raise LookupError(f"table {table} has no stream")
        log.warning("%s: no stream %s; reading table %s's current stream %s instead",
                    self.name, arn, table, current)  # fmt: skip
        return str(current)

    def _list_shards(self) -> list[StreamShard]:
        shards: list[StreamShard] = []
        after: dict[str, str] = {}
        while True:
            found = self._streams.describe_stream(StreamArn=self.arn, **after)
            shards += [stream_shard(shard) for shard in found["StreamDescription"]["Shards"]]
            last = found["StreamDescription"].get("LastEvaluatedShardId")
            if not last:
                return shards
            after = {"ExclusiveStartShardId": last}

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        position = {"SequenceNumber": after} if after is not None else {}
        return str(
            self._streams.get_shard_iterator(
                StreamArn=self.arn, ShardId=shard_id, ShardIteratorType=kind, **position
            )["ShardIterator"]
        )

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        page = self._streams.get_records(ShardIterator=iterator, Limit=limit)
        return page.get("Records", []), page.get("NextShardIterator"), 0

    def sequence_number(self, record: dict[str, Any]) -> str:
        return str(record["dynamodb"]["SequenceNumber"])

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        return dynamodb_lambda_record(record, self.arn, self._runtime._region)


def stream_shard(shard: dict[str, Any]) -> StreamShard:
    """A shard as ListShards (Kinesis) or DescribeStream (both) describe it."""
    parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
    return StreamShard(
        shard["ShardId"],
        tuple(parent for parent in parents if parent),
        (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber"),
    )


def sequence_key(number: str) -> int:
    """Kinesis and DynamoDB sequence numbers are decimal strings of different lengths."""
    return int(number)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code", ""))
    return ""


def dynamodb_table_of(stream_arn: str) -> str:
    """`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` -> NAME."""
    parts = stream_arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 else []
    if len(resource) < 2 or resource[0] != "table" or not resource[1]:
        raise ValueError(f"not a DynamoDB stream ARN: {stream_arn}")
    return resource[1]


def stream_batch_failures(result: Any, sequence_numbers: list[str]) -> tuple[int | None, list[str]]:
    """A stream handler's `batchItemFailures`, as Lambda reads them with ReportBatchItemFailures:
    where in the batch to resume (the lowest failed sequence number) and the identifiers
    reported; `(None, [])` if the whole batch succeeded. As Lambda does, an identifier that is
    missing, empty or not a record of the batch fails the whole batch."""
    reported = reported_identifiers(result)
    if not reported:
        return None, []
    position = {number: index for index, number in enumerate(sequence_numbers)}
    return min(position.get(identifier, 0) for identifier in reported), reported


def kinesis_lambda_record(
    record: dict[str, Any], shard_id: str, stream_arn: str, region: str, role_arn: str
) -> dict[str, Any]:
    """A Kinesis GetRecords record as Lambda puts it in an event."""
    arrived = record["ApproximateArrivalTimestamp"]
    data = record["Data"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data,
            "approximateArrivalTimestamp": (
                arrived.timestamp() if isinstance(arrived, datetime) else float(arrived)
            ),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": role_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def dynamodb_lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB Streams GetRecords record (as boto3 parses it) as Lambda puts it in an
    event: epoch seconds for the datetime, AttributeValue JSON for the images."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = created.timestamp()
    for image in ("Keys", "NewImage", "OldImage"):
        if image in change:
            change[image] = {name: attribute_value_json(v) for name, v in change[image].items()}
    lambda_record = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion") or region,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # deletions by TTL
        lambda_record["userIdentity"] = record["userIdentity"]
    return lambda_record


def attribute_value_json(value: Any) -> Any:
    """An AttributeValue as boto3 parsed it, back in its JSON form (binary as base64)."""
    if not isinstance(value, dict):
        return value
    wire: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == "B":
            wire[kind] = _base64(inner)
        elif kind == "BS":
            wire[kind] = [_base64(item) for item in inner]
        elif kind == "M":
            wire[kind] = {name: attribute_value_json(item) for name, item in inner.items()}
        elif kind == "L":
            wire[kind] = [attribute_value_json(item) for item in inner]
        else:
            wire[kind] = inner
    return wire


def _base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


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


_sequencer_lock = threading.Lock()
_last_sequencer = [0]


def s3_sequencer() -> str:
    """A new `sequencer`: hexadecimal, greater than every one before it (S3's are greater for
    the later events of a key)."""
    with _sequencer_lock:
        _last_sequencer[0] = max(_last_sequencer[0] + 1, time.time_ns())
        return f"{_last_sequencer[0]:018X}"


def s3_record(record: dict[str, Any], account: str) -> dict[str, Any]:
    """An S3 event record (as an emulator sends it to a queue) as S3 puts it in the event of
    the function it invokes: the key URL-encoded as S3 encodes it (form encoding, a space as
    `+`, `/` kept), and the members S3 sends that an emulator may leave out (moto: the
    `sequencer`, the identities, the request's parameters and response elements)."""
    record = copy.deepcopy(record)
    s3 = record.setdefault("s3", {})
    s3.setdefault("bucket", {}).setdefault("ownerIdentity", {"principalId": account})
    found = s3.setdefault("object", {})
    if isinstance(found.get("key"), str):
        found["key"] = quote_plus(unquote_plus(found["key"]), safe="/")
    found.setdefault("sequencer", s3_sequencer())
    record.setdefault("userIdentity", {"principalId": f"AWS:{account}"})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    request = {
        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
        "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes * 3).decode("ascii"),
    }
    record.setdefault("responseElements", request)
    return record


def reported_identifiers(result: Any) -> list[str]:
    """Every entry of a handler's `batchItemFailures` answer, as its identifier ("" where it
    has none); [] if it reports no failure."""
    items = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not items:
        return []
    identifiers: list[str] = []
    for item in items if isinstance(items, list) else [items]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        identifiers.append("" if identifier is None else str(identifier))
    return identifiers


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
