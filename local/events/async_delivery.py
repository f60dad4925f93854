"""Lambda's asynchronous invocation, shared by the sources that push events to a function
(SNS in sns.py, S3 in s3.py, EventBridge in eventbridge.py), one event per invocation.

The runtime has each source send to a queue of its own, `local-events-<handler>`, and reads
from it. As with Lambda's asynchronous invocation, a failing event is tried 3 times in all
(seconds apart, not minutes). Then, as Lambda does, Lambda's on-failure record of the event
(`requestContext`, `requestPayload`: the event, `responseContext`, `responsePayload`: the
error) goes to the function's on-failure destination, as infra/functions.json declares it
(`EventInvokeConfig`); an event no record holds (no destination: AWS would drop it) is
kept in `local-events-<handler>-failed` instead, never dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core import clock
from chalicelib.core.aws import error_code
from local.events.core import EventRuntime, retry_until_done
from local.events.stream_failures import async_destination, function_arn, send_on_failure

log = logging.getLogger(__name__)


class AsyncDelivery:
    """Lambda's asynchronous invocation, for the sources that push events to a function (SNS,
    S3, EventBridge): the source sends its events to a queue of the runtime's own,
    `local-events-<handler>`; each event is one invocation, with attempts of its own (as in
    Lambda, where each is a separate asynchronous invocation). A failing one is tried again
    after `EventRuntime.async_retry_delay` (past the function's timeout, so that what the
    failed attempt left in progress has expired, as after Lambda's minutes), 3 times in all;
    then its on-failure record (its own error and attempt count) goes to the function's
    destination (infra/functions.json). The events no record holds (the function has no
    destination, or it refused the record) go to `local-events-<handler>-failed`: the
    source's message itself if none of its events was recorded, else `{"events": [...]}` with
    only those, so that no event is kept twice. Never dropped. Until the source can be
    connected to the queue (a bucket not created yet), it is tried again every
    SETUP_RETRY_SECONDS.

    A source's subclass says how it connects to the queue (`_connect`) and which events a
    message of the queue holds (`_events`)."""

    SOURCE = ""
    ATTEMPTS = 3  # the first try and two retries
    #: How long a message stays hidden while its handler runs, at least: longer than the
    #: function's timeout (`_connect_queues`), so that none comes back while it is handled.
    HANDLING_SECONDS = 90
    SETUP_RETRY_SECONDS = 2.0

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime.client("sqs")
        self.queue_name = f"local-events-{source.name}"
        self.ready = threading.Event()
        self._queue = self._failed = ""
        #: MessageId -> the events built from it and how far each got: a retry delivers the
        #: very same events, those not done yet.
        self._pending: dict[str, _Pending] = {}
        #: Where an event that failed every attempt goes, as the deploy configures it.
        self.destination = async_destination(self.name)

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
                    WaitTimeSeconds=self._runtime.idle_wait_seconds,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                for message in messages:
                    self._deliver(message)
            except Exception:
                log.exception("%s: delivery failed; retrying", self.name)
                stopping.wait(1)

    def _set_up(self) -> bool:
        problem = f"{self.name}: its events cannot be delivered yet"
        if not retry_until_done(self._runtime, self._connect_queues, problem,
                                self.SETUP_RETRY_SECONDS):  # fmt: skip
            return False
        self.ready.set()
        return True

    def _connect_queues(self) -> None:
        self._failed = self._create_queue(f"{self.queue_name}-failed", {})
        hidden = max(self.HANDLING_SECONDS, self._runtime.settings(self.name)[0] + 30)
        self._queue = self._create_queue(self.queue_name, {"VisibilityTimeout": str(hidden)})
        arn = self._sqs.get_queue_attributes(QueueUrl=self._queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._connect(self._queue, arn)

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
        """Invokes the handler with each event of `message` not done yet. One that fails is
        tried again later (the message made visible after the retry delay) until its last
        attempt, then recorded (`_give_up`). The message is deleted once every event
        succeeded or was given up, the events no record holds kept in the failed queue."""
        key = message["MessageId"]
        pending = self._pending.get(key)
        if pending is None:
            # New, or taken again after a restart: the receive count is all that is known.
            received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            events = self._events(message)
            pending = self._pending[key] = _Pending(events, [received - 1] * len(events))
        retry = False
        delay = self._runtime.async_retry_delay(self.name)
        for index in list(pending.left):
            result, invocation = self._runtime.invoke(self.name, self.SOURCE, pending.events[index])
            if not isinstance(result, Exception):
                pending.left.remove(index)
                self._runtime.report(invocation)
                continue
            pending.failures[index] += 1
            attempt = pending.failures[index]
            if attempt < self.ATTEMPTS:
                retry = True
                invocation.outcome += (f" (attempt {attempt} of {self.ATTEMPTS}; retried in "
                                       f"{delay} s)")  # fmt: skip
            else:
                pending.left.remove(index)
                invocation.outcome += (
                    f" (attempt {attempt}; {self._give_up(pending, index, result)})"
                )
            self._runtime.report(invocation)
        if retry:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=delay,
            )
            return
        if pending.unrecorded:
            self._keep(message, pending)
        self._sqs.delete_message(QueueUrl=self._queue, ReceiptHandle=message["ReceiptHandle"])
        self._pending.pop(key, None)

    def _give_up(self, pending: _Pending, index: int, error: Exception) -> str:
        """After event `index`'s last attempt: its on-failure record (its own error and
        attempts) to the function's destination; if there is none or it refused the record,
        the event is kept for the failed queue. Says where it went."""
        attempts = pending.failures[index]
        event = pending.events[index]
        if self.destination is None:
            pending.unrecorded.append(index)
            return f"moved to {self.queue_name}-failed"
        if not send_async_failure(self._runtime, self.name, event, error, attempts):
            pending.unrecorded.append(index)
            return f"moved to {self.queue_name}-failed (the destination refused it)"
        return f"on-failure record sent to {self.destination.name}"

    def _keep(self, message: dict[str, Any], pending: _Pending) -> None:
        """The events of `message` no on-failure record holds, to the failed queue: the
        message itself if that is all of them, else only those events."""
        if len(pending.unrecorded) == len(pending.events):
            body = message["Body"]
        else:
            body = json.dumps({"events": [pending.events[i] for i in sorted(pending.unrecorded)]})
        self._sqs.send_message(QueueUrl=self._failed, MessageBody=body)
        pending.unrecorded.clear()


@dataclass
class _Pending:
    """The events of one message of the queue, and how far each got."""

    events: list[dict[str, Any]]
    failures: list[int]  # failed attempts, per event
    left: list[int] = field(default_factory=list)  # the events neither done nor given up
    unrecorded: list[int] = field(default_factory=list)  # given up, with no record sent

    def __post_init__(self) -> None:
        self.left = list(range(len(self.events)))


def async_on_failure_record(
    function: str, event: Any, error: Exception, attempts: int
) -> dict[str, Any]:
    """Lambda's on-failure record for an asynchronous invocation that failed `attempts`
    times ("Capturing records of Lambda asynchronous invocations"): the event is
    `requestPayload`, the Python runtime's error body `responsePayload`."""
    frames = traceback.format_tb(error.__traceback__)
    return {
        "version": "1.0",
        "timestamp": clock.timestamp(timespec="milliseconds"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"{function}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": frames,
        },
    }


def send_async_failure(
    runtime: EventRuntime, handler: str, event: Any, error: Exception, attempts: int
) -> bool:
    """Sends the on-failure record of `event` to `handler`'s destination (functions.json);
    False if it has none or the record could not be sent (then logged whole)."""
    destination = async_destination(handler)
    if destination is None:
        return False
    record = async_on_failure_record(function_arn(runtime, handler), event, error, attempts)
    return send_on_failure(runtime, destination, record)
