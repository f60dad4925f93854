"""One presigned POST posted 50 more times, against moto provisioned like the real stack: the
browser's POST to S3, the bucket's notification to SQS and both handlers run as Lambda runs
them (each function's calls checked against its generated policy). The image is its first
upload, kept under originals/ (written once: S3 refuses a second write): one Rekognition
call, one set of thumbnails, and no object left but those three, however often the link is
posted and whenever its notifications arrive."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from tests.unit.test_images_aws import BUCKET, deliver, photo, run_pipeline, upload
from tests.unit.test_images_delete_aws import bucket_keys, scan

REPOSTS = 50


@pytest.fixture
def user(accounts: Any) -> tuple[dict[str, Any], Any]:
    from tests.unit.api_helpers import ApiClient

    profile, token = accounts.register()
    return profile, ApiClient(accounts._client, token)


@pytest.fixture
def calls(aws: dict[str, str]) -> Iterator[Counter[str]]:
    """The app's S3, Rekognition and DynamoDB calls, by operation."""
    from chalicelib.core import aws as aws_clients

    counted: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        counted[model.name] += 1

    for service in ("rekognition", "s3", "dynamodb"):
        aws_clients.client(service).meta.events.register(f"before-call.{service}.*", count)
    yield counted


def post_again(form: dict[str, Any], data: bytes) -> None:
    sent = requests.post(
        form["url"], data=form["fields"], files={"file": ("f", data, "image/jpeg")}, timeout=10
    )
    assert sent.status_code == 204, sent.text


def drain(client: Any, aws: dict[str, str]) -> int:
    """Deliver until both queues are empty (10 messages a poll); the thumbnail tasks run."""
    while deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")[0]:
        pass
    tasks = 0
    while count := deliver(client, aws["ThumbnailsQueueUrl"], "make_thumbnails")[0]:
        tasks += count
    return tasks


def image_keys(profile: dict[str, Any], image_id: str) -> list[str]:
    owner = profile["user_id"]
    return [k for k in bucket_keys() if f"/{owner}/{image_id}" in k]


def test_fifty_reposts_after_the_analysis_cost_one_analysis(
    client: Any,
    aws: dict[str, str],
    user: tuple[dict[str, Any], Any],
    calls: Counter[str],
) -> None:
    profile, api = user
    first = photo(640, 480)
    created = upload(api, first)
    calls.clear()  # the pipeline's calls from here (POST /images takes its quotas)
    image_id = created["image_id"]
    run_pipeline(client, aws)
    before = api.get(f"/images/{image_id}").json_body
    assert before["status"] == "ready"

    for n in range(REPOSTS):
        post_again(created["upload"], photo(300 + n, 200))
        run_pipeline(client, aws)

    assert calls["DetectLabels"] == 1, "one Rekognition call"
    assert calls["PutObject"] == 3, "the original, written once, and two thumbnails"
    assert calls["TransactWriteItems"] == 2, "the claim, then the analysed record"
    after = api.get(f"/images/{image_id}").json_body
    assert {**after, "urls": None} == {**before, "urls": None}, "the first upload, unchanged"
    owner = profile["user_id"]
    assert image_keys(profile, image_id) == sorted(
        [f"originals/{owner}/{image_id}.jpg", *(t["key"] for t in after["thumbnails"].values())]
    ), "no upload left"
    original = requests.get(after["urls"]["original"], timeout=10)
    assert original.status_code == 200 and original.content == first


def test_fifty_reposts_before_any_notification_is_delivered(
    client: Any,
    aws: dict[str, str],
    user: tuple[dict[str, Any], Any],
    calls: Counter[str],
) -> None:
    """The notifications of overwritten uploads find another ETag under the key and are
    ignored: the last upload is the image; posts after it are removed."""
    profile, api = user
    created = upload(api, photo(200, 100))
    calls.clear()
    for n in range(1, REPOSTS):
        post_again(created["upload"], photo(200 + n, 100))
    drain(client, aws)
    for n in range(REPOSTS):
        post_again(created["upload"], photo(100, 100 + n))
    drain(client, aws)

    image = api.get(f"/images/{created['image_id']}").json_body
    assert image["status"] == "ready" and (image["width"], image["height"]) == (249, 100)
    assert calls["DetectLabels"] == 1 and calls["PutObject"] == 3
    assert len(image_keys(profile, created["image_id"])) == 3, "original and two thumbnails"
    [record] = scan(aws["ImagesTableName"])
    assert record["status"]["S"] == "ready"


def test_the_same_file_posted_again_is_removed_without_a_second_task(
    client: Any,
    aws: dict[str, str],
    user: tuple[dict[str, Any], Any],
    calls: Counter[str],
) -> None:
    """The same bytes have the same ETag: while the thumbnails wait (within the run's
    lease) no second task is sent; the posts are removed all the same."""
    profile, api = user
    data = photo(300, 200)
    created = upload(api, data)
    calls.clear()
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")
    for _ in range(REPOSTS):
        post_again(created["upload"], data)
    assert drain(client, aws) == 1, "one thumbnail task"
    assert calls["DetectLabels"] == 1 and calls["PutObject"] == 3
    assert len(image_keys(profile, created["image_id"])) == 3
    assert api.get(f"/images/{created['image_id']}").json_body["status"] == "ready"


def test_an_original_is_written_once(aws: dict[str, str]) -> None:
    """If-None-Match: * on the write: a second write of the key is refused, the first bytes
    stay (S3 enforces it; so does moto)."""
    from chalicelib.images.adapters import S3ImageStorage

    storage = S3ImageStorage(BUCKET)
    key = "originals/11111111-2222-4333-8444-555555555555/aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee.jpg"
    assert storage.write_once(key, b"first", "image/jpeg") is True
    assert storage.write_once(key, b"second", "image/jpeg") is False
    assert storage.read(key) == b"first"
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "image/jpeg" and "immutable" in head["CacheControl"]
