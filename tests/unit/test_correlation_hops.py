"""The correlation id across every hop, against moto provisioned like the real stack: the
users table item and its stream, SNS (raw and enveloped) into SQS, an upload's metadata and
its thumbnail task, the telemetry stream, quarantine, alerts and erasure follow-ups; each
handler's lines carry the id of the request that started its work."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from typing import Any

import boto3
import requests
from botocore.config import Config

from chalicelib.core import correlation
from chalicelib.core.dynamo import from_item
from local.events.dynamodb_streams import dynamodb_lambda_record
from local.events.kinesis import kinesis_lambda_record
from local.events.sqs import lambda_record
from local.inprocess import mailed_code
from tests.unit.api_helpers import PASSWORD, ApiClient
from tests.unit.conftest import Lines

REGION = "us-east-1"


def lines_of(lines: list[dict[str, Any]], function: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("function_name") == function]


def receive(url: str) -> list[dict[str, Any]]:
    return boto3.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
        AttributeNames=["All"],
    ).get("Messages", [])  # fmt: skip


def as_lambda_records(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return [lambda_record(m, arn["QueueArn"], REGION) for m in receive(url)]


def register(client: Any, email: str, correlation_id: str) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "X-Correlation-Id": correlation_id}
    asked = client.http.post("/register", headers=headers, body=json.dumps({"email": email,
                             "name": "Corr Elation"}))  # fmt: skip
    assert asked.status_code == 202, asked.body
    confirm = {"email": email, "code": mailed_code(email), "password": PASSWORD}
    made = client.http.post("/register/confirm", headers=headers, body=json.dumps(confirm))
    assert made.status_code == 201, made.body
    return dict(made.json_body)


def stream_records(aws: dict[str, str], key: str) -> list[dict[str, Any]]:
    """The users table's stream records of item `key`, as Lambda delivers them."""
    streams = boto3.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
    arn = (
        aws.get("UsersTableStreamArn")
        or boto3.client("dynamodb").describe_table(TableName=aws["UsersTableName"])["Table"][
            "LatestStreamArn"
        ]
    )
    found = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found += streams.get_records(ShardIterator=iterator)["Records"]
    return [
        dynamodb_lambda_record(r, arn, REGION)
        for r in found
        if r["dynamodb"]["Keys"]["pk"]["S"] == key
    ]


# --- users: the item, its stream, its events and their handlers ---------------------------


def test_a_registration_stamps_the_user_item_and_its_event_carries_the_id(
    client: Any, aws: dict[str, str], accounts: Any, log_lines: Lines
) -> None:
    user = register(client, "corr@example.com", "reg-1")
    requests_lines = lines_of(log_lines(), "api_handler")
    assert [line["route"] for line in requests_lines if line["message"] == "request"] == [
        "/register", "/register/confirm",
    ]  # fmt: skip
    assert all(line["correlation_id"] == "reg-1" for line in requests_lines)
    key = f"USER#{user['user_id']}"
    item = boto3.client("dynamodb").get_item(
        TableName=aws["UsersTableName"], Key={"pk": {"S": key}}
    )["Item"]
    assert item["correlation_id"] == {"S": "reg-1"}

    # Bookkeeping: never in what the API shows or exports.
    api = ApiClient(client, accounts.sign_in("corr@example.com"))
    assert "correlation_id" not in api.get(f"/users/{user['user_id']}").json_body
    exported = api.get(f"/users/{user['user_id']}/export")
    assert exported.status_code == 200 and b"reg-1" not in exported.body

    # The stream record -> user-created with the attribute -> the onboarding queue (raw).
    [insert] = [r for r in stream_records(aws, key) if r["eventName"] == "INSERT"]
    assert correlation.of_stream_record(insert) == "reg-1"
    assert client.lambda_.invoke("publish_user_events", {"Records": [insert]}).payload is None
    [queued] = as_lambda_records(aws["OnboardingQueueUrl"])
    assert correlation.of_sqs_record(queued) == "reg-1"
    client.lambda_.invoke("onboard_users", {"Records": [queued]})

    lines = log_lines()
    for function in ("publish_user_events", "onboard_users"):
        assert lines_of(lines, function), function
        assert all(line["correlation_id"] == "reg-1" for line in lines_of(lines, function))


def test_a_delete_stamps_the_removed_item_so_user_deleted_carries_its_id(
    client: Any, aws: dict[str, str], accounts: Any
) -> None:
    user = register(client, "gone@example.com", "reg-2")
    api = ApiClient(client, accounts.sign_in("gone@example.com"))
    deleted = api.delete(f"/users/{user['user_id']}", headers={"X-Correlation-Id": "del-1"})
    assert deleted.status_code == 204, deleted.body
    [remove] = [
        r for r in stream_records(aws, f"USER#{user['user_id']}") if r["eventName"] == "REMOVE"
    ]
    assert correlation.of_stream_record(remove) == "del-1"
    client.lambda_.invoke("publish_user_events", {"Records": [remove]})
    [queued] = as_lambda_records(aws["UserErasureQueueUrl"])
    assert correlation.of_sqs_record(queued) == "del-1"


def test_an_erasure_follow_up_carries_the_passes_id(aws: dict[str, str]) -> None:
    from chalicelib.users.erasure import SqsFollowUps

    url = aws["UserErasureQueueUrl"]
    with correlation.bound("del-2"):
        SqsFollowUps(lambda: url).schedule('{"user_id": "x"}', 0)
    [message] = as_lambda_records(url)
    assert correlation.of_sqs_record(message) == "del-2"


# --- images: the upload's metadata, the thumbnail task ------------------------------------


def test_an_upload_carries_its_requests_id_through_the_pipeline(
    client: Any, aws: dict[str, str], accounts: Any, log_lines: Lines
) -> None:
    from tests.unit.test_images_aws import photo

    _, token = accounts.register()
    api = ApiClient(client, token)
    data = photo(64, 48)
    answer = api.post("/images", {"content_type": "image/jpeg", "size": len(data)},
                      headers={"X-Correlation-Id": "up-1"})  # fmt: skip
    assert answer.status_code == 202, answer.body
    form = answer.json_body["upload"]
    assert form["fields"]["x-amz-meta-correlation-id"] == "up-1"
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    assert {"x-amz-meta-correlation-id": "up-1"} in policy["conditions"]  # exactly this id
    sent = requests.post(form["url"], data=form["fields"],
                         files={"file": ("p", data, "image/jpeg")}, timeout=10)  # fmt: skip
    assert sent.status_code in (200, 201, 204), sent.text
    head = boto3.client("s3").head_object(
        Bucket=aws["UploadsBucketName"], Key=form["fields"]["key"]
    )
    assert head["Metadata"] == {"correlation-id": "up-1"}

    client.lambda_.invoke(
        "analyze_image", {"Records": as_lambda_records(aws["ImageUploadsQueueUrl"])}
    )
    [task] = as_lambda_records(aws["ThumbnailsQueueUrl"])
    assert correlation.of_sqs_record(task) == "up-1"
    client.lambda_.invoke("make_thumbnails", {"Records": [task]})
    image = api.get(f"/images/{answer.json_body['image_id']}").json_body
    assert image["status"] == "ready" and "correlation_id" not in image

    lines = log_lines()
    analysed = [
        line for line in lines_of(lines, "analyze_image") if line["message"] == "image analysed"
    ]
    assert [line["correlation_id"] for line in analysed] == ["up-1"]
    finished = lines_of(lines, "make_thumbnails")
    assert finished and all(line["correlation_id"] == "up-1" for line in finished)


# --- telemetry: the stream payload, never stored; quarantine and alerts -------------------


def test_events_carry_their_requests_id_on_the_stream_but_not_into_tables_or_lake(
    client: Any, aws: dict[str, str], api: Any, log_lines: Lines
) -> None:
    from tests.unit.test_telemetry_support import ARRIVAL, activity

    for n, correlation_id in ((1, "ev-1"), (2, "ev-2")):
        answer = api.post(
            "/events", {"events": [activity(n)]}, headers={"X-Correlation-Id": correlation_id}
        )
        assert answer.status_code == 202, answer.body
    kinesis = boto3.client("kinesis")
    stream = aws["TelemetryStreamName"]
    batch = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        batch += [
            kinesis_lambda_record(r, shard["ShardId"], aws["TelemetryStreamArn"], REGION, "role")
            for r in kinesis.get_records(ShardIterator=iterator)["Records"]
        ]
    for record in batch:  # as if taken at the test clock's time (the events' timestamps)
        record["kinesis"]["approximateArrivalTimestamp"] = ARRIVAL
    payloads = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in batch]
    assert sorted(p["correlation_id"] for p in payloads) == ["ev-1", "ev-2"]

    answer = client.lambda_.invoke("process_telemetry", {"Records": batch}).payload
    assert answer == {"batchItemFailures": []}
    done = [x for x in lines_of(log_lines(), "process_telemetry") if x["message"] == "invocation"]
    [done] = done
    assert done["correlation_ids"] == ["ev-1", "ev-2"]  # a batch of two requests' events

    dynamodb = boto3.client("dynamodb")
    stored = dynamodb.scan(TableName="serverless-app-dev-activities")["Items"]
    assert len(stored) == 2 and not any("correlation_id" in item for item in stored)
    s3 = boto3.client("s3")
    [archive] = s3.list_objects_v2(Bucket=aws["DataLakeBucketName"])["Contents"]
    body = s3.get_object(Bucket=aws["DataLakeBucketName"], Key=archive["Key"])["Body"].read()
    assert b"ev-1" not in gzip.decompress(body)


def test_quarantined_records_and_alerts_carry_their_records_ids(aws: dict[str, str]) -> None:
    from chalicelib.telemetry.delivery import SnsAlerts, SqsQuarantine
    from local.inbox import subscribe_inbox

    quarantine = aws["TelemetryQuarantineQueueUrl"]
    with correlation.bound("invocation-id"):
        not_sent = SqsQuarantine(lambda: quarantine).send([
            {"dedup_id": "s:1", "data": "eA==", "correlation_id": "ev-3"},
            {"dedup_id": "s:2", "data": "eA=="},
        ])  # fmt: skip
    assert not_sent == []
    messages = {json.loads(m["body"])["dedup_id"]: m for m in as_lambda_records(quarantine)}
    assert correlation.of_sqs_record(messages["s:1"]) == "ev-3"
    assert correlation.of_sqs_record(messages["s:2"]) == "invocation-id"
    assert messages["s:1"]["messageAttributes"]["dedup_id"]["stringValue"] == "s:1"

    inbox = subscribe_inbox(boto3.client("sqs"), boto3.client("sns"), aws["AnomalyAlertsTopicArn"])
    alert = {"severity": "high", "type": "metric_anomaly", "correlation_id": "ev-4"}
    assert SnsAlerts(lambda: aws["AnomalyAlertsTopicArn"]).send_alerts([alert]) == []
    [published] = as_lambda_records(inbox)
    assert correlation.of_sqs_record(published) == "ev-4"  # raw delivery: an SQS attribute


def test_an_sns_envelope_in_a_queue_carries_the_attribute(aws: dict[str, str]) -> None:
    """A queue subscribed without raw delivery gets the SNS envelope: the id is inside."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = sqs.create_queue(QueueName=f"envelope-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=aws["UserCreatedTopicArn"], Protocol="sqs", Endpoint=arn["QueueArn"])
    sns.publish(TopicArn=aws["UserCreatedTopicArn"], Message="{}",
                MessageAttributes=correlation.message_attributes("env-1"))  # fmt: skip
    [message] = as_lambda_records(url)
    assert message["messageAttributes"] == {} and correlation.of_sqs_record(message) == "env-1"


def test_stream_item_bookkeeping_reads_back_as_plain_items() -> None:
    """`from_item` keeps the attribute; the public view drops it."""
    from chalicelib.users.model import public_view

    item = from_item({"user_id": {"S": "u"}, "correlation_id": {"S": "x"}})
    assert item["correlation_id"] == "x" and "correlation_id" not in public_view(item)
