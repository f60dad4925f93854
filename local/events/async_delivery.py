"""Lambda's asynchronous invocation, shared by the sources that push events to a function
(SNS in sns.py, S3 in s3.py, EventBridge in eventbridge.py), one event per invocation.

The runtime has each source send to a queue of its own, `local-events-<handler>`, and reads
from it. As with Lambda's asynchronous invocation, a failing event is tried 3 times in all
(seconds apart, not minutes); then its message moves to `local-events-<handler>-failed` (an
on-failure destination), never dropped.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from chalicelib.core.aws import error_code
from local.events.core import EventRuntime, retry_until_done

log = logging.getLogger(__name__)


class AsyncDelivery:
    """Lambda's asynchronous invocation, for the sources that push events to a function (SNS,
    S3, EventBridge): the source sends its events to a queue of the runtime's own,
    `local-events-<handler>`; each event is one invocation. A failing one is tried again after
    `async_retry_seconds`, 3 times in all (the queue's receive count counts the attempts);
    then the message moves to `local-events-<handler>-failed` (an on-failure destination),
    never dropped. Until the source can be connected to the queue (a bucket not created yet),
    it is tried again every SETUP_RETRY_SECONDS.

    A source's subclass says how it connects to the queue (`_connect`) and which events a
    message of the queue holds (`_events`)."""

    SOURCE = ""
    ATTEMPTS = 3  # the first try and two retries
    #: How long a message stays hidden while its handler runs: longer than the 60 s the
    #: runtime gives a handler, so that no message comes back while it is being handled.
    HANDLING_SECONDS = 90
    SETUP_RETRY_SECONDS = 2.0

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self._sqs = runtime.client("sqs")
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
        self._queue = self._create_queue(
            self.queue_name, {"VisibilityTimeout": str(self.HANDLING_SECONDS)}
        )
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
