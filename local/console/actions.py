"""The console's three actions, each what a developer would otherwise do by hand:

- fire a schedule: the job runs now, as EventBridge would run it (`make fire`);
- redrive a dead-letter or failure queue (`make redrive LOCAL=1`);
- send a test event to one of the app's event sources: a message to its queue or topic, a
  record to its stream, an object to its bucket, an event to its bus. Each carries a new
  correlation id (where the source has a place for one), so the invocations it causes can be
  followed in the console at once.

Every action checks its input and raises `Refused` (the console answers 400) before it
touches anything.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from local.console.recorder import describe_source

#: The largest test event body accepted (SQS's and SNS's message limit).
MAX_BODY_BYTES = 256 * 1024


class Refused(ValueError):
    """The action's input is not acceptable; the message says why, for the person."""


@dataclass(frozen=True)
class Source:
    """An event source a test event can be sent to."""

    handler: str
    kind: str  # sqs, sns, kinesis, s3, eventbridge
    resource: str  # queue, topic, stream or bucket name; the pattern's source for a rule
    label: str

    def hint(self) -> str:
        """What to expect, where it is not obvious."""
        if self.kind == "kinesis":
            return (
                "Records put straight on the stream skip POST /events, which stamps each "
                "event with its sender: an unstamped one is quarantined (see the "
                "telemetry-quarantine queue), as a forged producer's would be."
            )
        if self.kind == "s3":
            return '{"key": ..., "body": ...} becomes an object of that key in the bucket.'
        return ""

    def example(self) -> str:
        """A body to start from, in the shape the handler expects."""
        from chalicelib.core import clock

        if self.kind == "kinesis":
            body: Any = {"event_type": "system_metric", "source": "console",
                         "metric_name": "cpu_usage", "value": 97.5,
                         "timestamp": clock.timestamp()}  # fmt: skip
        elif self.kind == "s3":
            body = {"key": "console/test.txt", "body": "hello from the console"}
        else:
            body = {"test": True, "sent_by": "console"}
        return json.dumps(body, indent=2)


def test_sources(app: Any, prefix: str = "") -> list[Source]:
    """The app's event sources a test event can be sent to (not table streams: their records
    come from writes to the table; not schedules: those are fired); labels without the
    stage's `prefix`."""
    found = []
    for source in app.event_sources:
        kind = type(source).__name__
        label = describe_source(source).replace(prefix, "") if prefix else describe_source(source)
        if kind == "SQSEventConfig":
            found.append(Source(source.name, "sqs", source.queue or "", label))
        elif kind == "SNSEventConfig":
            found.append(Source(source.name, "sns", source.topic, label))
        elif kind == "KinesisEventConfig":
            found.append(Source(source.name, "kinesis", source.stream, label))
        elif kind == "S3EventConfig":
            found.append(Source(source.name, "s3", source.bucket, label))
        elif kind == "CloudWatchEventConfig":
            pattern = source.event_pattern or {}
            origin = (pattern.get("source") or ["console.test"])[0]
            found.append(Source(source.name, "eventbridge", str(origin), label))
    return found


def send_test_event(target: Any, sources: list[Source], handler: str, body: str) -> dict[str, Any]:
    """Send `body` (JSON text) to `handler`'s event source; what was sent, with its
    correlation id."""
    chosen = next((s for s in sources if s.handler == handler), None)
    if chosen is None:
        names = ", ".join(s.handler for s in sources)
        raise Refused(f"no event source of a handler named {handler!r}; choose one of: {names}")
    if len(body.encode()) > MAX_BODY_BYTES:
        raise Refused(f"the body is over {MAX_BODY_BYTES // 1024} KB")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise Refused(f"the body is not JSON: {exc}") from None
    correlation_id = f"console-{uuid.uuid4()}"
    attributes = {"correlation_id": {"DataType": "String", "StringValue": correlation_id}}
    sent: dict[str, Any] = {"handler": handler, "to": chosen.label,
                            "correlation_id": correlation_id}  # fmt: skip
    if chosen.kind == "sqs":
        sqs = target.client("sqs")
        url = sqs.get_queue_url(QueueName=chosen.resource)["QueueUrl"]
        answer = sqs.send_message(QueueUrl=url, MessageBody=json.dumps(payload),
                                  MessageAttributes=attributes)  # fmt: skip
        sent["message_id"] = answer["MessageId"]
    elif chosen.kind == "sns":
        sns = target.client("sns")
        arn = _topic_arn(sns, chosen.resource)
        answer = sns.publish(TopicArn=arn, Message=json.dumps(payload),
                             MessageAttributes=attributes)  # fmt: skip
        sent["message_id"] = answer["MessageId"]
    elif chosen.kind == "kinesis":
        if isinstance(payload, dict):
            payload = {**payload, "correlation_id": correlation_id}
        answer = target.client("kinesis").put_record(
            StreamName=chosen.resource, Data=json.dumps(payload).encode(),
            PartitionKey=correlation_id,
        )  # fmt: skip
        sent["sequence_number"] = answer["SequenceNumber"]
    elif chosen.kind == "s3":
        if not isinstance(payload, dict) or not isinstance(payload.get("key"), str):
            raise Refused('an object needs {"key": "...", "body": "..."}')
        if not payload["key"] or len(payload["key"]) > 1024:
            raise Refused("the key must be 1 to 1024 characters")
        target.client("s3").put_object(
            Bucket=chosen.resource, Key=payload["key"],
            Body=str(payload.get("body", "")).encode(),
            Metadata={"correlation-id": correlation_id},
        )  # fmt: skip
        sent["key"] = payload["key"]
    else:
        answer = target.client("events").put_events(Entries=[{
            "Source": chosen.resource, "DetailType": "console test event",
            "Detail": json.dumps(payload)}])  # fmt: skip
        sent["event_id"] = (answer.get("Entries") or [{}])[0].get("EventId")
        sent["correlation_id"] = sent["event_id"]  # an EventBridge event's id is its id
    return sent


def _topic_arn(sns: Any, topic: str) -> str:
    if topic.startswith("arn:"):
        return topic
    for page in sns.get_paginator("list_topics").paginate():
        for listed in page["Topics"]:
            if listed["TopicArn"].rsplit(":", 1)[-1] == topic:
                return str(listed["TopicArn"])
    raise Refused(f"no topic {topic!r} in the emulator")


def fire_schedule(runtime: Any, name: str) -> dict[str, Any]:
    """Run scheduled job `name` now (up to 3 attempts, as EventBridge's retries); its last
    attempt's outcome."""
    jobs = runtime.scheduled_jobs()
    if name not in jobs:
        raise Refused(f"no scheduled job {name!r}; the app has: {', '.join(sorted(jobs))}")
    invocation = runtime.fire(name)
    return {"job": name, "outcome": invocation.outcome,
            "duration_ms": round(invocation.duration_ms, 1)}  # fmt: skip


def redrive_queue(target: Any, name: str, limit: int = 1000) -> dict[str, Any]:
    """Empty a dead-letter or failure queue (named with or without the stage's prefix)
    back to where its messages came from; what was done."""
    from ops.failure_queues import failure_queues, find
    from ops.redrive import Tally, depth, redrive, summary

    queues = failure_queues(target.stage)
    queue = find(queues, name, target.name(""))
    if queue is None:
        known = ", ".join(q.name.removeprefix(target.name("")) for q in queues)
        raise Refused(f"no dead-letter or failure queue {name!r}; choose one of: {known}")
    tally = Tally()
    failure = ""
    try:
        redrive(target, queue, limit, False, tally)
    except Exception as exc:  # what was done is still said
        failure = f"stopped: {type(exc).__name__}: {exc}"
    sqs = target.client("sqs")
    left = depth(sqs, sqs.get_queue_url(QueueName=queue.name)["QueueUrl"])
    return {"queue": queue.name, "summary": summary(queue, tally, left), "ok": tally.ok and not
            failure, "error": failure, "notes": tally.notes}  # fmt: skip
