"""The stack's resources by kind, with their live figures, read from the emulator through
the AWS APIs (as the AWS console would): items per table, messages visible and in flight per
queue (each dead-letter and failure queue marked, with its depth), objects per bucket, stream
shards and records, topics and their subscriptions, state machines and their executions.

Stream records are counted by reading each shard from its start (streams here hold hours,
not days, of records); each count stops at `MAX_COUNTED` and says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ops.failure_queues import DEAD_LETTER, failure_queues

#: The queues the local event runtime delivers SNS, S3 and EventBridge events through
#: (`local.events.async_delivery`), as Lambda's own internal queue does in AWS.
LOCAL_RUNTIME_QUEUES = "local-events-"
#: Records counted per stream at most (a count that reaches it is shown as "≥").
MAX_COUNTED = 100_000


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


def stack_figures(target: Any, prefix: str) -> list[Kind]:
    """Every kind of resource with its rows; a kind the emulator cannot list says why,
    instead of hiding the others."""
    kinds = []
    for title, read in (
        ("Tables", _tables),
        ("Queues", _queues),
        ("Buckets", _buckets),
        ("Kinesis streams", _kinesis),
        ("Table streams", _table_streams),
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


def _kinesis(target: Any, prefix: str) -> list[Row]:
    kinesis = target.client("kinesis")
    rows = []
    for name in kinesis.list_streams().get("StreamNames", []):
        shards = kinesis.list_shards(StreamName=name).get("Shards", [])
        records = 0
        for shard in shards:
            iterator = kinesis.get_shard_iterator(
                StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records += _drain(lambda it: kinesis.get_records(ShardIterator=it, Limit=10_000),
                              iterator, records)  # fmt: skip
        rows.append(Row(short(name, prefix), {"shards": len(shards), "records": _count(records)}))
    return rows


def _table_streams(target: Any, prefix: str) -> list[Row]:
    streams = target.client("dynamodbstreams")
    rows = []
    for stream in streams.list_streams().get("Streams", []):
        arn = stream["StreamArn"]
        shards = streams.describe_stream(StreamArn=arn)["StreamDescription"].get("Shards", [])
        records = 0
        for shard in shards:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records += _drain(lambda it: streams.get_records(ShardIterator=it, Limit=1_000),
                              iterator, records)  # fmt: skip
        name = short(stream.get("TableName", arn), prefix)
        rows.append(Row(name, {"shards": len(shards), "records": _count(records)}))
    return rows


def _drain(read: Any, iterator: str | None, counted: int) -> int:
    """Records in one shard from `iterator` on, until the shard has no more (or the count
    reaches MAX_COUNTED with `counted` already counted)."""
    total = 0
    while iterator and counted + total < MAX_COUNTED:
        answer = read(iterator)
        batch = answer.get("Records", [])
        total += len(batch)
        if not batch:
            break
        iterator = answer.get("NextShardIterator")
    return total


def _count(records: int) -> str | int:
    return f"≥ {MAX_COUNTED:,}" if records >= MAX_COUNTED else records


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
