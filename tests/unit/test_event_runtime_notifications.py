"""The local event runtime's S3 and EventBridge delivery, with the fixture app and moto (in
process, and the emulator process the local stack runs): S3's notification configuration
(merged, never replaced) and event shape, EventBridge rules and their events, and Lambda's
asynchronous invocation (3 attempts, then the failed queue)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import pytest

from local.events.async_delivery import AsyncDelivery
from local.events.s3 import s3_record
from tests.fixtures import event_app
from tests.unit.runtime_helpers import REGION, Client, Run, fixture_aws, runtime_starter

ACCOUNT = "123456789012"
BUCKET_ARN = f"arn:aws:s3:::{event_app.BUCKET}"
#: A failed event is tried again at once; a queue is long-polled for 1 s at most.
FAST = {"async_retry_seconds": 0, "idle_wait_seconds": 1}


@pytest.fixture
def aws_client(request: pytest.FixtureRequest, stage_env: dict[str, str]) -> Iterator[Client]:
    """The fixture app's bucket in moto: in process, or (param "emulator") in the emulator
    process the local stack runs."""
    with fixture_aws(getattr(request, "param", "in-process")) as client:
        client("s3").create_bucket(Bucket=event_app.BUCKET)
        yield client


@pytest.fixture
def start(aws_client: Client) -> Iterator[Callable[..., Run]]:
    """Starts the runtime for some of the fixture app's handlers; stops it after the test."""
    yield from runtime_starter(aws_client, FAST)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls a condition: the deadline bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def queue_url(client: Client, name: str) -> str:
    return str(client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def queue_depth(client: Client, name: str) -> int:
    attributes = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(client, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def drained(client: Client, handler: str) -> Callable[[], bool]:
    """Whether the runtime's queue of `handler` has nothing left to deliver."""
    return lambda: queue_depth(client, f"local-events-{handler}") == 0


def upload(client: Client, *keys: str, body: bytes = b"hello") -> list[str]:
    """Puts objects: their ETags (without the quotes)."""
    s3 = client("s3")
    return [
        s3.put_object(Bucket=event_app.BUCKET, Key=k, Body=body)["ETag"].strip('"') for k in keys
    ]


def uploaded_keys() -> list[str]:
    return [u["key"] for u in list(event_app.uploads)]


def notification_configuration(client: Client) -> dict[str, Any]:
    found = client("s3").get_bucket_notification_configuration(Bucket=event_app.BUCKET)
    found.pop("ResponseMetadata", None)
    return dict(found)


def kept(client: Client, handler: str) -> list[dict[str, Any]]:
    """The bodies in the failed queue of `handler`."""
    messages = client("sqs").receive_message(
        QueueUrl=queue_url(client, f"local-events-{handler}-failed"), MaxNumberOfMessages=10
    )
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


# --- S3 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aws_client", ["in-process", "emulator"], indirect=True)
def test_an_object_put_under_the_prefix_reaches_the_handler_in_s3s_shape(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    run = start("uploaded")
    before = datetime.now(UTC).replace(microsecond=0)
    [first, second] = upload(aws_client, "uploads/q1 report.txt", "uploads/q1 report.txt")
    wait_for(lambda: len(event_app.uploads) == 2)
    assert [len(u["event"]["Records"]) for u in event_app.uploads] == [1, 1]
    records = [u["event"]["Records"][0] for u in event_app.uploads]
    record = records[0]
    assert (record["eventVersion"], record["eventSource"], record["awsRegion"]) == (
        "2.1",
        "aws:s3",
        REGION,
    )
    assert record["eventName"] == "ObjectCreated:Put"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["eventTime"])
    assert datetime.fromisoformat(record["eventTime"]) >= before
    assert record["userIdentity"]["principalId"]
    assert record["requestParameters"]["sourceIPAddress"]
    assert set(record["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
    s3 = record["s3"]
    assert (s3["s3SchemaVersion"], s3["configurationId"]) == ("1.0", "local-events-uploaded")
    assert s3["bucket"]["name"] == event_app.BUCKET and s3["bucket"]["arn"] == BUCKET_ARN
    assert s3["bucket"]["ownerIdentity"]["principalId"]
    # URL-encoded as S3 sends it: the space as "+".
    assert s3["object"]["key"] == "uploads/q1+report.txt"
    assert (s3["object"]["size"], s3["object"]["eTag"]) == (5, first)
    assert [r["s3"]["object"]["eTag"] for r in records] == [first, second]
    # Later events of a key have greater sequencers.
    sequencers = [int(r["s3"]["object"]["sequencer"], 16) for r in records]
    assert sequencers[0] < sequencers[1]
    json.dumps(record)
    # Chalice's S3Event read it (and decoded the key).
    assert [(u["bucket"], u["key"]) for u in event_app.uploads] == [
        (event_app.BUCKET, "uploads/q1 report.txt")
    ] * 2
    wait_for(lambda: len(run.seen) == 2)
    assert [(i.handler, i.source, i.batch_size, i.outcome) for i in run.seen] == [
        ("uploaded", "aws:s3", 1, "ok")
    ] * 2


def test_objects_outside_the_filter_are_not_delivered(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    run = start("uploaded")
    upload(aws_client, "uploads/report.csv", "downloads/report.txt", "report.txt")
    upload(aws_client, "uploads/2026/last.txt")
    wait_for(lambda: bool(event_app.uploads))
    wait_for(drained(aws_client, "uploaded"))
    assert uploaded_keys() == ["uploads/2026/last.txt"]
    assert len(run.seen) == 1  # nor was S3's test event delivered
    assert event_app.uploads[0]["event"]["Records"][0]["s3"]["object"]["key"] == (
        "uploads/2026/last.txt"
    )


def test_the_buckets_notification_configuration_is_kept(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    sqs = aws_client("sqs")
    other = sqs.create_queue(QueueName="another-listener")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = aws_client("sns").create_topic(Name="bucket-deletions")["TopicArn"]
    existing = {
        "TopicConfigurations": [
            {"Id": "deletions", "TopicArn": topic, "Events": ["s3:ObjectRemoved:*"]}
        ],
        "QueueConfigurations": [
            {"Id": "everything", "QueueArn": other_arn, "Events": ["s3:ObjectCreated:*"]}
        ],
    }
    aws_client("s3").put_bucket_notification_configuration(
        Bucket=event_app.BUCKET, NotificationConfiguration=existing
    )
    start("uploaded")
    start("uploaded")  # a second start adds nothing
    found = notification_configuration(aws_client)
    assert found["TopicConfigurations"] == existing["TopicConfigurations"]
    [theirs, mine] = found["QueueConfigurations"]
    assert theirs == existing["QueueConfigurations"][0]
    assert mine["Id"] == "local-events-uploaded"
    assert mine["QueueArn"].endswith(":local-events-uploaded")
    assert mine["Events"] == ["s3:ObjectCreated:*"]
    assert mine["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": "uploads/"},
        {"Name": "suffix", "Value": ".txt"},
    ]
    # Each configuration does its work.
    upload(aws_client, "uploads/both.txt")
    wait_for(lambda: uploaded_keys() == ["uploads/both.txt"])
    got = sqs.receive_message(QueueUrl=other, MaxNumberOfMessages=10)["Messages"]
    bodies = [json.loads(m["Body"]) for m in got]
    keys = [unquote_plus(b["Records"][0]["s3"]["object"]["key"]) for b in bodies if "Records" in b]
    assert keys == ["uploads/both.txt"]
    # The queue lets the bucket send to it, as AWS requires.
    policy = json.loads(
        sqs.get_queue_attributes(
            QueueUrl=queue_url(aws_client, "local-events-uploaded"), AttributeNames=["Policy"]
        )["Attributes"]["Policy"]
    )
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": BUCKET_ARN}}


def test_a_failing_upload_is_tried_three_times_then_kept(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    run = start("uploaded")
    event_app.behaviour["upload_raise_times"] = 1
    upload(aws_client, "uploads/flaky.txt")
    wait_for(lambda: run.outcomes("aws:s3")[-1:] == ["ok"])
    assert uploaded_keys() == ["uploads/flaky.txt"] * 2  # failed once, then delivered
    assert run.outcomes("aws:s3")[0] == (
        "error: RuntimeError: upload handler crashed (attempt 1 of 3; retried in 0 s)"
    )
    # Retried with the very same event.
    assert event_app.uploads[0]["event"] == event_app.uploads[1]["event"]

    event_app.behaviour["upload_raise_times"] = 99
    upload(aws_client, "uploads/poison.txt")
    wait_for(lambda: queue_depth(aws_client, "local-events-uploaded-failed") == 1)
    assert uploaded_keys().count("uploads/poison.txt") == 3
    assert [o.split(" (")[1] for o in run.outcomes("aws:s3")[2:]] == [
        "attempt 1 of 3; retried in 0 s)",
        "attempt 2 of 3; retried in 0 s)",
        "attempt 3; moved to local-events-uploaded-failed)",
    ]
    [body] = kept(aws_client, "uploaded")
    # As S3 sent it.
    assert [unquote_plus(r["s3"]["object"]["key"]) for r in body["Records"]] == [
        "uploads/poison.txt"
    ]
    wait_for(drained(aws_client, "uploaded"))


def test_a_bucket_created_after_the_start_is_waited_for(
    aws_client: Client,
    start: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="local.events")
    monkeypatch.setattr(AsyncDelivery, "SETUP_RETRY_SECONDS", 0.05)
    aws_client("s3").delete_bucket(Bucket=event_app.BUCKET)
    run = start("uploaded", ready=False)
    assert not run.runtime.wait_until_ready(0.3)
    aws_client("s3").create_bucket(Bucket=event_app.BUCKET)
    assert run.runtime.wait_until_ready(5)
    upload(aws_client, "uploads/late.txt")
    wait_for(lambda: uploaded_keys() == ["uploads/late.txt"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # said once, not at every try
    assert warnings[0].startswith("uploaded: its events cannot be delivered yet")
    assert "NoSuchBucket" in warnings[0]


# --- EventBridge --------------------------------------------------------------------------


def put_event(client: Client, source: str, detail_type: str, detail: dict[str, Any]) -> str:
    """Puts an event on the default bus: its id."""
    answer = client("events").put_events(
        Entries=[
            {
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "Resources": [BUCKET_ARN],
                "Time": datetime(2026, 11, 26, 9, 30, 15, tzinfo=UTC),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    return str(answer["Entries"][0]["EventId"])


@pytest.mark.parametrize("aws_client", ["in-process", "emulator"], indirect=True)
def test_a_matching_event_reaches_the_eventbridge_handler_as_it_is(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    run = start("happened")
    put_event(aws_client, "other.app", "Fixture Happened", {"n": 0})
    put_event(aws_client, "fixture.app", "Something Else", {"n": 0})
    event_id = put_event(aws_client, "fixture.app", "Fixture Happened", {"n": 1, "tags": ["a"]})
    wait_for(lambda: bool(event_app.happenings))
    wait_for(drained(aws_client, "happened"))
    [happening] = event_app.happenings
    event = happening["event"]
    assert event == {
        "version": "0",
        "id": event_id,
        "detail-type": "Fixture Happened",
        "source": "fixture.app",
        "account": ACCOUNT,
        "time": "2026-11-26T09:30:15Z",
        "region": REGION,
        "resources": [BUCKET_ARN],
        "detail": {"n": 1, "tags": ["a"]},
    }
    # Chalice's CloudWatchEvent read it.
    assert happening["parsed"] == ("fixture.app", "Fixture Happened", {"n": 1, "tags": ["a"]})
    assert [(i.handler, i.source, i.batch_size, i.outcome) for i in run.seen] == [
        ("happened", "aws.events", 1, "ok")
    ]
    rule = aws_client("events").describe_rule(Name="local-events-happened")
    assert json.loads(rule["EventPattern"]) == event_app.EVENT_PATTERN
    assert rule["State"] == "ENABLED"


def test_a_failing_eventbridge_event_is_tried_three_times_then_kept(
    aws_client: Client, start: Callable[..., Run]
) -> None:
    run = start("happened")
    event_app.behaviour["happening_raise_times"] = 2
    put_event(aws_client, "fixture.app", "Fixture Happened", {"n": "flaky"})
    wait_for(lambda: run.outcomes("aws.events")[-1:] == ["ok"])
    assert len(event_app.happenings) == 3  # the last attempt succeeded: nothing kept

    event_app.behaviour["happening_raise_times"] = 99
    poison_id = put_event(aws_client, "fixture.app", "Fixture Happened", {"n": "poison"})
    wait_for(lambda: queue_depth(aws_client, "local-events-happened-failed") == 1)
    assert [h["event"]["detail"]["n"] for h in event_app.happenings] == ["flaky"] * 3 + [
        "poison"
    ] * 3
    outcomes = run.outcomes("aws.events")
    assert [o.split(" (")[1] for o in outcomes if o != "ok"] == [
        "attempt 1 of 3; retried in 0 s)",
        "attempt 2 of 3; retried in 0 s)",
    ] * 2 + ["attempt 3; moved to local-events-happened-failed)"]
    [body] = kept(aws_client, "happened")
    assert (body["id"], body["detail"]) == (poison_id, {"n": "poison"})
    wait_for(drained(aws_client, "happened"))


# --- the parts ----------------------------------------------------------------------------


def test_an_s3_record_is_completed_as_s3_sends_it() -> None:
    as_moto_sends_it = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "in%2Fa+b%3A1.txt", "size": 1}},
    }
    record = s3_record(as_moto_sends_it, ACCOUNT)
    assert record["s3"]["object"]["key"] == "in/a+b%3A1.txt"
    assert re.fullmatch(r"[0-9A-F]{18}", record["s3"]["object"]["sequencer"])
    assert record["s3"]["bucket"]["ownerIdentity"] == {"principalId": ACCOUNT}
    assert "sequencer" not in as_moto_sends_it["s3"]["object"]  # a copy
    # What is there already is kept; the key, encoded as S3 does, stays as it is.
    again = s3_record(record, "other")
    assert again == record
