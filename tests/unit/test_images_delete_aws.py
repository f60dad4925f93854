"""Deleting images, the daily upload quotas, and erasing or exporting an owner's images,
against moto provisioned like the real stack, through the API and the pipeline's own
handlers (each function's calls checked against its generated policy)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
import requests

from tests.unit.test_images_aws import BUCKET, deliver, photo, run_pipeline, upload

MB = 1024 * 1024


@pytest.fixture
def user(accounts: Any) -> tuple[dict[str, Any], Any]:
    from tests.unit.api_helpers import ApiClient

    profile, token = accounts.register()
    return profile, ApiClient(accounts._client, token)


def bucket_keys() -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def scan(table: str) -> list[dict[str, Any]]:
    return list(boto3.client("dynamodb").scan(TableName=table)["Items"])


# --- DELETE /images/{id} --------------------------------------------------------------------


def test_delete_removes_the_upload_thumbnails_record_and_labels(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any, api: Any
) -> None:
    _, owner = user
    image_id = upload(owner, photo(300, 200))["image_id"]
    run_pipeline(client, aws)
    assert len(bucket_keys()) == 3 and scan(aws["ImageLabelsTableName"])
    _, stranger = accounts.register()
    unknown = api.as_(stranger).delete("/images/00000000-0000-4000-8000-000000000000")
    theirs = api.as_(stranger).delete(f"/images/{image_id}")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json_body["error"]["message"] == unknown.json_body["error"]["message"]
    assert len(bucket_keys()) == 3

    answer = owner.delete(f"/images/{image_id}")
    assert answer.status_code == 204, answer.body
    assert bucket_keys() == [] and scan(aws["ImageLabelsTableName"]) == []
    [stone] = scan(aws["ImagesTableName"])
    assert stone["status"]["S"] == "deleted" and "created_key" not in stone
    assert owner.get(f"/images/{image_id}").status_code == 404
    assert owner.get("/images").json_body["items"] == []
    assert owner.delete(f"/images/{image_id}").status_code == 404, "404 once gone"


def test_an_admin_deletes_any_image_and_the_preflight_allows_delete(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], api: Any
) -> None:
    _, owner = user
    image_id = upload(owner, photo(300, 200))["image_id"]
    run_pipeline(client, aws)
    assert api.delete(f"/images/{image_id}").status_code == 204
    assert bucket_keys() == []
    preflight = client.http.request(
        "OPTIONS",
        f"/images/{image_id}",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "DELETE"},
    )
    assert "DELETE" in preflight.headers["Access-Control-Allow-Methods"]


def test_the_pipeline_never_brings_a_deleted_image_back(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    """Deleted while its thumbnails wait; the task comes after the delete; the presigned
    POST (still valid) is used again: no record comes back, no object stays."""
    _, owner = user
    created = upload(owner, photo(300, 200))
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")
    assert owner.delete(f"/images/{created['image_id']}").status_code == 204
    deliver(client, aws["ThumbnailsQueueUrl"], "make_thumbnails")
    assert bucket_keys() == []
    form = created["upload"]
    again = requests.post(
        form["url"], data=form["fields"], files={"file": ("f", photo(30, 20), "image/jpeg")}
    )
    assert again.status_code == 204 and len(bucket_keys()) == 1
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")
    assert bucket_keys() == [], "the upload of a deleted image is removed"
    [stone] = scan(aws["ImagesTableName"])
    assert stone["status"]["S"] == "deleted"
    assert owner.get(f"/images/{created['image_id']}").status_code == 404


def test_the_owner_deletes_an_upload_not_analysed_yet(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any, api: Any
) -> None:
    _, owner = user
    image_id = upload(owner, photo(300, 200))["image_id"]
    _, stranger = accounts.register()
    assert api.as_(stranger).delete(f"/images/{image_id}").status_code == 404
    assert owner.delete(f"/images/{image_id}").status_code == 204
    assert bucket_keys() == []
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")
    assert [i["status"]["S"] for i in scan(aws["ImagesTableName"])] == ["deleted"]


# --- daily quotas ---------------------------------------------------------------------------


def used(aws: dict[str, str], quota: str) -> list[int]:
    return sorted(
        int(item["used"]["N"])
        for item in scan(os.environ["QUOTAS_TABLE_NAME"])
        if f"#{quota}#" in item["id"]["S"]
    )


def test_a_looping_uploader_gets_429_at_the_daily_count_others_do_not_and_tomorrow_works(
    aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any, api: Any, app_clock: Any
) -> None:
    _, owner = user
    small = {"content_type": "image/jpeg", "size": 1000}
    for _ in range(100):
        assert owner.post("/images", small).status_code == 202
    refused = owner.post("/images", small)
    assert refused.status_code == 429
    error = refused.json_body["error"]
    assert error["code"] == "too_many_requests" and error["details"][0]["field"] == "uploads"
    assert 0 < int(refused.headers["Retry-After"]) <= 12 * 3600, "until midnight UTC"
    _, other = accounts.register()
    assert api.as_(other).post("/images", small).status_code == 202
    app_clock.advance(days=1)
    assert owner.post("/images", small).status_code == 202
    assert used(aws, "uploads") == [1, 1, 100]


def test_declared_bytes_count_against_the_daily_bytes(
    aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    _, owner = user
    for _ in range(25):  # 25 x 20 MB: the dev stage's 500 MB
        assert owner.post("/images", {"content_type": "image/png", "size": 20 * MB}).status_code
    refused = owner.post("/images", {"content_type": "image/png", "size": 1})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert refused.json_body["error"]["details"][0]["field"] == "upload-bytes"
    assert used(aws, "upload-bytes") == [500 * MB] and used(aws, "uploads") == [25]


def test_a_16_mb_upload_is_accepted_and_counted(
    aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    _, owner = user
    data = b"\xff\xd8" + os.urandom(16 * MB - 2)
    created = upload(owner, data)  # declares len(data)
    assert created["upload"]["max_bytes"] == 16 * MB
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key=created["key"])
    assert head["ContentLength"] == 16 * MB
    assert used(aws, "upload-bytes") == [16 * MB] and used(aws, "uploads") == [1]


def s3_accepts(fields: dict[str, str], file_size: int) -> bool:
    """What S3 checks of a browser POST (signature V4 and the policy's conditions)."""
    date, region, service = fields["x-amz-credential"].split("/")[1:4]
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, fields["x-amz-signature"]):
        return False
    form = {name.lower(): value for name, value in fields.items()}
    for condition in json.loads(base64.b64decode(fields["policy"]))["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            if name != "bucket" and form.get(name.lower()) != value:
                return False
        elif condition[0] == "content-length-range":
            if not condition[1] <= file_size <= condition[2]:
                return False
        elif condition[0] == "eq" and form.get(condition[1][1:].lower()) != condition[2]:
            return False
    return True


def test_an_upload_larger_than_declared_is_outside_the_signed_policy(
    aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    """S3 refuses a file over the policy's content-length-range (EntityTooLarge). moto 5.2.5
    does not check POST policies, so the signed policy is checked as S3 checks it."""
    _, owner = user
    form = owner.post("/images", {"content_type": "image/jpeg", "size": 1000}).json_body["upload"]
    fields = form["fields"]
    conditions = json.loads(base64.b64decode(fields["policy"]))["conditions"]
    assert ["content-length-range", 1, 1000] in conditions
    assert s3_accepts(fields, 1000) and not s3_accepts(fields, 1001)
    tampered = dict(fields, policy=base64.b64encode(b'{"conditions": []}').decode())
    assert not s3_accepts(tampered, 1001), "the policy is signed: it cannot be swapped"
    sent = requests.post(
        form["url"], data=fields, files={"file": ("f", b"x" * 1001, "image/jpeg")}, timeout=10
    )
    assert sent.status_code == 204, "moto stores it (it does not enforce POST policies)"


# --- erase and export ------------------------------------------------------------------------


@contextmanager
def calls_checked_against(needs: list[Any]) -> Iterator[None]:
    """Every AWS call made in the block must be allowed by the policy `needs` make."""
    from chalicelib.core import aws as app_aws
    from infra.wiring import Function, policy
    from tests.unit.iam_calls import Recorder, allows, needed

    recorder = Recorder()
    recorder.function = "owner_data"
    events = app_aws.session().events
    events.register("before-parameter-build", recorder.before_parameter_build)
    app_aws.reset_clients()
    try:
        yield
    finally:
        events.unregister("before-parameter-build", recorder.before_parameter_build)
        app_aws.reset_clients()
    document = policy("dev", Function("owner_data", needs))
    refused = sorted(
        f"{action} on {arn}"
        for _, service, operation, params in recorder.calls
        for action, arn, context in needed(service, operation, params, "us-east-1", "123456789012")
        if not allows(document, action, arn, context)
    )
    assert recorder.calls and not refused, refused


def naming(user_id: str, aws: dict[str, str]) -> list[str]:
    """Every item of the images, image labels and quotas tables, and every key of the bucket,
    that holds `user_id` (anywhere: keys, attributes, index keys)."""
    tables = (aws["ImagesTableName"], aws["ImageLabelsTableName"], os.environ["QUOTAS_TABLE_NAME"])
    items = [f"{table} {json.dumps(item)}" for table in tables for item in scan(table)]
    return [text for text in [*items, *bucket_keys()] if user_id in text]


def test_export_and_erase_page_through_everything_within_their_grants(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], accounts: Any
) -> None:
    from chalicelib.images import image_owner_data, image_owner_export
    from tests.unit.api_helpers import ApiClient

    profile, owner = user
    user_id = profile["user_id"]
    ids = [upload(owner, photo(300, 200))["image_id"] for _ in range(2)]
    other_profile, other = accounts.register()
    upload(ApiClient(accounts._client, other), photo(300, 200))
    run_pipeline(client, aws)
    pending = upload(owner, photo(300, 200))  # never analysed
    others = [k for k in bucket_keys() if other_profile["user_id"] in k]

    with calls_checked_against(list(image_owner_export.__needs__)):
        exported = image_owner_export().export(user_id)
    assert sorted(i["image_id"] for i in exported) == sorted(ids)
    assert all(i["label_names"] and i["size"] and i["created_at"] for i in exported)
    json.dumps(exported)
    assert requests.get(exported[0]["urls"]["original"], timeout=10).status_code == 200
    unsigned = [{**i, "urls": None} for i in exported]  # links differ by their signing time
    assert [{**i, "urls": None} for i in image_owner_data().export(user_id)] == unsigned
    with calls_checked_against(list(image_owner_data.__needs__)):
        assert image_owner_data().erase(user_id) == 3
        assert image_owner_data().erase(user_id) == 0
    assert bucket_keys() == others
    assert all(
        e["owner_label"]["S"].startswith(other_profile["user_id"])
        for e in scan(aws["ImageLabelsTableName"])
    )
    assert owner.get("/images").json_body["items"] == []
    assert owner.get(f"/images/{pending['image_id']}").status_code == 404
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")  # the pending notification
    assert owner.get(f"/images/{pending['image_id']}").status_code == 404
    assert bucket_keys() == others
    assert naming(user_id, aws) == [], "tombstones, marker, labels, quotas: no user id"


def test_the_export_links_work_within_a_read_only_policy() -> None:
    """Presigning calls nothing, so the calls check above cannot see it: a link works only
    while the signer's role may s3:GetObject the key. The export's own grants are reads."""
    from chalicelib.images import image_owner_export
    from infra.wiring import Function, policy
    from tests.unit.iam_calls import allows

    document = policy("dev", Function("export", list(image_owner_export.__needs__)))
    actions = {
        action
        for statement in document["Statement"]
        if statement["Sid"] not in ("FunctionLogs", "XRayTracing")
        for action in statement["Action"]
    }
    assert actions == {"dynamodb:Query", "s3:GetObject"}, actions
    user_id, image_id = (
        "11111111-2222-4333-8444-555555555555",
        "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
    )
    for key in (
        f"originals/{user_id}/{image_id}.jpg",
        f"thumbnails/{user_id}/{image_id}/v-128.jpg",
    ):
        assert allows(document, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{key}", {})
        assert not allows(document, "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/{key}", {})


def test_after_an_erasure_late_steps_leave_nothing_naming_the_user(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any]
) -> None:
    """The erasure comes while a thumbnail task waits and a presigned POST is still valid:
    the late task writes nothing, the POST used again is removed by the analysis (the
    marker, found by the key's digest), and no table item or object holds the user's id."""
    from chalicelib.images import image_owner_data

    profile, owner = user
    user_id = profile["user_id"]
    analysed = upload(owner, photo(300, 200))
    deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image")  # its thumbnail task waits
    unused = owner.post("/images", {"content_type": "image/jpeg", "size": 5000}).json_body
    assert image_owner_data().erase(user_id) == 1
    assert naming(user_id, aws) == []

    assert deliver(client, aws["ThumbnailsQueueUrl"], "make_thumbnails") == (1, None)
    for form in (analysed["upload"], unused["upload"]):  # links issued before the erasure
        sent = requests.post(
            form["url"], data=form["fields"], files={"file": ("f", photo(30, 20), "image/jpeg")}
        )
        assert sent.status_code == 204
    assert len(bucket_keys()) == 2
    assert deliver(client, aws["ImageUploadsQueueUrl"], "analyze_image") == (2, None)
    assert bucket_keys() == [] and naming(user_id, aws) == []
    stones = [i for i in scan(aws["ImagesTableName"]) if i.get("status", {}).get("S")]
    assert [sorted(i) for i in stones] == [
        ["deleted_at", "expires_at", "image_id", "status", "version"]
    ]
    [marker] = [i for i in scan(aws["ImagesTableName"]) if "status" not in i]
    digest = hashlib.sha256(user_id.encode()).hexdigest()
    assert marker["image_id"]["S"] == f"erased-owner#{digest}"
    assert sorted(marker) == ["erased_at", "expires_at", "image_id"]


def test_erase_and_delete_remove_an_original_kept_by_a_run_that_failed(
    client: Any, aws: dict[str, str], user: tuple[dict[str, Any], Any], app_clock: Any
) -> None:
    """Rekognition fails after the upload was kept under originals/: the image is claimed,
    not analysed (404). The erasure removes the original and the upload; the run's
    redelivery finds the tombstone and leaves nothing either."""
    from botocore.exceptions import ClientError

    from chalicelib.core import aws as aws_clients
    from chalicelib.images import image_owner_data

    profile, owner = user
    created = upload(owner, photo(300, 200))
    sqs = boto3.client("sqs")
    url = aws["ImageUploadsQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "Detect")

    rekognition = aws_clients.client("rekognition")
    rekognition.meta.events.register("before-call.rekognition.DetectLabels", throttled)
    assert deliver(client, url, "analyze_image")[1] == "BatchItemsFailed"
    rekognition.meta.events.unregister("before-call.rekognition.DetectLabels", throttled)
    user_id, image_id = profile["user_id"], created["image_id"]
    assert bucket_keys() == sorted([created["key"], f"originals/{user_id}/{image_id}.jpg"])
    assert owner.get(f"/images/{image_id}").status_code == 404, "claimed, not analysed"

    assert image_owner_data().erase(user_id) == 1
    assert bucket_keys() == [] and naming(user_id, aws) == []
    app_clock.advance(seconds=360)
    assert deliver(client, url, "analyze_image") == (1, None)
    assert bucket_keys() == [] and naming(user_id, aws) == []


# --- the storage adapter's batch delete -----------------------------------------------------


def test_remove_all_deletes_in_batches_of_the_limit(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.images import adapters

    s3 = boto3.client("s3")
    keys = [f"thumbnails/o/i/{n}.jpg" for n in range(5)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    calls: list[int] = []
    s3.meta.events.register(
        "before-call.s3.DeleteObjects",
        lambda params, **_: calls.append(params["body"].count(b"<Key>")),
    )
    monkeypatch.setattr(adapters, "DELETE_BATCH", 2)
    adapters.S3ImageStorage(BUCKET, lambda: s3).remove_all([*keys, "thumbnails/o/i/gone.jpg"])
    assert calls == [2, 2, 2] and bucket_keys() == []
    adapters.S3ImageStorage(BUCKET, lambda: s3).remove_all([])
    assert calls == [2, 2, 2], "nothing to delete: no call"


def test_remove_all_raises_if_any_key_was_not_deleted(aws: dict[str, str]) -> None:
    from botocore.stub import Stubber

    from chalicelib.core.errors import ServiceUnavailable
    from chalicelib.images.adapters import S3ImageStorage

    s3 = boto3.client("s3")
    keys = ["originals/o/i.jpg", "uploads/o/i.jpg"]
    with Stubber(s3) as stub:
        stub.add_response(
            "delete_objects",
            {"Deleted": [{"Key": keys[0]}],
             "Errors": [{"Key": keys[1], "Code": "InternalError", "Message": "retry"}]},
            {"Bucket": BUCKET,
             "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}},
        )  # fmt: skip
        with pytest.raises(ServiceUnavailable):
            S3ImageStorage(BUCKET, lambda: s3).remove_all(keys)
