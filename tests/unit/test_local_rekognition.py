"""The emulator's DetectLabels (`local/rekognition.py`) through boto3 against moto in process:
the picture's own labels from bytes and from S3, Rekognition's errors, and the app's image
pipeline finding an upload by what it shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.paths import PROJECT_DIR
from local import rekognition
from tests.unit.test_images_aws import run_pipeline, upload

BUCKET = "pictures"
ASTRONAUT = (PROJECT_DIR / "local" / "samples" / "astronaut.jpg").read_bytes()
COFFEE = (PROJECT_DIR / "local" / "samples" / "coffee.jpg").read_bytes()


@pytest.fixture
def sees_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patch, for this test only (the other tests keep stock moto's canned label)."""
    from moto.rekognition.responses import RekognitionResponse

    monkeypatch.setattr(RekognitionResponse, "detect_labels", RekognitionResponse.detect_labels)
    monkeypatch.setattr(RekognitionResponse, "_sees_pictures", False, raising=False)
    rekognition.install()
    rekognition.install()  # idempotent


@pytest.fixture
def aws_clients(sees_pictures: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="astronaut.jpg", Body=ASTRONAUT)
        s3.put_object(Bucket=BUCKET, Key="notes.txt", Body=b"not a picture")
        yield boto3.client("rekognition"), s3


@pytest.fixture
def api(accounts: Any) -> Any:
    from tests.unit.api_helpers import ApiClient

    _, token = accounts.register()
    return ApiClient(accounts._client, token)


def error_of(call: Any, **arguments: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call(**arguments)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(raised.value.response["Error"]["Code"])


def test_the_pictures_own_labels_from_bytes_and_from_s3(aws_clients: tuple[Any, Any]) -> None:
    rekognition_client, _ = aws_clients
    from_bytes = rekognition_client.detect_labels(
        Image={"Bytes": ASTRONAUT}, MaxLabels=10, MinConfidence=80
    )
    from_s3 = rekognition_client.detect_labels(
        Image={"S3Object": {"Bucket": BUCKET, "Name": "astronaut.jpg"}}, MaxLabels=10,
        MinConfidence=80,
    )  # fmt: skip
    for answer in (from_bytes, from_s3):
        assert [label["Name"] for label in answer["Labels"]] == ["Face", "Head", "Person"]
        assert answer["Labels"][0]["Confidence"] >= 90
        assert answer["LabelModelVersion"] == "3.0" and "ImageProperties" not in answer
    assert from_bytes["Labels"] == from_s3["Labels"]
    assert "Mobile Phone" not in str(from_bytes)
    nothing = rekognition_client.detect_labels(Image={"Bytes": COFFEE})
    assert nothing["Labels"] == []


def test_max_labels_and_features(aws_clients: tuple[Any, Any]) -> None:
    rekognition_client, _ = aws_clients
    one = rekognition_client.detect_labels(Image={"Bytes": ASTRONAUT}, MaxLabels=1)
    assert [label["Name"] for label in one["Labels"]] == ["Face"]
    colours = rekognition_client.detect_labels(
        Image={"Bytes": ASTRONAUT}, Features=["IMAGE_PROPERTIES"],
        Settings={"ImageProperties": {"MaxDominantColors": 3}},
    )  # fmt: skip
    assert colours["Labels"] == []
    assert len(colours["ImageProperties"]["DominantColors"]) == 3
    assert set(colours["ImageProperties"]["Quality"]) == {"Brightness", "Sharpness", "Contrast"}


def test_rekognitions_errors(aws_clients: tuple[Any, Any]) -> None:
    detect = aws_clients[0].detect_labels
    missing = {"S3Object": {"Bucket": BUCKET, "Name": "gone.jpg"}}
    assert error_of(detect, Image=missing) == "InvalidS3ObjectException"
    elsewhere = {"S3Object": {"Bucket": "no-such-bucket", "Name": "astronaut.jpg"}}
    assert error_of(detect, Image=elsewhere) == "InvalidS3ObjectException"
    text = {"S3Object": {"Bucket": BUCKET, "Name": "notes.txt"}}
    assert error_of(detect, Image=text) == "InvalidImageFormatException"
    assert error_of(detect, Image={"Bytes": b"GIF89a..."}) == "InvalidImageFormatException"
    assert error_of(detect, Image={"Bytes": ASTRONAUT[:4000]}) == "InvalidImageFormatException"
    too_big = ASTRONAUT + bytes(rekognition.MAX_BYTES)
    assert error_of(detect, Image={"Bytes": too_big}) == "ImageTooLargeException"
    both = {"Bytes": ASTRONAUT, "S3Object": {"Bucket": BUCKET, "Name": "astronaut.jpg"}}
    assert error_of(detect, Image=both) == "InvalidParameterException"
    image = {"Bytes": ASTRONAUT}
    assert error_of(detect, Image=image, MinConfidence=150) == "InvalidParameterException"
    assert error_of(detect, Image=image, MaxLabels=5000) == "InvalidParameterException"
    big = {"ImageProperties": {"MaxDominantColors": 50}}
    assert error_of(detect, Image=image, Settings=big) == "InvalidParameterException"


def test_an_object_too_big_for_rekognition_in_s3(
    aws_clients: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rekognition_client, _ = aws_clients
    monkeypatch.setattr(rekognition, "MAX_S3_BYTES", len(ASTRONAUT) - 1)
    image = {"S3Object": {"Bucket": BUCKET, "Name": "astronaut.jpg"}}
    assert error_of(rekognition_client.detect_labels, Image=image) == "ImageTooLargeException"


def test_the_pipeline_finds_an_upload_by_what_it_shows(
    sees_pictures: None, client: Any, aws: dict[str, str], api: Any
) -> None:
    """The app's own DetectLabels call (MaxLabels 10, MinConfidence 80) on the original in S3,
    through the uploads queue, then `GET /images?label=...` by what the photo shows."""
    portrait = upload(api, ASTRONAUT)
    cup = upload(api, COFFEE)
    run_pipeline(client, aws)
    image = api.get(f"/images/{portrait['image_id']}").json_body
    assert image["status"] == "ready"
    assert [label["name"] for label in image["labels"]] == ["Face", "Head", "Person"]
    assert all(label["confidence"] >= 80 for label in image["labels"])
    assert api.get(f"/images/{cup['image_id']}").json_body["labels"] == []
    for label in ("Person", "face"):
        listed = api.get(f"/images?label={label}").json_body["items"]
        assert [i["image_id"] for i in listed] == [portrait["image_id"]]
    assert api.get("/images?label=Mobile%20Phone").json_body["items"] == []
