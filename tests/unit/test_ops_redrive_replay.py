"""Replaying Lambda's on-failure records (ops/replay.py) against the emulator, whose Lambda
invocations run the fixture app's handlers (local/events/invoke.py): an asynchronous
invocation's event goes back to its function; a stream batch is read from the stream by its
sequence numbers, exactly those records, and handed to its function; a record is deleted only
once the function succeeded; records the stream no longer has are reported lost. And the local
runtime sends a failed asynchronous event to its declared destination as Lambda's record."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.wiring import function_name
from local.events.core import EventRuntime, Invocation
from local.events.invoke import InvokeEndpoint
from local.provision import create_functions
from ops.redrive import replay_records
from ops.replay import Allowed, Replayer
from ops.session import Target
from tests.fixtures import event_app
from tests.unit.runtime_helpers import REGION, Client, emulator
from tests.unit.stream_mapping_helpers import FAILURE_QUEUE, FAILURE_QUEUE_ID, RESOURCES
from tests.unit.test_fidelity_dynamodb import clients_at

STAGE = "dev"
FUNCTIONS = ["echo", "fail", "handle_stream", "handle_table"]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@dataclass
class Emulator:
    url: str
    client: Client
    target: Target

    def arn(self, name: str) -> str:
        found = self.client("lambda").get_function(FunctionName=function_name(STAGE, name))
        return str(found["Configuration"]["FunctionArn"])

    queue: str = ""

    def failure_queue(self, name: str = FAILURE_QUEUE) -> str:
        return str(self.client("sqs").create_queue(QueueName=name)["QueueUrl"])

    def bodies(self, url: str) -> list[Any]:
        """The queue's messages (JSON ones parsed), left visible."""
        messages = self.client("sqs").receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return [_parsed(m["Body"]) for m in messages.get("Messages", [])]


def _parsed(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


@pytest.fixture(scope="module")
def stack() -> Iterator[Emulator]:
    endpoint = InvokeEndpoint("127.0.0.1")
    try:
        with emulator(endpoint.url) as url:
            client = clients_at(url)
            runtime = EventRuntime(event_app.app, client, REGION, handlers=())
            create_functions(STAGE, FUNCTIONS, client("lambda"), client("iam"))
            endpoint.serve(runtime, STAGE)
            event_app.create_streams(client)
            yield Emulator(url, client, Target(STAGE, {"emulator_url": url, "region": REGION}))
    finally:
        endpoint.stop()


@pytest.fixture
def aws(stack: Emulator) -> Emulator:
    event_app.reset()
    stack.queue = stack.failure_queue(f"failures-{uuid.uuid4().hex[:12]}")
    return stack


def replayer(aws: Emulator, *tables: str, discard_lost: bool = False) -> Replayer:
    """A replayer allowed the fixture's functions, its table and Kinesis stream (and
    `tables`), as a failure queue of the templates allows its own."""
    allowed = Allowed(
        frozenset(function_name(STAGE, f) for f in FUNCTIONS),
        frozenset({event_app.TABLE, *tables}),
        frozenset({event_app.KINESIS_STREAM}),
    )
    return Replayer(aws.target, allowed, discard_lost)


def send(aws: Emulator, *records: Any) -> str:
    url = aws.queue
    for record in records:
        body = record if isinstance(record, str) else json.dumps(record)
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=body)
    return url


# --- asynchronous invocations ---------------------------------------------------------------


def async_record(function_arn: str, payload: Any) -> dict[str, Any]:
    """Lambda's on-failure record of an asynchronous invocation (its documented shape)."""
    return {
        "version": "1.0",
        "timestamp": "2026-12-07T01:00:00.000Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-4a8b-8880-a18cdf61200e",
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {"errorMessage": "boom", "errorType": "RuntimeError"},
    }


def test_an_async_failure_is_replayed_to_its_function_then_deleted(aws: Emulator) -> None:
    payload = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "hello"}}]}
    url = send(aws, async_record(aws.arn("echo"), payload))

    tally = replay_records(aws.client("sqs"), url, replayer(aws), limit=100)

    assert (tally.handled, tally.failed, tally.unknown) == (1, 0, 0)
    assert event_app.lambda_calls == [("echo", payload)]  # the very event, once
    assert aws.bodies(url) == []


def test_what_fails_again_or_is_no_record_stays_visible_and_counts(aws: Emulator) -> None:
    failing = async_record(aws.arn("fail"), {"why": "still broken"})
    url = send(aws, failing, "not json", {"some": "message"})

    tally = replay_records(aws.client("sqs"), url, replayer(aws), limit=100)

    assert (tally.handled, tally.failed, tally.unknown) == (0, 1, 2)
    assert not tally.ok
    assert any("fail failed again: FixtureError: fixture failure: still broken" in n
               for n in tally.notes)  # fmt: skip
    assert event_app.lambda_calls == [("fail", {"why": "still broken"})]  # tried once
    assert len(aws.bodies(url)) == 3  # all kept, visible again


# --- streams ---------------------------------------------------------------------------------


def kinesis_records(aws: Emulator, values: list[str]) -> tuple[str, str, list[str]]:
    """Puts `values` on one shard of the fixture stream: (stream ARN, shard, numbers)."""
    kinesis = aws.client("kinesis")
    numbers, shards = [], set()
    for value in values:
        put = kinesis.put_record(
            StreamName=event_app.KINESIS_STREAM,
            Data=value.encode(),
            PartitionKey=value,
            ExplicitHashKey="0",
        )
        numbers.append(put["SequenceNumber"])
        shards.add(put["ShardId"])
    [shard] = shards
    arn = kinesis.describe_stream_summary(StreamName=event_app.KINESIS_STREAM)[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    return arn, shard, numbers


def stream_record(
    function_arn: str, info: str, arn: str, shard: str, first: str, last: str, size: int
) -> dict[str, Any]:
    """Lambda's on-failure record of a stream batch: where the batch is, not its records."""
    return {
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-4a5e-9b5f-0d1e2f3a4b5c",
            "functionArn": function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 11,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2026-12-07T01:00:00.000Z",
        info: {
            "shardId": shard,
            "startSequenceNumber": first,
            "endSequenceNumber": last,
            "approximateArrivalOfFirstRecord": "2026-12-07T00:59:00.000Z",
            "approximateArrivalOfLastRecord": "2026-12-07T00:59:01.000Z",
            "batchSize": size,
            "streamArn": arn,
        },
    }


def test_a_kinesis_batch_is_read_between_its_numbers_and_replayed(aws: Emulator) -> None:
    values = [f"k{n}-{time.monotonic_ns()}" for n in range(6)]
    arn, shard, numbers = kinesis_records(aws, values)
    record = stream_record(aws.arn("handle_stream"), "KinesisBatchInfo", arn, shard,
                           numbers[1], numbers[4], 4)  # fmt: skip
    url = send(aws, record)

    tally = replay_records(aws.client("sqs"), url, replayer(aws), limit=100)

    assert (tally.handled, tally.records, tally.failed, tally.lost) == (1, 4, 0, 0)
    [batch] = event_app.stream_batches
    assert batch["handler"] == "handle_stream" and batch["values"] == values[1:5]
    assert batch["numbers"] == numbers[1:5]
    first = batch["records"][0]
    assert first["eventSource"] == "aws:kinesis" and first["eventSourceARN"] == arn
    assert first["eventID"] == f"{shard}:{numbers[1]}"
    assert first["invokeIdentityArn"].endswith(":role/serverless-app-dev-local-functions")
    assert aws.bodies(url) == []


def test_a_partial_batch_failure_keeps_the_record_until_a_replay_succeeds(aws: Emulator) -> None:
    values = [f"p{n}-{time.monotonic_ns()}" for n in range(3)]
    arn, shard, numbers = kinesis_records(aws, values)
    event_app.behaviour["stream_partial"] = {values[1]: 1}
    record = stream_record(aws.arn("handle_stream"), "KinesisBatchInfo", arn, shard,
                           numbers[0], numbers[2], 3)  # fmt: skip
    url = send(aws, record)
    sqs = aws.client("sqs")

    first = replay_records(sqs, url, replayer(aws), limit=100)
    assert (first.handled, first.failed) == (0, 1)
    assert any("batchItemFailures names 1 record" in note for note in first.notes)
    assert len(aws.bodies(url)) == 1

    second = replay_records(sqs, url, replayer(aws), limit=100)
    assert (second.handled, second.records, second.failed) == (1, 3, 0)
    assert aws.bodies(url) == []
    assert [b["values"] for b in event_app.stream_batches] == [values, values]


def dynamodb_records(aws: Emulator, table: str, keys: list[str]) -> tuple[str, str, list[str]]:
    """Writes items `keys` to `table`: (its stream ARN, the shard, their sequence numbers)."""
    dynamodb, streams = aws.client("dynamodb"), aws.client("dynamodbstreams")
    for key in keys:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": "1"}})
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    found = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    numbers = {r["dynamodb"]["Keys"]["pk"]["S"]: r["dynamodb"]["SequenceNumber"] for r in found}
    return arn, shard["ShardId"], [numbers[key] for key in keys]


def test_a_dynamodb_batch_is_read_between_its_numbers_and_replayed(aws: Emulator) -> None:
    keys = [f"d{n}-{time.monotonic_ns()}" for n in range(5)]
    arn, shard, numbers = dynamodb_records(aws, event_app.TABLE, keys)
    record = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                           numbers[1], numbers[3], 3)  # fmt: skip
    url = send(aws, record)

    tally = replay_records(aws.client("sqs"), url, replayer(aws), limit=100)

    assert (tally.handled, tally.records, tally.lost) == (1, 3, 0)
    [batch] = event_app.stream_batches
    assert batch["values"] == keys[1:4] and batch["numbers"] == numbers[1:4]
    first = batch["records"][0]
    assert (first["eventName"], first["eventSource"]) == ("INSERT", "aws:dynamodb")
    assert first["dynamodb"]["NewImage"] == {"pk": {"S": keys[1]}, "n": {"N": "1"}}
    assert aws.bodies(url) == []


def test_records_the_stream_no_longer_has_are_lost_and_the_record_kept(aws: Emulator) -> None:
    gone = f"gone-{time.monotonic_ns()}"
    aws.client("dynamodb").create_table(
        TableName=gone,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn, shard, numbers = dynamodb_records(aws, gone, ["a", "b"])
    aws.client("dynamodb").delete_table(TableName=gone)  # and its stream with it
    trimmed = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                            numbers[0], numbers[1], 2)  # fmt: skip
    # A Kinesis range past what the shard holds (the stream was created again since).
    karn, kshard, knumbers = kinesis_records(aws, [f"x-{time.monotonic_ns()}"])
    past = str(int(knumbers[0]) + 10**6)
    absent = stream_record(aws.arn("handle_stream"), "KinesisBatchInfo", karn, kshard,
                           past, past, 1)  # fmt: skip
    url = send(aws, trimmed, absent)
    sqs = aws.client("sqs")

    started = time.monotonic()
    tally = replay_records(sqs, url, replayer(aws, gone), limit=100)
    assert time.monotonic() - started < 15  # no hanging on a shard
    assert (tally.handled, tally.lost, tally.failed) == (0, 3, 0)
    assert not tally.ok
    assert event_app.stream_batches == []  # nothing to hand over: no invocation
    assert len(aws.bodies(url)) == 2

    discarded = replay_records(sqs, url, replayer(aws, gone, discard_lost=True), limit=100)
    assert (discarded.handled, discarded.lost) == (2, 3)
    assert aws.bodies(url) == []


# --- what a record may not make the tool do, and errors --------------------------------------


def test_bad_or_foreign_records_are_kept_as_unknown_and_the_run_goes_on(aws: Emulator) -> None:
    keys = [f"f{n}-{time.monotonic_ns()}" for n in range(2)]
    arn, shard, numbers = dynamodb_records(aws, event_app.TABLE, keys)
    good = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                         numbers[0], numbers[1], 2)  # fmt: skip
    malformed = json.loads(json.dumps(good))
    malformed["DDBStreamBatchInfo"]["startSequenceNumber"] = "x"
    account = aws.arn("echo").split(":")[4]
    foreign = async_record(f"arn:aws:lambda:{REGION}:{account}:function:someone-elses", {"a": 1})
    other_table = json.loads(json.dumps(good))
    other_table["DDBStreamBatchInfo"]["streamArn"] = arn.replace(event_app.TABLE, "other-table")
    other_account = json.loads(json.dumps(good))
    other_account["DDBStreamBatchInfo"]["streamArn"] = arn.replace(account, "999999999999")
    payload = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "after"}}]}
    url = send(aws, malformed, foreign, other_table, other_account,
               async_record(aws.arn("echo"), payload), good)  # fmt: skip

    tally = replay_records(aws.client("sqs"), url, replayer(aws), limit=100)

    assert (tally.handled, tally.records, tally.unknown, tally.failed) == (2, 3, 4, 0)
    assert event_app.lambda_calls == [("echo", payload)]  # nothing of someone else's
    assert [b["values"] for b in event_app.stream_batches] == [keys]  # read once, ours
    left = aws.bodies(url)
    assert len(left) == 4 and good not in left


class Flaky:
    """A client whose calls named in `faults` fail (or answer) as told, in order, before
    they reach the real one."""

    def __init__(self, real: Any, **faults: list[Any]) -> None:
        self.real, self.faults = real, faults

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            queued = self.faults.get(name) or []
            while queued:
                fault = queued.pop(0)
                if callable(fault):
                    fault = fault(kwargs)
                if fault is None:
                    break
                if isinstance(fault, Exception):
                    raise fault
                return fault
            return getattr(self.real, name)(**kwargs)

        return call


def client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "Call")


def flaky_target(aws: Emulator, service: str, **faults: list[Any]) -> Target:
    target = Target(STAGE, aws.target.local)
    target._clients[service] = Flaky(aws.client(service), **faults)
    return target


def test_a_stream_read_error_fails_that_message_only(aws: Emulator) -> None:
    keys = [f"e{n}-{time.monotonic_ns()}" for n in range(2)]
    arn, shard, numbers = dynamodb_records(aws, event_app.TABLE, keys)
    batch = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                          numbers[0], numbers[1], 2)  # fmt: skip
    payload = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "next"}}]}
    url = send(aws, batch, async_record(aws.arn("echo"), payload))
    target = flaky_target(aws, "dynamodbstreams", get_records=[client_error("AccessDenied")])
    run = replayer(aws)
    run.target = target

    tally = replay_records(aws.client("sqs"), url, run, limit=100)

    assert (tally.handled, tally.failed, tally.lost) == (1, 1, 0)
    assert any("AccessDenied" in note for note in tally.notes)
    assert event_app.lambda_calls == [("echo", payload)]
    assert len(aws.bodies(url)) == 1  # the batch, kept and visible


def test_an_expired_iterator_and_empty_pages_lose_no_record(aws: Emulator) -> None:
    keys = [f"x{n}-{time.monotonic_ns()}" for n in range(5)]
    arn, shard, numbers = dynamodb_records(aws, event_app.TABLE, keys)
    record = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                           numbers[1], numbers[3], 3)  # fmt: skip
    url = send(aws, record)
    empty = [lambda kwargs: {"Records": [], "NextShardIterator": kwargs["ShardIterator"]}] * 6
    # One record read, then the iterator expires, then empty pages: DynamoDB Streams may
    # answer several before the later records.
    first_only = [lambda kwargs: {**aws.client("dynamodbstreams").get_records(
        ShardIterator=kwargs["ShardIterator"], Limit=1)}]  # fmt: skip
    faults = [*first_only, client_error("ExpiredIteratorException"), *empty]
    run = replayer(aws)
    run.target = flaky_target(aws, "dynamodbstreams", get_records=faults)

    tally = replay_records(aws.client("sqs"), url, run, limit=100)

    assert (tally.handled, tally.records, tally.lost) == (1, 3, 0), tally.notes
    [batch] = event_app.stream_batches
    assert batch["values"] == keys[1:4]
    assert aws.bodies(url) == []


def test_a_trimmed_start_is_read_from_the_trim_horizon(aws: Emulator) -> None:
    keys = [f"t{n}-{time.monotonic_ns()}" for n in range(5)]
    arn, shard, numbers = dynamodb_records(aws, event_app.TABLE, keys)
    record = stream_record(aws.arn("handle_table"), "DDBStreamBatchInfo", arn, shard,
                           numbers[1], numbers[3], 3)  # fmt: skip

    def trimmed(kwargs: dict[str, Any]) -> Any:
        return client_error("TrimmedDataAccessException") if (
            kwargs["ShardIteratorType"] == "AT_SEQUENCE_NUMBER") else None  # fmt: skip

    url = send(aws, record)
    run = replayer(aws)
    run.target = flaky_target(aws, "dynamodbstreams", get_shard_iterator=[trimmed])

    tally = replay_records(aws.client("sqs"), url, run, limit=100)

    assert (tally.handled, tally.records, tally.lost) == (1, 3, 0), tally.notes
    [batch] = event_app.stream_batches
    assert batch["values"] == keys[1:4]  # from the horizon, only the batch's range


def test_a_batch_missing_records_is_replayed_but_kept_unless_discarded(aws: Emulator) -> None:
    values = [f"m{n}-{time.monotonic_ns()}" for n in range(3)]
    arn, shard, numbers = kinesis_records(aws, values)
    # The record says 5 records; the stream has 3 of them (the others trimmed).
    record = stream_record(aws.arn("handle_stream"), "KinesisBatchInfo", arn, shard,
                           numbers[0], numbers[2], 5)  # fmt: skip
    url = send(aws, record)
    sqs = aws.client("sqs")

    kept = replay_records(sqs, url, replayer(aws), limit=100)
    assert (kept.handled, kept.records, kept.lost) == (0, 3, 2)
    assert not kept.ok and any("kept (--discard-lost" in note for note in kept.notes)
    assert len(aws.bodies(url)) == 1

    discarded = replay_records(sqs, url, replayer(aws, discard_lost=True), limit=100)
    assert (discarded.handled, discarded.records, discarded.lost) == (1, 3, 2)
    assert aws.bodies(url) == []


# --- the local runtime's asynchronous failures -------------------------------------------------


def test_the_runtime_sends_a_failed_async_event_to_its_destination_as_lambdas_record(
    stack: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from local.events import stream_failures

    event_app.reset()
    destination = {"Fn::GetAtt": [FAILURE_QUEUE_ID, "Arn"]}
    invoke_config = {
        "MaximumRetryAttempts": 2,
        "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": destination}},
    }
    functions = {"HandleTopic": {"Properties": {"EventInvokeConfig": invoke_config}}}
    (tmp_path / "functions.json").write_text(json.dumps({"Resources": functions}))
    (tmp_path / "resources.json").write_text(json.dumps({"Resources": RESOURCES}))
    monkeypatch.setattr(stream_failures, "FUNCTION_SETTINGS", tmp_path / "functions.json")
    monkeypatch.setattr(stream_failures, "RESOURCES_TEMPLATE", tmp_path / "resources.json")
    monkeypatch.setenv("APP_STAGE", STAGE)
    url = stack.failure_queue()
    seen: list[Invocation] = []
    runtime = EventRuntime(event_app.app, stack.client, REGION, on_invocation=seen.append,
                           handlers=["handle_topic"], async_retry_seconds=0)  # fmt: skip
    runtime.start()
    try:
        assert runtime.wait_until_ready(20)
        event_app.behaviour["sns_raise_times"] = 99
        topic = stack.client("sns").create_topic(Name="fixture-topic")["TopicArn"]
        stack.client("sns").publish(TopicArn=topic, Message="poison")
        wait_for(lambda: stack.bodies(url) != [], timeout=30)
    finally:
        runtime.stop()
    [record] = stack.bodies(url)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(
        ":function:event-fixture-dev-handle_topic:$LATEST"
    )
    assert record["requestPayload"]["Records"][0]["Sns"]["Message"] == "poison"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert len(event_app.notifications) == 3
    assert seen[-1].outcome.endswith(f"(attempt 3; on-failure record sent to {FAILURE_QUEUE})")
    stack.client("sqs").delete_queue(QueueUrl=url)


def test_each_event_of_a_message_has_its_own_attempts_and_is_kept_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message of four events: 0 and 3 succeed, 1 and 2 always fail; the destination takes
    1's record and refuses 2's. Each event is recorded with its own error and attempts, and
    only 2 (no record holds it) goes to the failed queue: nothing is kept twice."""
    from moto import mock_aws

    from local.events import async_delivery
    from local.events.stream_failures import Destination

    sent: list[tuple[Any, str, int]] = []

    def send(runtime: Any, handler: str, event: Any, error: Exception, attempts: int) -> bool:
        sent.append((event, str(error), attempts))
        return bool(event["n"] == 1)

    monkeypatch.setattr(async_delivery, "send_async_failure", send)
    monkeypatch.setattr(async_delivery, "async_destination", lambda name: Destination("sqs", "q"))
    calls: list[int] = []

    class Runtime:
        async_retry_seconds = 0

        def __init__(self, sqs: Any) -> None:
            self.sqs = sqs

        def client(self, service: str) -> Any:
            return self.sqs

        def async_retry_delay(self, name: str) -> int:
            return self.async_retry_seconds

        def settings(self, name: str) -> tuple[int, int]:
            return 10, 128

        def invoke(self, name: str, source: str, event: Any) -> tuple[Any, Invocation]:
            calls.append(event["n"])
            invocation = Invocation(name, source, 1, 0.0, "ok")
            if event["n"] in (1, 2):
                return RuntimeError(f"event {event['n']} broke"), invocation
            return None, invocation

        def report(self, invocation: Invocation) -> None:
            pass

    class Multi(async_delivery.AsyncDelivery):
        SOURCE = "aws:test"

        def _connect(self, queue_url: str, queue_arn: str) -> None:
            pass

        def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"n": n} for n in range(4)]

    class Source:
        name = "handler"

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # in-process moto, no server
    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name=REGION)
        delivery = Multi(Runtime(sqs), Source())  # type: ignore[arg-type]
        delivery._connect_queues()
        queue = sqs.get_queue_url(QueueName="local-events-handler")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody="four events")
        for _ in range(10):
            messages = sqs.receive_message(
                QueueUrl=queue, AttributeNames=["ApproximateReceiveCount"]
            ).get("Messages", [])
            for message in messages:
                delivery._deliver(message)
        failed = sqs.get_queue_url(QueueName="local-events-handler-failed")["QueueUrl"]
        [kept] = sqs.receive_message(QueueUrl=failed, MaxNumberOfMessages=10)["Messages"]
        left = sqs.receive_message(QueueUrl=queue).get("Messages", [])
    assert json.loads(kept["Body"]) == {"events": [{"n": 2}]}
    assert sent == [({"n": 1}, "event 1 broke", 3), ({"n": 2}, "event 2 broke", 3)]
    assert sorted(calls) == [0, 1, 1, 1, 2, 2, 2, 3]  # each tried 3 times, no more, no less
    assert left == []
