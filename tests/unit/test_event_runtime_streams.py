"""The local event runtime's Kinesis and DynamoDB stream delivery, with the fixture app and
moto (in process, and the emulator process for DynamoDB Streams): order per shard, batch size
and window, Lambda's event shapes, retries (bisecting a failed batch; with no retry limit, as
here, nothing is skipped; test_event_runtime_stream_failures.py has the limits),
ReportBatchItemFailures checkpoints (and, on a mapping without it, as Chalice deploys it,
batchItemFailures ignored loudly), starting positions and resharding."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.events.core import EventRuntime
from local.events.dynamodb_streams import attribute_value_json, dynamodb_table_of
from local.events.streams import StreamPoller, stream_batch_failures
from tests.fixtures import event_app
from tests.unit.runtime_helpers import (
    REGION,
    Client,
    Run,
    fixture_aws,
    runtime_starter,
)
from tests.unit.stream_mapping_helpers import use_mappings

ACCOUNT = "123456789012"
#: Short waits: a failed batch is retried after 10 ms, doubling to 50 ms; idle shards are
#: read every 20 ms.
FAST = {
    "retry_backoff_seconds": 0.01,
    "max_retry_backoff_seconds": 0.05,
    "stream_poll_seconds": 0.02,
}


@pytest.fixture(autouse=True)
def bisecting_mappings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fixture's stream mappings split a failing batch (BisectBatchOnFunctionError) and
    set no other limit: retried until the records expire, a day from now."""
    bisect = {"BisectBatchOnFunctionError": True}
    handlers = ("handle_stream", "latest_stream", "windowed_stream", "handle_table")
    use_mappings(monkeypatch, tmp_path, dict.fromkeys(handlers, bisect))


@pytest.fixture
def aws_client(request: pytest.FixtureRequest, stage_env: dict[str, str]) -> Iterator[Client]:
    """The fixture app's streams in moto: in process, or (param "emulator") in the emulator
    process the local stack runs."""
    with fixture_aws(getattr(request, "param", "in-process")) as client:
        event_app.create_streams(client)
        yield client


@pytest.fixture
def start(aws_client: Client) -> Iterator[Callable[..., Run]]:
    """Starts the runtime for some of the fixture app's handlers; stops it after the test."""
    yield from runtime_starter(aws_client, FAST)


def put(
    client: Client, *values: str, key: str = "one-shard", stream: str = event_app.KINESIS_STREAM
) -> list[tuple[str, str]]:
    """Puts records (data `values`, partition key `key`): their (shard, sequence number)."""
    kinesis = client("kinesis")
    answers = [
        kinesis.put_record(StreamName=stream, Data=v.encode(), PartitionKey=key) for v in values
    ]
    return [(a["ShardId"], a["SequenceNumber"]) for a in answers]


def batches(handler: str) -> list[dict[str, Any]]:
    return [b for b in list(event_app.stream_batches) if b["handler"] == handler]


def invocations(handler: str) -> list[tuple[list[str], str]]:
    return [(b["values"], b["outcome"]) for b in batches(handler)]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls a condition: the deadline bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def quiet(seconds: float = 0.3) -> None:
    """Time for anything that should not happen (a duplicate, a late batch) to happen."""
    time.sleep(seconds)


def never_past_a_failure(run: Run, handler: str) -> None:
    """No checkpoint ever passed a record before it was handled successfully."""
    handled_up_to: dict[str, int] = {}
    invoked = [b for b in event_app.stream_batches if b["handler"] == handler]
    for batch, checkpoints in zip(invoked, run.checkpoints, strict=True):
        shard = batch["records"][0]["eventID"].split(":")[0]
        done = {"ok": len(batch["numbers"]), "raised": 0}.get(
            batch["outcome"], batch.get("first_failed", 0)
        )
        if done:
            handled_up_to[shard] = int(batch["numbers"][done - 1])
        for (name, _, checkpoint_shard), number in checkpoints.items():
            if name == handler and checkpoint_shard == shard:
                assert int(number) <= handled_up_to.get(shard, 0)


# --- Kinesis ------------------------------------------------------------------------------


def test_each_shards_records_arrive_in_order_in_batches_of_at_most_batch_size(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    written = {f"r{i}": put(aws_client, f"r{i}", key=f"key-{i}")[0] for i in range(20)}
    shards = sorted({shard for shard, _ in written.values()})
    assert len(shards) == 2  # the keys spread over both shards
    run = start("handle_stream")
    wait_for(lambda: sorted(event_app.handled("handle_stream")) == sorted(written))

    def shard_batches(shard: str) -> list[list[str]]:
        found = [
            b for b in batches("handle_stream") if b["records"][0]["eventID"].startswith(shard)
        ]
        for batch in found:  # one shard per batch
            assert {r["eventID"].split(":")[0] for r in batch["records"]} == {shard}
        return [b["values"] for b in found]

    for shard in shards:
        expected = [v for v, (s, _) in written.items() if s == shard]  # in write order
        got = shard_batches(shard)
        assert [v for batch in got for v in batch] == expected
        # Written before the start: full batches of 4, then the rest.
        assert [len(batch) for batch in got] == [4] * (len(expected) // 4) + [len(expected) % 4] * (
            len(expected) % 4 > 0
        )

    # More while it runs: each shard's records still in order, batches of at most 4.
    written.update({f"s{i}": put(aws_client, f"s{i}", key=f"key-{i}")[0] for i in range(12)})
    wait_for(lambda: sorted(event_app.handled("handle_stream")) == sorted(written))
    quiet()
    for shard in shards:
        got = shard_batches(shard)
        assert [v for batch in got for v in batch] == [
            v for v, (s, _) in written.items() if s == shard
        ]
        assert all(1 <= len(batch) <= 4 for batch in got)
        numbers = [
            int(n)
            for b in batches("handle_stream")
            if b["records"][0]["eventID"].startswith(shard)
            for n in b["numbers"]
        ]
        assert numbers == sorted(numbers)
    last = {
        shard: max((seq for s, seq in written.values() if s == shard), key=int) for shard in shards
    }
    assert run.checkpoint("handle_stream") == last
    assert all(i.outcome == "ok" and i.source == "aws:kinesis" for i in run.seen)


def test_kinesis_records_have_lambdas_shape(aws_client: Client, start: Callable[..., Run]) -> None:
    before = time.time()
    [(shard, number)] = put(aws_client, "héllo", key="pk-1")
    start("handle_stream")
    wait_for(lambda: bool(event_app.handled("handle_stream")))
    [batch] = batches("handle_stream")
    [record] = batch["records"]
    assert set(record) == {
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    }
    kinesis = record["kinesis"]
    assert set(kinesis) == {
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    }
    assert base64.b64decode(kinesis["data"]).decode() == "héllo"
    assert (
        kinesis["kinesisSchemaVersion"],
        kinesis["partitionKey"],
        kinesis["sequenceNumber"],
    ) == ("1.0", "pk-1", number)
    arrived = kinesis["approximateArrivalTimestamp"]
    assert isinstance(arrived, float) and before - 1 <= arrived <= time.time() + 1
    stream_arn = aws_client("kinesis").describe_stream_summary(StreamName=event_app.KINESIS_STREAM)[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    assert record["eventSourceARN"] == stream_arn
    assert record["eventID"] == f"{shard}:{number}"
    assert (record["eventSource"], record["eventVersion"], record["eventName"]) == (
        "aws:kinesis",
        "1.0",
        "aws:kinesis:record",
    )
    assert record["awsRegion"] == REGION
    assert record["invokeIdentityArn"].startswith(f"arn:aws:iam::{ACCOUNT}:role/")
    json.dumps(record)
    # Chalice's KinesisEvent read it all.
    assert batch["values"] == ["héllo"] and batch["numbers"] == [number]
    [(partition_key, version, timestamp)] = batch["parsed"]
    assert (partition_key, version) == ("pk-1", "1.0")
    assert timestamp == datetime.fromtimestamp(arrived, UTC).replace(tzinfo=None)


def test_a_batching_window_fills_the_batch_until_it_ends(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    start("windowed_stream", "handle_stream")
    first_put = time.monotonic()
    for value in ("w1", "w2", "w3"):
        put(aws_client, value, stream=event_app.WINDOW_STREAM)
        put(aws_client, value)
        time.sleep(0.2)
    wait_for(lambda: bool(batches("windowed_stream")))
    waited = time.monotonic() - first_put
    quiet()
    # 1 s window: one batch, though the first record could have gone at once...
    assert invocations("windowed_stream") == [(["w1", "w2", "w3"], "ok")]
    assert waited >= 0.9
    # ...as it did without a window.
    assert event_app.handled("handle_stream") == ["w1", "w2", "w3"]
    assert len(batches("handle_stream")) >= 2


def test_a_raising_handler_gets_its_batch_again_and_nothing_is_skipped(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    values = [f"r{i}" for i in range(8)]
    written = put(aws_client, *values)
    event_app.behaviour["stream_raise_times"] = 2
    run = start("handle_stream")
    wait_for(lambda: event_app.handled("handle_stream") == values)
    quiet()
    # The same records again, the failed batch halved: at least once, in order.
    assert invocations("handle_stream") == [
        (["r0", "r1", "r2", "r3"], "raised"),
        (["r0", "r1"], "raised"),
        (["r0"], "ok"),
        (["r1"], "ok"),
        (["r2", "r3"], "ok"),
        (["r4", "r5", "r6", "r7"], "ok"),
    ]
    assert event_app.handled("handle_stream") == values
    first, second = run.seen[:2]
    assert (
        first.outcome
        == "error: RuntimeError: stream handler crashed (retried in 0.01 s, split into 2 + 2)"
    )
    assert (
        second.outcome
        == "error: RuntimeError: stream handler crashed (retried in 0.02 s, split into 1 + 1)"
    )
    assert first.failed_ids == [number for _, number in written[:4]] and first.batch_size == 4
    never_past_a_failure(run, "handle_stream")
    assert run.checkpoint("handle_stream") == {written[-1][0]: written[-1][1]}


def test_a_poison_record_is_cornered_by_halving_the_batch(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    values = ["a", "b", "p", "c", "d", "e", "f", "g"]
    put(aws_client, *values)
    event_app.behaviour["stream_poison"] = {"p": 3}  # fails 3 times, then succeeds
    run = start("handle_stream")
    wait_for(lambda: event_app.handled("handle_stream") == values)
    quiet()
    assert invocations("handle_stream") == [
        (["a", "b", "p", "c"], "raised"),
        (["a", "b"], "ok"),
        (["p", "c"], "raised"),
        (["p"], "raised"),
        (["p"], "ok"),
        (["c"], "ok"),
        (["d", "e", "f", "g"], "ok"),  # recovered: full batches again
    ]
    assert [i.batch_size for i in run.seen] == [4, 2, 2, 1, 1, 1, 4]
    assert run.seen[3].outcome.endswith("crashed (retried in 0.02 s)")  # one record: no split
    never_past_a_failure(run, "handle_stream")


def test_batch_item_failures_resume_at_the_lowest_failed_record(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    values = ["a", "b", "c", "d", "e", "f"]
    written = dict(zip(values, (number for _, number in put(aws_client, *values)), strict=True))
    event_app.behaviour["stream_partial"] = {"c": 1, "d": 1}  # reported as d, c
    run = start("handle_stream", report_batch_item_failures=True)
    wait_for(lambda: event_app.handled("handle_stream") == values)
    quiet()
    # a and b are not delivered again; c and what follows are.
    assert invocations("handle_stream") == [
        (["a", "b", "c", "d"], "partial"),
        (["c", "d", "e", "f"], "ok"),
    ]
    partial = run.seen[0]
    assert (
        partial.outcome
        == f"partial: 2 of 4 failed (retried from sequence number {written['c']} in 0.01 s)"
    )
    assert partial.failed_ids == [written["d"], written["c"]]
    [(shard, number)] = run.checkpoints[0].items()
    assert number == written["b"]  # just before the lowest failed one
    assert run.checkpoints[1] == {shard: written["f"]}
    never_past_a_failure(run, "handle_stream")


def test_batch_item_failures_are_ignored_without_report_batch_item_failures(
    aws_client: Client, start: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> None:
    """As in AWS on a mapping Chalice deployed: the answer is a success, the checkpoint moves
    past the whole batch, and the failed records are lost; the runtime says so."""
    caplog.set_level(logging.WARNING, logger="local.events")
    values = ["a", "b", "c", "d", "e", "f"]
    written = dict(zip(values, (number for _, number in put(aws_client, *values)), strict=True))
    event_app.behaviour["stream_partial"] = {"c": 1, "d": 1}  # reported as d, c
    run = start("handle_stream")
    wait_for(lambda: len(batches("handle_stream")) == 2)
    quiet()
    # c and d are not delivered again.
    assert invocations("handle_stream") == [
        (["a", "b", "c", "d"], "partial"),
        (["e", "f"], "ok"),
    ]
    ignored = run.seen[0]
    assert ignored.outcome == (
        "ok, but batchItemFailures ignored: 2 records would be lost in AWS "
        "(the mapping has no ReportBatchItemFailures)"
    )
    assert ignored.failed_ids == [written["d"], written["c"]]
    assert run.seen[1].outcome == "ok"
    [(shard, number)] = run.checkpoints[0].items()
    assert number == written["d"]  # past the whole batch
    assert run.checkpoints[1] == {shard: written["f"]}
    reported = [written["d"], written["c"]]
    assert f"handle_stream returned batchItemFailures {reported}" in caplog.text
    assert "in AWS 2 records would be lost" in caplog.text


@pytest.mark.parametrize(
    ("reporting", "expected"),
    [
        (["handle_table"], [(["u1", "u2", "u3"], "partial"), (["u2", "u3"], "ok")]),
        (["handle_stream"], [(["u1", "u2", "u3"], "partial")]),  # another handler's mapping
    ],
    ids=["its-mapping-reports", "another-mapping-reports"],
)
def test_a_dynamodb_handlers_item_failures_count_only_if_its_mapping_reports_them(
    aws_client: Client,
    start: Callable[..., Run],
    reporting: list[str],
    expected: list[tuple[list[str], str]],
) -> None:
    dynamodb = aws_client("dynamodb")
    for pk in ("u1", "u2", "u3"):
        dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": pk}})
    event_app.behaviour["stream_partial"] = {"u2": 1}
    run = start("handle_table", report_batch_item_failures=reporting)
    wait_for(lambda: len(batches("handle_table")) == len(expected))
    quiet()
    assert invocations("handle_table") == expected
    if len(expected) == 2:
        assert run.seen[0].outcome.startswith("partial: 1 of 3 failed (retried from")
    else:
        assert run.seen[0].outcome.startswith("ok, but batchItemFailures ignored: 1 record ")
    last = batches("handle_table")[0]["numbers"][-1]
    assert list(run.checkpoint("handle_table").values()) == [last]  # past the batch, at last


def test_latest_reads_what_came_after_the_start_trim_horizon_everything(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    put(aws_client, "old-1", "old-2")
    run = start("handle_stream", "latest_stream")
    written = put(aws_client, "new-1", "new-2")
    wait_for(lambda: event_app.handled("latest_stream") == ["new-1", "new-2"])
    wait_for(lambda: event_app.handled("handle_stream") == ["old-1", "old-2", "new-1", "new-2"])
    quiet()
    assert event_app.handled("latest_stream") == ["new-1", "new-2"]
    # Two consumers of one stream, each with its own checkpoint.
    [(shard, last)] = written[-1:]
    assert run.checkpoint("latest_stream") == {shard: last} == run.checkpoint("handle_stream")
    assert len(run.runtime.checkpoints) == 2


def test_stream_invocations_are_logged_as_json_lines(
    aws_client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = EventRuntime(
        event_app.app, aws_client, REGION, handlers=["handle_stream", "handle_table"], **FAST
    )
    runtime.start()
    try:
        assert runtime.wait_until_ready(10)
        put(aws_client, "logged")
        aws_client("dynamodb").put_item(TableName=event_app.TABLE, Item={"pk": {"S": "logged"}})
        wait_for(lambda: len(event_app.stream_batches) == 2)
    finally:
        runtime.stop()
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    by_source = {
        line["source"]: line for line in lines if line.get("event_runtime") == "invocation"
    }
    assert set(by_source) == {"aws:kinesis", "aws:dynamodb"}
    for source, handler in (("aws:kinesis", "handle_stream"), ("aws:dynamodb", "handle_table")):
        line = by_source[source]
        assert {"handler", "source", "batch_size", "duration_ms", "outcome"} <= set(line)
        assert (line["handler"], line["batch_size"], line["outcome"]) == (handler, 1, "ok")
        assert line["duration_ms"] >= 0


# --- DynamoDB Streams ---------------------------------------------------------------------


@pytest.mark.parametrize("aws_client", ["in-process", "emulator"], indirect=True)
def test_dynamodb_changes_arrive_in_lambdas_shape(
    aws_client: Client, start: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="local.events")
    start("handle_table")
    dynamodb = aws_client("dynamodb")
    key = {"pk": {"S": "u1"}}
    item = {
        **key,
        "name": {"S": "Ada"},
        "blob": {"B": b"\x00\xff"},
        "tags": {"SS": ["a"]},
        "n": {"N": "1"},
    }
    dynamodb.put_item(TableName=event_app.TABLE, Item=item)
    dynamodb.update_item(
        TableName=event_app.TABLE,
        Key=key,
        UpdateExpression="SET #name = :name",
        ExpressionAttributeNames={"#name": "name"},
        ExpressionAttributeValues={":name": {"S": "Grace"}},
    )
    dynamodb.delete_item(TableName=event_app.TABLE, Key=key)
    wait_for(lambda: len(event_app.handled("handle_table")) == 3)
    records = [r for b in batches("handle_table") for r in b["records"]]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    # The app's ARN has another label: the table's current stream is read instead.
    stream_arn = dynamodb.describe_table(TableName=event_app.TABLE)["Table"]["LatestStreamArn"]
    assert stream_arn != event_app.TABLE_STREAM_ARN
    assert f"reading table {event_app.TABLE}'s current stream {stream_arn}" in caplog.text
    for record in records:
        assert set(record) == {
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        }
        assert (record["eventVersion"], record["eventSource"], record["awsRegion"]) == (
            "1.1",
            "aws:dynamodb",
            REGION,
        )
        assert record["eventSourceARN"] == stream_arn and record["eventID"]
        change = record["dynamodb"]
        created = change["ApproximateCreationDateTime"]
        assert isinstance(created, float) and abs(created - time.time()) < 60
        assert change["Keys"] == {"pk": {"S": "u1"}}
        assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES" and isinstance(
            change["SizeBytes"], int
        )
        json.dumps(record)
    insert, modify, remove = (r["dynamodb"] for r in records)
    as_json = {**item, "blob": {"B": "AP8="}}  # AttributeValue JSON: binary in base64
    assert insert["NewImage"] == as_json and "OldImage" not in insert
    assert modify["OldImage"] == as_json and modify["NewImage"] == {
        **as_json,
        "name": {"S": "Grace"},
    }
    assert remove["OldImage"] == modify["NewImage"] and "NewImage" not in remove
    numbers = [int(change["SequenceNumber"]) for change in (insert, modify, remove)]
    assert numbers == sorted(set(numbers))
    # Chalice's DynamoDBEvent read them all.
    parsed = [p for b in batches("handle_table") for p in b["parsed"]]
    assert [(name, table, region) for name, table, _, region in parsed] == [
        (name, event_app.TABLE, REGION) for name in ("INSERT", "MODIFY", "REMOVE")
    ]
    assert [t for _, _, t, _ in parsed] == [
        datetime.fromtimestamp(r["dynamodb"]["ApproximateCreationDateTime"], UTC).replace(
            tzinfo=None
        )
        for r in records
    ]


class AwsLikeStreams:
    """DynamoDB Streams refusing the app's stream ARN as AWS refuses an unknown label (moto
    ignores the label)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.refused = 0

    def describe_stream(self, **kwargs: Any) -> Any:
        if kwargs["StreamArn"] == event_app.TABLE_STREAM_ARN:
            self.refused += 1
            error = {"Code": "ResourceNotFoundException", "Message": "Requested resource not found"}
            raise ClientError({"Error": error}, "DescribeStream")
        return self._client.describe_stream(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_an_unknown_stream_arn_is_replaced_by_the_tables_current_stream(
    aws_client: Client, start: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="local.events")
    streams = AwsLikeStreams(aws_client("dynamodbstreams"))
    start(
        "handle_table",
        client=lambda service: streams if service == "dynamodbstreams" else aws_client(service),
    )
    aws_client("dynamodb").put_item(TableName=event_app.TABLE, Item={"pk": {"S": "u2"}})
    wait_for(lambda: event_app.handled("handle_table") == ["u2"])
    stream_arn = aws_client("dynamodb").describe_table(TableName=event_app.TABLE)["Table"][
        "LatestStreamArn"
    ]
    assert streams.refused == 1
    assert batches("handle_table")[0]["records"][0]["eventSourceARN"] == stream_arn
    expected = f"reading table {event_app.TABLE}'s current stream {stream_arn}"
    assert f"no stream {event_app.TABLE_STREAM_ARN}; {expected}" in caplog.text


def test_a_table_created_after_the_start_is_found(
    aws_client: Client,
    start: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(StreamPoller, "SETUP_RETRY_SECONDS", 0.05)
    dynamodb = aws_client("dynamodb")
    dynamodb.delete_table(TableName=event_app.TABLE)
    run = start("handle_table", ready=False)
    assert not run.runtime.wait_until_ready(0.2)
    assert "handle_table: its stream cannot be read yet" in caplog.text
    event_app.create_table(dynamodb)
    assert run.runtime.wait_until_ready(5)
    dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": "late"}})
    wait_for(lambda: event_app.handled("handle_table") == ["late"])


# --- resharding ---------------------------------------------------------------------------


class FakeKinesis:
    """A Kinesis stream that reshards as AWS does. moto's SplitShard/MergeShards close the
    parent but keep writing new records to it (the closed shard still matches the hash key),
    so its children never get any; this fake puts records where a test says.

    `ends_iterators`: AWS answers the last GetRecords of a closed shard without a
    NextShardIterator; moto never ends one (only ListShards shows an EndingSequenceNumber).
    """

    def __init__(self, ends_iterators: bool) -> None:
        self.ends_iterators = ends_iterators
        self.slow: dict[str, float] = {}  # shard id -> seconds each GetRecords takes
        self.shards: dict[str, dict[str, Any]] = {}
        self._numbers = itertools.count(100)
        self._lock = threading.Lock()

    def add_shard(self, shard_id: str, *parents: str) -> None:
        with self._lock:
            self.shards[shard_id] = {"parents": parents, "records": [], "closed": False}

    def put(self, shard_id: str, *values: str) -> None:
        with self._lock:
            for value in values:
                self.shards[shard_id]["records"].append(
                    {
                        "SequenceNumber": str(next(self._numbers)),
                        "ApproximateArrivalTimestamp": datetime.now(UTC),
                        "Data": value.encode(),
                        "PartitionKey": "k",
                    }
                )

    def close(self, shard_id: str) -> None:
        with self._lock:
            self.shards[shard_id]["closed"] = True

    # The calls the runtime makes.

    def get_caller_identity(self) -> dict[str, Any]:
        return {"Account": ACCOUNT}

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{StreamName}"
        return {"StreamDescriptionSummary": {"StreamARN": arn}}

    def list_shards(self, StreamName: str) -> dict[str, Any]:
        with self._lock:
            listed = []
            for shard_id, shard in self.shards.items():
                numbers: dict[str, str] = {"StartingSequenceNumber": "0"}
                if shard["closed"]:
                    last = shard["records"][-1]["SequenceNumber"] if shard["records"] else "0"
                    numbers["EndingSequenceNumber"] = last
                described = {"ShardId": shard_id, "SequenceNumberRange": numbers}
                for name, parent in zip(
                    ("ParentShardId", "AdjacentParentShardId"), shard["parents"], strict=False
                ):
                    described[name] = parent
                listed.append(described)
            return {"Shards": listed}

    def get_shard_iterator(
        self,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            records = self.shards[ShardId]["records"]
            position = {"TRIM_HORIZON": 0, "LATEST": len(records)}.get(ShardIteratorType)
            if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
                position = 1 + [r["SequenceNumber"] for r in records].index(StartingSequenceNumber)
            return {"ShardIterator": f"{ShardId}|{position}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard_id, position = ShardIterator.split("|")
        time.sleep(self.slow.get(shard_id, 0))
        with self._lock:
            shard = self.shards[shard_id]
            taken = [dict(r) for r in shard["records"][int(position) : int(position) + Limit]]
            end = int(position) + len(taken)
            following: str | None = f"{shard_id}|{end}"
            if self.ends_iterators and shard["closed"] and end == len(shard["records"]):
                following = None
            return {"Records": taken, "NextShardIterator": following, "MillisBehindLatest": 0}


@pytest.mark.parametrize("ends_iterators", [True, False], ids=["aws", "moto-like"])
def test_children_are_read_after_their_parents(
    aws_client: Client, start: Callable[..., Run], ends_iterators: bool
) -> None:
    stream = FakeKinesis(ends_iterators)
    stream.add_shard("shardId-0")
    stream.put("shardId-0", *[f"p{i}" for i in range(6)])
    stream.close("shardId-0")  # split into 1 and 2...
    for child in ("shardId-1", "shardId-2"):
        stream.add_shard(child, "shardId-0")
        stream.put(child, *[f"{child[-1]}-{i}" for i in range(3)])
        stream.close(child)
    stream.add_shard("shardId-3", "shardId-1", "shardId-2")  # ...merged again into 3
    stream.put("shardId-3", "m0", "m1")
    # Slow parents: children read at the same time would come first.
    stream.slow = {"shardId-0": 0.05, "shardId-1": 0.05, "shardId-2": 0.05}
    run = start("handle_stream", client=lambda service: stream)
    wait_for(lambda: len(event_app.handled("handle_stream")) == 14)
    quiet()
    handled = event_app.handled("handle_stream")
    assert sorted(handled) == sorted(set(handled)) and len(handled) == 14  # each once
    assert handled[:6] == [f"p{i}" for i in range(6)]  # the parent first
    assert [v for v in handled[6:12] if v.startswith("1-")] == ["1-0", "1-1", "1-2"]
    assert [v for v in handled[6:12] if v.startswith("2-")] == ["2-0", "2-1", "2-2"]
    assert handled[12:] == ["m0", "m1"]  # after both its parents
    assert set(run.checkpoint("handle_stream")) == {
        "shardId-0",
        "shardId-1",
        "shardId-2",
        "shardId-3",
    }


@pytest.mark.parametrize("ends_iterators", [True, False], ids=["aws", "moto-like"])
def test_shards_split_after_a_latest_start_are_read_from_their_start(
    aws_client: Client,
    start: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    ends_iterators: bool,
) -> None:
    monkeypatch.setattr(StreamPoller, "RELIST_SECONDS", 0.05)
    stream = FakeKinesis(ends_iterators)
    stream.add_shard("shardId-0")
    stream.put("shardId-0", "old")
    start("latest_stream", client=lambda service: stream)
    stream.put("shardId-0", "new")
    stream.add_shard("shardId-1", "shardId-0")
    stream.add_shard("shardId-2", "shardId-0")
    stream.put("shardId-1", "1-0", "1-1")
    stream.put("shardId-2", "2-0")
    stream.close("shardId-0")
    wait_for(lambda: len(event_app.handled("latest_stream")) == 4)
    quiet()
    handled = event_app.handled("latest_stream")
    assert handled[0] == "new" and sorted(handled[1:]) == ["1-0", "1-1", "2-0"]
    assert [v for v in handled if v.startswith("1-")] == ["1-0", "1-1"]


# --- the parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, (None, [])),
        ("ok", (None, [])),
        ({"batchItemFailures": []}, (None, [])),
        (
            {"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]},
            (1, ["3", "2"]),
        ),
        ({"batchItemFailures": [{"itemIdentifier": "3"}]}, (2, ["3"])),
        # What Lambda takes for a failure of the whole batch:
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, (0, [""])),
        ({"batchItemFailures": [{"nope": "2"}]}, (0, [""])),
        ({"batchItemFailures": [{"itemIdentifier": "9"}]}, (0, ["9"])),
    ],
)
def test_stream_batch_failures(result: Any, expected: tuple[int | None, list[str]]) -> None:
    assert stream_batch_failures(result, ["1", "2", "3"]) == expected


def test_attribute_values_keep_their_json_form() -> None:
    parsed = {"M": {"b": {"B": b"\x01"}, "l": {"L": [{"BS": [b"x"]}, {"N": "1"}, {"NULL": True}]}}}
    assert attribute_value_json(parsed) == {
        "M": {"b": {"B": "AQ=="}, "l": {"L": [{"BS": ["eA=="]}, {"N": "1"}, {"NULL": True}]}}
    }


def test_dynamodb_table_of_a_stream_arn() -> None:
    assert (
        dynamodb_table_of("arn:aws:dynamodb:us-east-1:1:table/users/stream/2024-01-01T00:00:00.000")
        == "users"
    )
    with pytest.raises(ValueError, match="not a DynamoDB stream ARN"):
        dynamodb_table_of("arn:aws:kinesis:us-east-1:1:stream/users")
