"""The stack's resources by kind, with their live figures, read from the emulator through
the AWS APIs (as the AWS console would): items per table, messages visible and in flight per
queue (each dead-letter and failure queue marked, with its depth), objects per bucket, stream
shards and records, topics and their subscriptions, state machines and their executions.

Stream records are counted by reading each shard once: `ShardCounts` keeps each shard's
count and the last sequence number it read, and a refresh reads only the records added since
(AFTER_SEQUENCE_NUMBER), at most `MAX_READ_PER_REFRESH` of them per shard (a count still
catching up says so). The page refreshes every few seconds: reading every shard from its
start each time would cost the emulator more with every record the stack writes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops.failure_queues import DEAD_LETTER, failure_queues

#: The queues the local event runtime delivers SNS, S3 and EventBridge events through
#: (`local.events.async_delivery`), as Lambda's own internal queue does in AWS.
LOCAL_RUNTIME_QUEUES = "local-events-"
#: Records read per shard in one refresh at most (a count that has more to read says "≥").
MAX_READ_PER_REFRESH = 100_000


@dataclass
class Row:
    """One resource: its name (without the stage's prefix), figures, and remarks."""

    name: str
    figures: dict[str, Any]
    note: str = ""
    alert: bool = False
    #: A word for the kind of row: "dead-letter", "failures", "runtime".
    tag: str = ""  # worth a look: a dead-letter queue that holds messages


@dataclass
class Kind:
    title: str
    rows: list[Row] = field(default_factory=list)
    error: str = ""


class ShardCounts:
    """Records counted so far per shard, and where each count stopped (module docstring).
    One refresh at a time counts a shard, so two open pages never count a record twice."""

    def __init__(self) -> None:
        #: (stream, shard) -> (records counted, sequence number of the last one read)
        self._counted: dict[tuple[str, str], tuple[int, str | None]] = {}
        self._lock = threading.Lock()

    def count(
        self,
        key: tuple[str, str],
        iterator_after: Callable[[str | None], str | None],
        read: Callable[[str], dict[str, Any]],
        sequence_of: Callable[[dict[str, Any]], str],
    ) -> tuple[int, bool]:
        """(records in the shard so far, whether all were read): `iterator_after(last)`
        gives an iterator after the sequence number `last` (None: from the shard's start),
        `read(iterator)` one GetRecords answer, `sequence_of(record)` its sequence number."""
        with self._lock:
            counted, last = self._counted.get(key, (0, None))
            iterator = iterator_after(last)
            new, complete = 0, True
            while iterator:
                if new >= MAX_READ_PER_REFRESH:
                    complete = False
                    break
                answer = read(iterator)
                batch = answer.get("Records", [])
                if not batch:
                    break
                new += len(batch)
                last = sequence_of(batch[-1])
                iterator = answer.get("NextShardIterator")
            self._counted[key] = (counted + new, last)
            return counted + new, complete


def stack_figures(target: Any, prefix: str, shard_counts: ShardCounts | None = None) -> list[Kind]:
    """Every kind of resource with its rows; a kind the emulator cannot list says why,
    instead of hiding the others. `shard_counts`: the stream counts kept between refreshes
    (a new one reads every shard from its start)."""
    counts = shard_counts or ShardCounts()
    kinds = []
    for title, read in (
        ("Tables", _tables),
        ("Queues", _queues),
        ("Buckets", _buckets),
        ("Kinesis streams", lambda target, prefix: _kinesis(target, prefix, counts)),
        ("Table streams", lambda target, prefix: _table_streams(target, prefix, counts)),
        ("Topics", _topics),
        ("State machines", _state_machines),
    ):
        kind = Kind(title)
        try:
            kind.rows = read(target, prefix)
        except Exception as exc:  # the emulator stopping, a fault: shown, never raised
            kind.error = f"{type(exc).__name__}: {exc}"
        kinds.append(kind)
    return kinds


def short(name: str, prefix: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _tables(target: Any, prefix: str) -> list[Row]:
    dynamodb = target.client("dynamodb")
    rows = []
    for page in dynamodb.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            table = dynamodb.describe_table(TableName=name)["Table"]
            streamed = table.get("StreamSpecification", {}).get("StreamEnabled", False)
            rows.append(
                Row(
                    short(name, prefix),
                    {"items": table.get("ItemCount", 0)},
                    note="stream on" if streamed else "",
                )
            )
    return rows


def _queues(target: Any, prefix: str) -> list[Row]:
    sqs = target.client("sqs")
    kinds = {q.name: q for q in failure_queues(target.stage)}
    rows = []
    for url in sorted(sqs.list_queues(MaxResults=1000).get("QueueUrls", [])):
        name = url.rsplit("/", 1)[-1]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        delayed = int(attributes.get("ApproximateNumberOfMessagesDelayed", 0))
        failure = kinds.get(name)
        note = f"{failure.kind} queue of {', '.join(failure.sources)}" if failure else ""
        tag = "" if failure is None else "failures"
        if failure is not None and failure.kind == DEAD_LETTER:
            tag = "dead-letter"
        if name.startswith(LOCAL_RUNTIME_QUEUES):
            note, tag = "the local event runtime's (Lambda's internal queue in AWS)", "runtime"
        rows.append(
            Row(
                short(name, prefix),
                {"visible": visible, "in flight": in_flight, "delayed": delayed},
                note=note,
                alert=failure is not None and visible + in_flight > 0,
                tag=tag,
            )
        )
    return sorted(rows, key=lambda row: (row.tag == "runtime", row.name))


def _buckets(target: Any, prefix: str) -> list[Row]:
    s3 = target.client("s3")
    rows = []
    for bucket in s3.list_buckets().get("Buckets", []):
        count = size = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for item in page.get("Contents", []):
                count += 1
                size += int(item.get("Size", 0))
        rows.append(Row(short(bucket["Name"], prefix), {"objects": count, "bytes": size}))
    return rows


def _kinesis(target: Any, prefix: str, counts: ShardCounts) -> list[Row]:
    kinesis = target.client("kinesis")
    rows = []
    for name in kinesis.list_streams().get("StreamNames", []):
        shards = kinesis.list_shards(StreamName=name).get("Shards", [])
        records, complete = 0, True
        for shard in shards:
            shard_id = shard["ShardId"]
            counted, whole = counts.count(
                (name, shard_id),
                _iterator_after(
                    kinesis.get_shard_iterator,
                    {"StreamName": name},
                    shard_id,
                    "StartingSequenceNumber",
                ),
                lambda it: kinesis.get_records(ShardIterator=it, Limit=10_000),
                lambda record: str(record["SequenceNumber"]),
            )
            records, complete = records + counted, complete and whole
        rows.append(Row(short(name, prefix),
                        {"shards": len(shards), "records": _count(records, complete)}))  # fmt: skip
    return rows


def _table_streams(target: Any, prefix: str, counts: ShardCounts) -> list[Row]:
    streams = target.client("dynamodbstreams")
    rows = []
    for stream in streams.list_streams().get("Streams", []):
        arn = stream["StreamArn"]
        shards = streams.describe_stream(StreamArn=arn)["StreamDescription"].get("Shards", [])
        records, complete = 0, True
        for shard in shards:
            shard_id = shard["ShardId"]
            counted, whole = counts.count(
                (arn, shard_id),
                _iterator_after(
                    streams.get_shard_iterator, {"StreamArn": arn}, shard_id, "SequenceNumber"
                ),
                lambda it: streams.get_records(ShardIterator=it, Limit=1_000),
                lambda record: str(record["dynamodb"]["SequenceNumber"]),
            )
            records, complete = records + counted, complete and whole
        name = short(stream.get("TableName", arn), prefix)
        rows.append(Row(name, {"shards": len(shards), "records": _count(records, complete)}))
    return rows


def _iterator_after(
    get_shard_iterator: Callable[..., dict[str, Any]],
    stream: dict[str, str],
    shard_id: str,
    sequence_parameter: str,
) -> Callable[[str | None], str | None]:
    """For `ShardCounts.count`: a shard iterator after a sequence number (Kinesis and
    DynamoDB Streams name that parameter differently), or from the start."""

    def iterator_after(last: str | None) -> str | None:
        where = {"ShardIteratorType": "TRIM_HORIZON"}
        if last:
            where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", sequence_parameter: last}
        answer = get_shard_iterator(**stream, ShardId=shard_id, **where)
        return answer.get("ShardIterator")

    return iterator_after


def _count(records: int, complete: bool) -> str | int:
    return records if complete else f"≥ {records:,}"


def _topics(target: Any, prefix: str) -> list[Row]:
    sns = target.client("sns")
    rows = []
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page["Topics"]:
            arn = topic["TopicArn"]
            subscriptions = 0
            for listed in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn):
                subscriptions += len(listed["Subscriptions"])
            rows.append(Row(short(arn.rsplit(":", 1)[-1], prefix),
                            {"subscriptions": subscriptions}))  # fmt: skip
    return rows


def _state_machines(target: Any, prefix: str) -> list[Row]:
    sfn = target.client("stepfunctions")
    rows = []
    for machine in sfn.list_state_machines().get("stateMachines", []):
        statuses: Counter[str] = Counter()
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine["stateMachineArn"]
        ):
            statuses.update(e["status"].lower() for e in page["executions"])
        figures = {"executions": sum(statuses.values()), **dict(sorted(statuses.items()))}
        rows.append(Row(short(machine["name"], prefix), figures))
    return rows


def function_figures(invocations: list[Any]) -> list[Row]:
    """Per handler: invocations the console saw, errors, and the median and slowest
    duration (ms)."""
    by_handler: dict[str, list[Any]] = {}
    for row in invocations:
        by_handler.setdefault(row.handler, []).append(row)
    rows = []
    for handler, calls in sorted(by_handler.items()):
        durations = sorted(c.duration_ms for c in calls)
        rows.append(
            Row(
                handler,
                {
                    "invocations": len(calls),
                    "errors": sum(1 for c in calls if not c.ok),
                    "p50 ms": round(durations[len(durations) // 2], 1),
                    "max ms": round(durations[-1], 1),
                },
                alert=any(not c.ok for c in calls),
            )
        )
    return rows
