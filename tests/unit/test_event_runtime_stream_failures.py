"""Stream mappings give up as the deployed ones do: MaximumRetryAttempts (splitting a batch
uses no retry), MaximumRecordAgeInSeconds, the stream's retention when neither is set; the
batch given up on goes to the on-failure destination as Lambda's on-failure record, and the
records after it are delivered. The settings come from the deploy's own files
(infra/functions.json, infra/resources.json)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chalice.app import DynamoDBEventConfig, KinesisEventConfig

from chalicelib.core import clock
from local.events import stream_failures
from local.events.stream_failures import Destination, FailedBatch, StreamMapping
from tests.fixtures import event_app
from tests.unit.runtime_helpers import Client, Run, fixture_aws, runtime_starter
from tests.unit.stream_mapping_helpers import (
    FAILURE_QUEUE,
    FAILURE_QUEUE_ID,
    TO_FAILURE_QUEUE,
    event_source_id,
    use_mappings,
)
from tests.unit.test_event_runtime_streams import (
    ACCOUNT,
    FAST,
    batches,
    invocations,
    put,
    quiet,
    wait_for,
)

KINESIS_ARRIVAL = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # to the millisecond
DYNAMODB_ARRIVAL = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # to the second
POISON_FOREVER = 10**6


@pytest.fixture
def aws_client(request: pytest.FixtureRequest, stage_env: dict[str, str]) -> Iterator[Client]:
    """The fixture app's streams and its failure queue, in moto (in process, or with param
    "emulator" in the emulator process)."""
    with fixture_aws(getattr(request, "param", "in-process")) as client:
        event_app.create_streams(client)
        client("sqs").create_queue(QueueName=FAILURE_QUEUE)
        yield client


@pytest.fixture
def start(aws_client: Client) -> Iterator[Callable[..., Run]]:
    yield from runtime_starter(aws_client, FAST)


@pytest.fixture
def mappings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """Gives the fixture's handlers these event source properties in functions.json."""

    def use(**by_handler: dict[str, Any]) -> None:
        use_mappings(monkeypatch, tmp_path, by_handler)

    return use


class FailureQueue:
    """What reached the fixture's on-failure queue (received and deleted as it comes)."""

    def __init__(self, client: Client, name: str = FAILURE_QUEUE) -> None:
        self._sqs = client("sqs")
        self._url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
        self.records: list[dict[str, Any]] = []

    def received(self) -> list[dict[str, Any]]:
        for message in self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            self.records.append(json.loads(message["Body"]))
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])
        return self.records


def numbers_of(handler: str) -> dict[str, str]:
    """value -> sequence number, of what `handler` was given."""
    return {v: n for b in batches(handler) for v, n in zip(b["values"], b["numbers"], strict=True)}


def check_on_failure_record(
    record: dict[str, Any],
    *,
    handler: str,
    info: str,
    condition: str,
    invocations: int,
    function_error: bool,
    numbers: list[str],
    stream_arn: str,
    arrival: str,
) -> dict[str, Any]:
    """`record` has the shape of Lambda's on-failure record for a stream batch, with these
    values; returns its batch info."""
    assert set(record) == {"requestContext", "responseContext", "version", "timestamp", info}
    context = record["requestContext"]
    assert set(context) == {"requestId", "functionArn", "condition", "approximateInvokeCount"}
    assert re.fullmatch(r"[0-9a-f-]{36}", context["requestId"])
    assert context["functionArn"] == (
        f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:event-fixture-dev-{handler}"
    )
    assert (context["condition"], context["approximateInvokeCount"]) == (condition, invocations)
    response = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = "Unhandled"
    assert record["responseContext"] == response
    assert record["version"] == "1.0"
    assert re.fullmatch(KINESIS_ARRIVAL, record["timestamp"])
    batch = record[info]
    assert set(batch) == {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    }
    assert (batch["startSequenceNumber"], batch["endSequenceNumber"]) == (numbers[0], numbers[-1])
    assert (batch["batchSize"], batch["streamArn"]) == (len(numbers), stream_arn)
    assert re.fullmatch(arrival, batch["approximateArrivalOfFirstRecord"])
    assert re.fullmatch(arrival, batch["approximateArrivalOfLastRecord"])
    return dict(batch)


def kinesis_arn(client: Client) -> str:
    summary = client("kinesis").describe_stream_summary(StreamName=event_app.KINESIS_STREAM)
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


# --- MaximumRetryAttempts -----------------------------------------------------------------


def test_a_poison_kinesis_record_goes_to_the_failure_queue_after_its_retries(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    mappings(
        handle_stream={
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 2,
            **TO_FAILURE_QUEUE,
        }
    )
    values = ["a", "b", "p", "c", "d", "e", "f", "g"]
    written = put(aws_client, *values)
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    run = start("handle_stream")
    wait_for(lambda: event_app.handled("handle_stream") == [v for v in values if v != "p"])
    wait_for(lambda: len(failures.received()) == 1)
    quiet()
    # Split down to p (no retry used), then p alone: its first invocation and 2 retries.
    assert invocations("handle_stream") == [
        (["a", "b", "p", "c"], "raised"),
        (["a", "b"], "ok"),
        (["p", "c"], "raised"),
        (["p"], "raised"),
        (["p"], "raised"),
        (["p"], "raised"),
        (["c"], "ok"),  # the records after it flow
        (["d", "e", "f", "g"], "ok"),
    ]
    outcomes = run.outcomes("aws:kinesis")
    assert outcomes[3].endswith("crashed (retry 1 of 2 in 0.02 s)")
    assert outcomes[4].endswith("crashed (retry 2 of 2 in 0.04 s)")
    assert outcomes[5].endswith(
        f"crashed (RetryAttemptsExhausted: 1 record sent to {FAILURE_QUEUE})"
    )
    [record] = failures.received()
    shard, number = written[2]
    batch = check_on_failure_record(
        record,
        handler="handle_stream",
        info="KinesisBatchInfo",
        condition="RetryAttemptsExhausted",
        invocations=3,
        function_error=True,
        numbers=[number],
        stream_arn=kinesis_arn(aws_client),
        arrival=KINESIS_ARRIVAL,
    )
    assert batch["shardId"] == shard
    arrived = batches("handle_stream")[3]["records"][0]["kinesis"]["approximateArrivalTimestamp"]
    first = datetime.fromisoformat(batch["approximateArrivalOfFirstRecord"])
    assert abs(first.timestamp() - arrived) < 0.002
    assert run.checkpoint("handle_stream") == {shard: written[-1][1]}


@pytest.mark.parametrize("aws_client", ["in-process", "emulator"], indirect=True)
def test_a_poison_dynamodb_record_goes_to_the_failure_queue_after_its_retries(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    mappings(
        handle_table={
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 1,
            **TO_FAILURE_QUEUE,
        }
    )
    dynamodb = aws_client("dynamodb")
    for pk in ("u1", "u2", "u3", "u4", "u5"):
        dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": pk}})
    event_app.behaviour["stream_poison"] = {"u3": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    run = start("handle_table")
    wait_for(lambda: event_app.handled("handle_table") == ["u1", "u2", "u4", "u5"])
    wait_for(lambda: len(failures.received()) == 1)
    dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": "u6"}})
    wait_for(lambda: event_app.handled("handle_table")[-1:] == ["u6"])
    quiet()
    assert invocations("handle_table") == [
        (["u1", "u2", "u3", "u4", "u5"], "raised"),
        (["u1", "u2"], "ok"),
        (["u3", "u4", "u5"], "raised"),
        (["u3"], "raised"),
        (["u3"], "raised"),  # its one retry
        (["u4", "u5"], "ok"),
        (["u6"], "ok"),
    ]
    [record] = failures.received()
    stream_arn = dynamodb.describe_table(TableName=event_app.TABLE)["Table"]["LatestStreamArn"]
    batch = check_on_failure_record(
        record,
        handler="handle_table",
        info="DDBStreamBatchInfo",
        condition="RetryAttemptsExhausted",
        invocations=2,
        function_error=True,
        numbers=[numbers_of("handle_table")["u3"]],
        stream_arn=stream_arn,
        arrival=DYNAMODB_ARRIVAL,
    )
    [shard] = run.checkpoint("handle_table")
    assert batch["shardId"] == shard
    assert run.checkpoint("handle_table")[shard] == numbers_of("handle_table")["u6"]


def test_without_bisection_the_whole_batch_is_retried_then_given_up(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    mappings(handle_stream={"MaximumRetryAttempts": 1, **TO_FAILURE_QUEUE})
    written = put(aws_client, "a", "b", "p", "c", "d", "e")
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    start("handle_stream")
    wait_for(lambda: event_app.handled("handle_stream") == ["d", "e"])
    wait_for(lambda: len(failures.received()) == 1)
    quiet()
    # The same four records twice (the first invocation and one retry), never split.
    assert invocations("handle_stream") == [
        (["a", "b", "p", "c"], "raised"),
        (["a", "b", "p", "c"], "raised"),
        (["d", "e"], "ok"),
    ]
    check_on_failure_record(
        failures.received()[0],
        handler="handle_stream",
        info="KinesisBatchInfo",
        condition="RetryAttemptsExhausted",
        invocations=2,
        function_error=True,
        numbers=[number for _, number in written[:4]],
        stream_arn=kinesis_arn(aws_client),
        arrival=KINESIS_ARRIVAL,
    )


def test_no_retry_at_all_with_maximum_retry_attempts_0(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    mappings(
        handle_stream={
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 0,
            **TO_FAILURE_QUEUE,
        }
    )
    put(aws_client, "a", "b", "p", "c")
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    start("handle_stream")
    wait_for(lambda: event_app.handled("handle_stream") == ["a", "b", "c"])
    wait_for(lambda: len(failures.received()) == 1)
    quiet()
    assert invocations("handle_stream") == [
        (["a", "b", "p", "c"], "raised"),
        (["a", "b"], "ok"),
        (["p", "c"], "raised"),
        (["p"], "raised"),  # once alone, no retry
        (["c"], "ok"),
    ]
    assert failures.received()[0]["requestContext"]["approximateInvokeCount"] == 1


def test_partial_batch_failures_use_the_retries_of_the_failed_records_batch(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    """ReportBatchItemFailures as before (the checkpoint just before the lowest failed
    record, the next batch from there), and each such answer is a failed invocation."""
    mappings(handle_stream={"MaximumRetryAttempts": 1, **TO_FAILURE_QUEUE})
    values = ["a", "b", "c", "d", "e", "f", "g", "h"]
    written = dict(zip(values, (number for _, number in put(aws_client, *values)), strict=True))
    event_app.behaviour["stream_partial"] = {"c": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    run = start("handle_stream", report_batch_item_failures=True)
    wait_for(lambda: len(failures.received()) == 1)
    wait_for(lambda: event_app.handled("handle_stream")[-2:] == ["g", "h"])
    quiet()
    assert invocations("handle_stream") == [
        (["a", "b", "c", "d"], "partial"),
        (["c", "d", "e", "f"], "partial"),  # its one retry, from c
        (["g", "h"], "ok"),
    ]
    first, second, _ = run.outcomes("aws:kinesis")
    assert first == (
        f"partial: 1 of 4 failed (retry 1 of 1 from sequence number {written['c']} in 0.01 s)"
    )
    assert second == (
        f"partial: 1 of 4 failed (RetryAttemptsExhausted: 4 records sent to {FAILURE_QUEUE})"
    )
    check_on_failure_record(
        failures.received()[0],
        handler="handle_stream",
        info="KinesisBatchInfo",
        condition="RetryAttemptsExhausted",
        invocations=2,
        function_error=False,  # the function answered: no functionError
        numbers=[written[v] for v in "cdef"],
        stream_arn=kinesis_arn(aws_client),
        arrival=KINESIS_ARRIVAL,
    )


def test_an_sns_topic_can_be_the_destination(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    sns, sqs = aws_client("sns"), aws_client("sqs")
    topic = sns.create_topic(Name="fixture-failures")["TopicArn"]
    url = sqs.create_queue(QueueName="fixture-topic-copy")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    topic_destination = {"OnFailure": {"Type": "SNS", "Destination": {"Ref": "FixtureTopic"}}}
    mappings(handle_stream={"MaximumRetryAttempts": 0, "DestinationConfig": topic_destination})
    put(aws_client, "p", "q")
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    copies = FailureQueue(aws_client, "fixture-topic-copy")
    start("handle_stream")
    wait_for(lambda: len(copies.received()) == 1)
    assert copies.received()[0]["KinesisBatchInfo"]["batchSize"] == 2
    put(aws_client, "r")
    wait_for(lambda: event_app.handled("handle_stream") == ["r"])


def test_a_destination_that_refuses_is_logged_and_reading_goes_on(
    aws_client: Client,
    start: Callable[..., Run],
    mappings: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="local.events")
    mappings(handle_stream={"MaximumRetryAttempts": 0, **TO_FAILURE_QUEUE})
    aws_client("sqs").delete_queue(QueueUrl=FailureQueue(aws_client)._url)
    [(_, number)] = put(aws_client, "p")
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    run = start("handle_stream")
    wait_for(lambda: "on-failure record not delivered" in caplog.text)
    put(aws_client, "q")
    wait_for(lambda: event_app.handled("handle_stream") == ["q"])
    attempts = [r for r in caplog.records if "sending an on-failure record" in r.message]
    assert len(attempts) == stream_failures.DESTINATION_ATTEMPTS
    [logged] = [r.message for r in caplog.records if "not delivered" in r.message]
    record = json.loads(logged.split("here it is: ", 1)[1])
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == number
    assert run.outcomes("aws:kinesis")[0].endswith(
        "(RetryAttemptsExhausted: 1 record given up, on-failure record logged)"
    )


# --- record age ---------------------------------------------------------------------------


class MovableClock:
    """The system's time plus an offset a test moves."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def test_records_older_than_maximum_record_age_are_given_up(
    aws_client: Client, start: Callable[..., Run], mappings: Callable[..., None]
) -> None:
    mappings(
        handle_stream={
            "BisectBatchOnFunctionError": True,
            "MaximumRecordAgeInSeconds": 60,
            **TO_FAILURE_QUEUE,
        }
    )
    [(_, number)] = put(aws_client, "p")
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    failures = FailureQueue(aws_client)
    moved = MovableClock()
    with clock.use(moved):
        start("handle_stream")
        wait_for(lambda: len(batches("handle_stream")) >= 2)  # no retry limit: retried
        moved.offset = timedelta(seconds=61)
        wait_for(lambda: len(failures.received()) == 1)
        moved.offset = timedelta()
        tried = len(batches("handle_stream"))
        put(aws_client, "q")
        wait_for(lambda: event_app.handled("handle_stream") == ["q"])
    quiet()
    assert invocations("handle_stream") == [(["p"], "raised")] * tried + [(["q"], "ok")]
    check_on_failure_record(
        failures.received()[0],
        handler="handle_stream",
        info="KinesisBatchInfo",
        condition="RecordAgeExceeded",
        invocations=tried,
        function_error=True,
        numbers=[number],
        stream_arn=kinesis_arn(aws_client),
        arrival=KINESIS_ARRIVAL,
    )


def test_with_no_limit_at_all_records_are_retried_until_the_stream_drops_them(
    aws_client: Client,
    start: Callable[..., Run],
    mappings: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lambda's defaults (no limit, no destination): retried until the record expires from
    the stream (24 h here), then dropped, as AWS does; the shard goes on."""
    caplog.set_level(logging.WARNING, logger="local.events")
    mappings(handle_table={})
    dynamodb = aws_client("dynamodb")
    dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": "p"}})
    event_app.behaviour["stream_poison"] = {"p": POISON_FOREVER}
    moved = MovableClock()
    with clock.use(moved):
        start("handle_table")
        wait_for(lambda: len(batches("handle_table")) >= 3)
        moved.offset = timedelta(hours=23, minutes=59)
        tried = len(batches("handle_table"))
        wait_for(lambda: len(batches("handle_table")) > tried)  # still retried
        moved.offset = timedelta(hours=24, seconds=1)
        wait_for(lambda: "RecordAgeExceeded: 1 record" in caplog.text)
        moved.offset = timedelta()
        dynamodb.put_item(TableName=event_app.TABLE, Item={"pk": {"S": "q"}})
        wait_for(lambda: event_app.handled("handle_table") == ["q"])
    assert "dropped: the mapping has no on-failure destination" in caplog.text


# --- the settings ---------------------------------------------------------------------------


def test_the_apps_stream_mappings_are_read_from_what_the_deploy_applies(
    stage_env: dict[str, str],
) -> None:
    """Every stream handler of the app has, locally, the settings infra/functions.json gives
    its mapping; each has a bound and an on-failure queue of infra/resources.json."""
    from chalice.utils import to_cfn_resource_name

    from app import app

    functions = json.loads(stream_failures.FUNCTION_SETTINGS.read_text())["Resources"]
    resources = json.loads(stream_failures.RESOURCES_TEMPLATE.read_text())["Resources"]
    kinds = {KinesisEventConfig: "Kinesis", DynamoDBEventConfig: "Dynamodb"}
    streams = [s for s in app.event_sources if type(s) in kinds]
    assert len(streams) >= 3
    for source in streams:
        kind = kinds[type(source)]
        logical_id = to_cfn_resource_name(source.name)
        deployed = functions[logical_id]["Properties"]["Events"][f"{logical_id}{kind}EventSource"]
        settings = deployed["Properties"]
        mapping = stream_failures.stream_mapping(source.name, kind)
        queue_id = settings["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        queue = resources[queue_id]["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", "dev")
        assert mapping == StreamMapping(
            bisect=settings.get("BisectBatchOnFunctionError", False),
            maximum_retry_attempts=settings["MaximumRetryAttempts"],
            maximum_record_age_seconds=settings.get("MaximumRecordAgeInSeconds", -1),
            destination=Destination("sqs", queue),
        )
        assert 0 <= mapping.maximum_retry_attempts <= 10_000  # bounded


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        ({"MaximumRetryAttempts": 10_001}, "MaximumRetryAttempts must be -1 to 10000"),
        ({"MaximumRetryAttempts": "10"}, "MaximumRetryAttempts must be -1 to 10000"),
        ({"MaximumRecordAgeInSeconds": 59}, "MaximumRecordAgeInSeconds must be -1 or 60 to"),
        ({"BisectBatchOnFunctionError": "yes"}, "BisectBatchOnFunctionError must be true"),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": ["Nope", "Arn"]}}}},
            "is not a AWS::SQS::Queue of resources.json",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": {"Ref": FAILURE_QUEUE_ID}}}},
            "is not a AWS::SNS::Topic of resources.json",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:s3:::bucket"}}},
            "not an SQS queue or SNS topic ARN",
        ),
    ],
)
def test_settings_the_deploy_would_refuse_are_refused(
    mappings: Callable[..., None], stage_env: dict[str, str], properties: Any, problem: str
) -> None:
    mappings(handle_stream=properties)
    with pytest.raises(ValueError, match=re.escape(problem)):
        stream_failures.stream_mapping("handle_stream", "Kinesis")


def test_settings_and_their_defaults(
    mappings: Callable[..., None], stage_env: dict[str, str]
) -> None:
    arn = {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}}}
    mappings(handle_stream=arn, handle_table={"MaximumRecordAgeInSeconds": 3600})
    assert stream_failures.stream_mapping("handle_stream", "Kinesis") == StreamMapping(
        destination=Destination("sqs", "q")
    )
    assert stream_failures.stream_mapping("handle_table", "Dynamodb") == StreamMapping(
        maximum_record_age_seconds=3600
    )
    # Not in functions.json: Lambda's defaults, no limit and no destination.
    assert stream_failures.stream_mapping("latest_stream", "Kinesis") == StreamMapping()
    assert event_source_id("handle_table") == ("HandleTable", "HandleTableDynamodbEventSource")
    assert not StreamMapping().exhausted(10**9)
    assert StreamMapping(maximum_retry_attempts=2).exhausted(3)
    assert not StreamMapping(maximum_retry_attempts=2).exhausted(2)


def test_the_on_failure_record_of_a_batch_never_invoked() -> None:
    """Records too old before any invocation: no responseContext, no invocation counted."""
    arrived = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    failed = FailedBatch(
        "RecordAgeExceeded", "shardId-1", "arn:s", ["7", "9"], (arrived, arrived), 0, False
    )
    with clock.use(lambda: datetime(2026, 11, 26, 12, 5, tzinfo=UTC)):
        record = stream_failures.on_failure_record(failed, "arn:f", "DDBStreamBatchInfo", "seconds")
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record
    assert record["timestamp"] == "2026-11-26T12:05:00.000Z"
    assert record["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"] == "2026-11-26T12:00:00Z"
