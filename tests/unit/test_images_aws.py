"""The image pipeline against moto provisioned like the real stack: the API (presigned POST,
links, lists), the bucket's S3 -> SQS notification, both SQS handlers delivered the way
Lambda's event source mapping does it, the dead-letter queues, and the adapters' edge cases."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from PIL import Image

from chalicelib.images.model import MAX_RECEIVES, MAX_UPLOAD_BYTES
from local.events.sqs import lambda_record

REGION = "us-east-1"
BUCKET = "serverless-app-dev-uploads"


def photo(width: int = 4000, height: int = 3000, orientation: int = 1) -> bytes:
    """A JPEG whose left half is red and right half blue, with an EXIF orientation."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[274] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def receive(url: str) -> list[dict[str, Any]]:
    return (
        boto3.client("sqs")
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        .get("Messages", [])
    )


def deliver(client: Any, url: str, function: str) -> tuple[int, str | None]:
    """One poll of the queue as Lambda's event source mapping does it (Chalice sets no
    ReportBatchItemFailures): an error leaves the batch; success deletes it. Returns the
    number of messages and the error's type, if any."""
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    messages = receive(url)
    if not messages:
        return 0, None
    event = {"Records": [lambda_record(m, arn["QueueArn"], REGION) for m in messages]}
    try:
        client.lambda_.invoke(function, event)
    except Exception as error:
        return len(messages), type(error).__name__
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages), None


def upload(api: Any, data: bytes, content_type: str = "image/jpeg") -> dict[str, Any]:
    """POST /images, then the presigned POST itself, as a browser would send it."""
    answer = api.post("/images", {"content_type": content_type, "size": len(data)})
    assert answer.status_code == 202, answer.body
    created = answer.json_body
    form = created["upload"]
    sent = requests.post(
        form["url"], data=form["fields"], files={"file": ("photo", data, content_type)}, timeout=10
    )
    assert sent.status_code in (200, 201, 204), sent.text
    return dict(created)


def run_pipeline(client: Any, aws: dict[str, str]) -> None:
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")
    deliver(client, aws["ThumbnailsQueueUrl"], "make_thumbnails")


@pytest.fixture
def user(accounts: Any) -> tuple[dict[str, Any], Any]:
    from tests.unit.api_helpers import ApiClient

    profile, token = accounts.register()
    return profile, ApiClient(accounts._client, token)


# --- end to end ---------------------------------------------------------------------------


def test_upload_to_ready_with_labels_and_upright_thumbnails(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    profile, api = user
    created = upload(api, photo(4000, 3000, orientation=6))  # a portrait shot, sensor sideways
    assert created["key"] == f"uploads/{profile['user_id']}/{created['image_id']}.jpg"
    run_pipeline(client, aws)

    answer = api.get(f"/images/{created['image_id']}")
    assert answer.status_code == 200, answer.body
    image = answer.json_body
    assert image["status"] == "ready"
    assert (image["width"], image["height"]) == (3000, 4000)
    assert image["labels"] and all(label["confidence"] >= 80 for label in image["labels"])
    assert {k: (v["width"], v["height"]) for k, v in image["thumbnails"].items()} == {
        "128": (96, 128),
        "512": (384, 512),
    }
    s3 = boto3.client("s3")
    thumbnail = s3.get_object(Bucket=BUCKET, Key=image["thumbnails"]["512"]["key"])
    assert thumbnail["ContentType"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail["Body"].read())) as small:
        assert small.size == (384, 512)
        top, bottom = small.getpixel((192, 10)), small.getpixel((192, 500))
    # Rotated 90° clockwise: the red left half is now on top.
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    assert set(image["urls"]["thumbnails"]) == {"128", "512"}
    assert "X-Amz-Signature=" in image["urls"]["original"], "SigV4 links"
    original = requests.get(image["urls"]["original"], timeout=10)
    assert original.status_code == 200 and original.content[:2] == b"\xff\xd8"


def test_label_listing_uses_queries_and_pages(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any
) -> None:
    _, api = user
    ids = [upload(api, photo(300, 200))["image_id"] for _ in range(3)]
    _, other = accounts.register()
    from tests.unit.api_helpers import ApiClient

    upload(ApiClient(accounts._client, other), photo(300, 200))
    run_pipeline(client, aws)
    label = api.get(f"/images/{ids[0]}").json_body["labels"][0]["name"]

    first = api.get(f"/images?label={label.upper().replace(' ', '%20')}&limit=2").json_body
    assert [i["image_id"] for i in first["items"]] == ids[::-1][:2], "newest first"
    second = api.get(
        f"/images?label={label.replace(' ', '%20')}&limit=2&cursor={first['next_cursor']}"
    )
    assert [i["image_id"] for i in second.json_body["items"]] == ids[:1]
    assert second.json_body["next_cursor"] is None
    exact = api.get("/images?limit=3").json_body  # a full last page: no cursor to an empty one
    assert len(exact["items"]) == 3 and exact["next_cursor"] is None
    assert api.get("/images?label=unicorn").json_body == {"items": [], "next_cursor": None}
    everything = api.get("/images").json_body
    assert [i["image_id"] for i in everything["items"]] == ids[::-1], "only the caller's"


def test_listing_never_scans(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    _, api = user
    upload(api, photo(300, 200))
    run_pipeline(client, aws)
    from chalicelib.core import aws as aws_clients

    calls: list[str] = []
    dynamodb = aws_clients.client("dynamodb")
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    assert api.get("/images?label=mobile%20phone").status_code == 200
    assert api.get("/images").status_code == 200
    assert calls == ["Query", "BatchGetItem", "Query"]


def test_duplicated_notification_makes_one_record_and_one_set_of_thumbnails(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    """S3 and SQS deliver at least once. A duplicate finds the upload gone (kept, then
    removed) and the record of its upload, within the run's lease: it does nothing."""
    _, api = user
    upload(api, photo(300, 200))
    sqs = boto3.client("sqs")
    url = aws["ImageUploadsQueueUrl"]
    [message] = [m for m in receive(url) if "Records" in m["Body"]]
    sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    from chalicelib.core import aws as aws_clients

    calls: list[str] = []
    for service in ("rekognition", "s3", "dynamodb"):
        aws_clients.client(service).meta.events.register(
            f"before-call.{service}.*", lambda model, **_: calls.append(model.name)
        )
    for _ in range(3):
        deliver(client, url, "analyze_image")
    for _ in range(3):
        deliver(client, aws["ThumbnailsQueueUrl"], "make_thumbnails")
    assert calls.count("DetectLabels") == 1
    assert calls.count("TransactWriteItems") == 2, "the claim, then the analysed record"
    assert calls.count("PutObject") == 3, "the original, one 128 and one 512 thumbnail, once"
    items = boto3.client("dynamodb").scan(TableName=aws["ImagesTableName"])["Items"]
    assert len(items) == 1 and items[0]["status"]["S"] == "ready"


def test_unusable_upload_ends_failed_with_a_reason_and_is_not_retried(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    _, api = user
    created = upload(api, b"this is not a picture at all")
    assert deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image") == (
        2,
        None,
    )  # + test event
    image = api.get(f"/images/{created['image_id']}").json_body
    assert image["status"] == "failed" and "not a JPEG or PNG" in image["reason"]
    assert "retryable" not in image and receive(aws["ThumbnailsQueueUrl"]) == []


def test_rekognition_outage_dead_letters_after_5_receives_and_marks_the_image(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], app_clock: Any
) -> None:
    _, api = user
    sqs = boto3.client("sqs")
    url, dlq = aws["ImageUploadsQueueUrl"], aws["ImageUploadsDeadLetterQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    created = upload(api, photo(300, 200))
    from chalicelib.core import aws as aws_clients

    def throttled(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "DetectLabels"
        )

    aws_clients.client("rekognition").meta.events.register(
        "before-call.rekognition.DetectLabels", throttled
    )
    outcomes = []
    for _ in range(MAX_RECEIVES + 2):
        outcomes.append(deliver(client, url, "analyze_image"))
        app_clock.advance(seconds=360)  # each receive after the queue's visibility timeout
    assert [error for count, error in outcomes if count] == ["BatchItemsFailed"] * MAX_RECEIVES
    [dead] = receive(dlq)
    assert created["image_id"] in dead["Body"]
    image = api.get(f"/images/{created['image_id']}").json_body
    assert image["status"] == "failed" and "redrive" in image["reason"]


def test_poison_thumbnail_task_goes_to_the_dlq_after_5_receives(
    client: Any, aws: dict[str, str]
) -> None:
    sqs = boto3.client("sqs")
    url, dlq = aws["ThumbnailsQueueUrl"], aws["ThumbnailsDeadLetterQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    sqs.send_message(QueueUrl=url, MessageBody="{poison")
    outcomes = [deliver(client, url, "make_thumbnails") for _ in range(MAX_RECEIVES + 2)]
    assert [error for count, error in outcomes if count] == ["BatchItemsFailed"] * MAX_RECEIVES
    assert [m["Body"] for m in receive(dlq)] == ["{poison"]


# --- the API's rules -------------------------------------------------------------------------


def test_presigned_post_policy_pins_key_type_and_size(
    aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    """What S3 enforces on the upload (moto does not: checked on the signed policy)."""
    profile, api = user
    answer = api.post("/images", {"content_type": "image/png", "size": MAX_UPLOAD_BYTES})
    assert answer.status_code == 202, "an upload intent: the image exists once recorded"
    assert "Location" not in answer.headers
    assert api.get(f"/images/{answer.json_body['image_id']}").status_code == 404
    form = answer.json_body["upload"]
    assert form["method"] == "POST" and form["max_bytes"] == MAX_UPLOAD_BYTES
    fields = form["fields"]
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["key"].startswith(f"uploads/{profile['user_id']}/") and fields["key"].endswith(
        ".png"
    )
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert {"key": fields["key"]} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, MAX_UPLOAD_BYTES] in conditions
    assert {"bucket": BUCKET} in conditions


@pytest.mark.parametrize(
    "body",
    [{}, {"content_type": "image/gif", "size": 10}, {"content_type": "image/jpeg"},
     {"content_type": "image/jpeg", "size": MAX_UPLOAD_BYTES + 1},
     {"content_type": "image/jpeg", "size": 0}, {"content_type": "image/jpeg", "name": "x"},
     {"content_type": ["image/jpeg"]}],
)  # fmt: skip
def test_bad_upload_requests_are_400_with_every_problem(
    user: tuple[dict[str, Any], Any], body: dict[str, Any]
) -> None:
    _, api = user
    answer = api.post("/images", body)
    assert answer.status_code == 400
    assert answer.json_body["error"]["code"] == "validation_failed"
    assert answer.json_body["error"]["details"]


def test_images_need_a_token(client: Any, aws: dict[str, str]) -> None:
    routes = (
        ("POST", "/images"),
        ("GET", "/images"),
        ("GET", "/images/x"),
        ("DELETE", "/images/x"),
    )
    for method, path in routes:
        answer = client.http.request(
            method, path, headers={"Content-Type": "application/json"}, body=b"{}"
        )
        assert answer.status_code == 401, (method, path)


def test_only_the_owner_or_an_admin_sees_an_image(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any, api: Any
) -> None:
    _, owner = user
    created = upload(owner, photo(300, 200))
    run_pipeline(client, aws)
    image_id = created["image_id"]
    _, stranger = accounts.register()
    answer = api.as_(stranger).get(f"/images/{image_id}")
    unknown = api.as_(stranger).get("/images/00000000-0000-4000-8000-000000000000")
    # 404 exactly as for an unknown id: a 403 would tell a prober that the id exists.
    assert answer.status_code == unknown.status_code == 404
    assert answer.json_body["error"]["code"] == unknown.json_body["error"]["code"] == "not_found"
    assert answer.json_body["error"]["message"] == unknown.json_body["error"]["message"]
    assert api.get(f"/images/{image_id}").status_code == 200, "admins see every image"
    assert api.as_(stranger).get("/images").json_body["items"] == []


@pytest.mark.parametrize(
    ("path", "status"),
    [("/images/00000000-0000-4000-8000-000000000000", 404), ("/images/not-an-id", 404),
     ("/images?cursor=bogus", 400), ("/images?limit=0", 400), ("/images?label=" + "x" * 101, 400),
     ("/images?label=%20", 400)],
)  # fmt: skip
def test_bad_reads_are_4xx(user: tuple[dict[str, Any], Any], path: str, status: int) -> None:
    _, api = user
    answer = api.get(path)
    assert answer.status_code == status, answer.body
    assert "error" in answer.json_body


# --- adapters ------------------------------------------------------------------------------


def test_storage_reads_only_the_upload_it_was_told_about(aws: dict[str, str]) -> None:
    from chalicelib.images.adapters import S3ImageStorage
    from chalicelib.images.pipeline import ObjectGone

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="uploads/k.jpg", Body=b"0123456789")
    storage = S3ImageStorage(BUCKET)
    stored = storage.describe("uploads/k.jpg")
    assert stored is not None and stored.size == 10 and '"' not in stored.etag
    assert stored.last_modified.endswith("Z")
    assert storage.read("uploads/k.jpg", stored.etag) == b"0123456789"
    assert storage.describe("uploads/missing.jpg") is None
    s3.put_object(Bucket=BUCKET, Key="uploads/k.jpg", Body=b"replaced")
    with pytest.raises(ObjectGone):
        storage.read("uploads/k.jpg", stored.etag)
    storage.write("thumbnails/a/b/c-128.jpg", b"x", "image/jpeg")
    head = s3.head_object(Bucket=BUCKET, Key="thumbnails/a/b/c-128.jpg")
    assert head["ContentType"] == "image/jpeg" and "immutable" in head["CacheControl"]


@pytest.mark.parametrize(
    ("code", "refused"),
    [("InvalidImageFormatException", True), ("ImageTooLargeException", True),
     ("InvalidParameterException", True), ("ThrottlingException", False),
     ("InvalidS3ObjectException", False),  # also a denied S3 read: retried, dead-lettered
     ("InternalServerError", False)],
)  # fmt: skip
def test_rekognition_errors_split_into_refusals_and_outages(
    aws: dict[str, str], code: str, refused: bool
) -> None:
    from chalicelib.images.adapters import RekognitionLabels
    from chalicelib.images.imaging import UnusableImage

    client = boto3.client("rekognition")
    labels = RekognitionLabels(BUCKET, lambda: client)
    with Stubber(client) as stub:
        stub.add_client_error("detect_labels", service_error_code=code)
        with pytest.raises(UnusableImage if refused else ClientError):
            labels.detect_in_object("uploads/a.jpg")


def test_rekognition_asks_for_10_labels_over_80_percent(aws: dict[str, str]) -> None:
    from chalicelib.images.adapters import RekognitionLabels

    client = boto3.client("rekognition")
    found = [{"Name": f"L{i}", "Confidence": 99.0 - i} for i in range(10)]
    with Stubber(client) as stub:
        stub.add_response(
            "detect_labels",
            {"Labels": [*found, {"Name": "Low", "Confidence": 50.0}]},
            {"Image": {"S3Object": {"Bucket": BUCKET, "Name": "uploads/a.jpg"}},
             "MaxLabels": 10, "MinConfidence": 80.0},
        )  # fmt: skip
        labels = RekognitionLabels(BUCKET, lambda: client).detect_in_object("uploads/a.jpg")
    assert [label["name"] for label in labels] == [f"L{i}" for i in range(10)]


def test_records_replace_label_entries_in_the_same_transaction(aws: dict[str, str]) -> None:
    from decimal import Decimal

    from chalicelib.images.adapters import DynamoImageRecords

    records = DynamoImageRecords(aws["ImagesTableName"], aws["ImageLabelsTableName"])
    owner, image_id = "11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    record = {
        "image_id": image_id, "owner_id": owner, "etag": "e1", "status": "processing",
        "created_at": "2026-11-26T00:00:00.000000Z",
        "created_key": f"2026-11-26T00:00:00.000000Z#{image_id}", "version": 1,
        "labels": [{"name": "Dog", "confidence": Decimal("98.5")},
                   {"name": "Pet", "confidence": Decimal("90")}],
    }  # fmt: skip
    assert records.save(record, None)
    assert not records.save(record, None), "a second first write is refused"
    assert [i["image_id"] for i in records.labelled_page(owner, "dog", 10, None)[0]] == [image_id]
    stored = records.get(image_id)
    assert stored is not None and stored["labels"][0] == {"name": "Dog", "confidence": 98.5}
    replaced = {**record, "etag": "e2", "version": 2, "labels": [{"name": "Cat", "confidence": 99}]}
    assert records.save(replaced, stored)
    assert records.labelled_page(owner, "dog", 10, None) == ([], None)
    assert len(records.labelled_page(owner, "cat", 10, None)[0]) == 1
    assert not records.save(replaced, stored), "stale: the version moved on"
    current = records.get(image_id)
    assert current is not None
    assert records.update(current, {"status": "ready"})
    assert not records.update(current, {"status": "failed"})
    final = records.get(image_id)
    assert final is not None and final["status"] == "ready" and final["version"] == 3


def test_handlers_take_one_image_per_invocation_and_queues_dead_letter_at_max_receives() -> None:
    """A timeout or out-of-memory then costs only its own message; the pipeline's last
    receive (MAX_RECEIVES) is the queues' maxReceiveCount."""
    from app import app
    from tests.unit.test_deploy import RESOURCES

    sizes = {source.name: getattr(source, "batch_size", None) for source in app.event_sources}
    assert sizes["analyze_image"] == sizes["make_thumbnails"] == 1
    for queue in ("ImageUploadsQueue", "ThumbnailsQueue"):
        redrive = RESOURCES["Resources"][queue]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == MAX_RECEIVES
