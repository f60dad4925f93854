"""Image keys, upload requests, labels and S3 notifications: what is accepted, what is
refused (with every problem at once), and what the API shows of a record."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from chalicelib.core.errors import ValidationFailed
from chalicelib.images.model import (
    MAX_LABEL_LENGTH,
    MAX_UPLOAD_BYTES,
    CreatedObject,
    UploadKey,
    created_objects,
    is_shown,
    parse_upload_key,
    public_view,
    thumbnail_key,
    upload_key,
    validate_label,
    validate_upload_request,
)

OWNER = "0b3e4c1a-8d2f-4e6a-9c7b-1f2e3d4c5b6a"
IMAGE = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918"


def problems(exc: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, str]:
    return {d["field"]: d["issue"] for d in exc.value.details}


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["jpg", "png"])
def test_an_upload_key_names_its_owner_and_image(extension: str) -> None:
    key = f"uploads/{OWNER}/{IMAGE}.{extension}"
    parsed = parse_upload_key(key)
    assert parsed == UploadKey(OWNER, IMAGE, extension)
    assert parsed.key == key == upload_key(OWNER, IMAGE, extension)
    assert parsed.original == f"originals/{OWNER}/{IMAGE}.{extension}"
    assert parse_upload_key(parsed.original) is None, "not an upload: no notification either"


@pytest.mark.parametrize(
    ("status", "shown"),
    [("received", False), ("processing", True), ("ready", True), ("failed", True),
     ("deleted", False)],
)  # fmt: skip
def test_the_api_shows_analysed_records_only(status: str, shown: bool) -> None:
    assert is_shown({"status": status}) is shown
    assert not is_shown(None)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(f"thumbnails/{OWNER}/{IMAGE}.jpg", id="wrong prefix"),
        pytest.param(f"Uploads/{OWNER}/{IMAGE}.jpg", id="prefix case"),
        pytest.param(f"/uploads/{OWNER}/{IMAGE}.jpg", id="leading slash"),
        pytest.param(f"uploads/{OWNER.upper()}/{IMAGE}.jpg", id="uppercase owner"),
        pytest.param(f"uploads/{OWNER}/{IMAGE.upper()}.jpg", id="uppercase image"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.JPG", id="uppercase extension"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.jpeg", id="jpeg extension"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.gif", id="gif extension"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}", id="no extension"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.jpg.png", id="two extensions"),
        pytest.param("uploads/../x", id="path traversal"),
        pytest.param(f"uploads/{OWNER}/../{IMAGE}.jpg", id="dot-dot segment"),
        pytest.param(f"uploads/{OWNER}/extra/{IMAGE}.jpg", id="extra segment"),
        pytest.param(f"uploads/{OWNER}/{OWNER}/{IMAGE}.jpg", id="two owners"),
        pytest.param(f"uploads/{IMAGE}.jpg", id="no owner"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.jpg\n", id="trailing newline"),
        pytest.param(f"uploads/{OWNER}/{IMAGE}.jpg ", id="trailing space"),
        pytest.param(f"uploads/{OWNER}/{IMAGE[:-1]}.jpg", id="short uuid"),
        pytest.param(f"uploads/{OWNER}/{IMAGE.replace('-', '')}.jpg", id="uuid without dashes"),
        pytest.param("", id="empty"),
    ],
)
def test_keys_no_presigned_upload_makes_are_not_uploads(key: str) -> None:
    assert parse_upload_key(key) is None


def test_a_thumbnail_key_is_versioned_by_the_uploads_etag() -> None:
    """Keys carry the image's upload's ETag: a redone task overwrites the same objects, and
    thumbnails of different uploads could never mix."""
    etag = "9b2cf535f27731c974343645a3985328"
    assert (
        thumbnail_key(OWNER, IMAGE, etag, 128, "jpg")
        == f"thumbnails/{OWNER}/{IMAGE}/9b2cf535f27731c9-128.jpg"
    )
    assert thumbnail_key(OWNER, IMAGE, "other-etag", 128, "jpg") != thumbnail_key(
        OWNER, IMAGE, etag, 128, "jpg"
    )


@pytest.mark.parametrize(
    ("etag", "version"),
    [
        ('"9b2cf535f27731c974343645a3985328"', "9b2cf535f27731c9"),  # quoted, as in headers
        ("d41d8cd98f00b204e9800998ecf8427e-12", "d41d8cd98f00b204"),  # multipart upload
        ("ab-3", "ab3"),
        ("../../x", "x"),  # nothing but letters and digits reaches the key
        ("", "v"),
        ('"-"', "v"),
    ],
)
def test_a_thumbnail_keys_version_is_letters_and_digits(etag: str, version: str) -> None:
    key = thumbnail_key(OWNER, IMAGE, etag, 512, "png")
    assert key == f"thumbnails/{OWNER}/{IMAGE}/{version}-512.png"
    assert key.count("/") == 3


# --- upload requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"content_type": "image/png", "size": 1}, ("image/png", 1)),
        ({"content_type": "IMAGE/JPEG", "size": 123_456}, ("image/jpeg", 123_456)),
        ({"content_type": "Image/Png", "size": MAX_UPLOAD_BYTES}, ("image/png", MAX_UPLOAD_BYTES)),
    ],
)
def test_a_valid_upload_request(body: dict[str, Any], expected: tuple[str, int]) -> None:
    assert validate_upload_request(body) == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": 10}, "content_type"),
        ({"content_type": None, "size": 10}, "content_type"),
        ({"content_type": "image/gif", "size": 10}, "content_type"),
        ({"content_type": "image/jpg", "size": 10}, "content_type"),
        ({"content_type": "image/webp", "size": 10}, "content_type"),
        ({"content_type": " image/jpeg", "size": 10}, "content_type"),
        ({"content_type": "image/jpeg; charset=binary", "size": 10}, "content_type"),
        ({"content_type": ["image/jpeg"], "size": 10}, "content_type"),
        ({"content_type": 1, "size": 10}, "content_type"),
        # The declared size is required: it bounds the upload and counts against the quota.
        ({"content_type": "image/jpeg"}, "size"),
        ({"content_type": "image/jpeg", "size": None}, "size"),
        ({"content_type": "image/jpeg", "size": True}, "size"),
        ({"content_type": "image/jpeg", "size": False}, "size"),
        ({"content_type": "image/jpeg", "size": 0}, "size"),
        ({"content_type": "image/jpeg", "size": -1}, "size"),
        ({"content_type": "image/jpeg", "size": MAX_UPLOAD_BYTES + 1}, "size"),
        ({"content_type": "image/jpeg", "size": 1.5}, "size"),
        ({"content_type": "image/jpeg", "size": "100"}, "size"),
        ({"content_type": "image/jpeg", "size": 10, "filename": "cat.jpg"}, "filename"),
        ({"content_type": "image/jpeg", "size": 10, "key": "uploads/../x"}, "key"),
    ],
)
def test_an_invalid_upload_request_is_refused(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_upload_request(body)
    assert list(problems(exc)) == [field]
    assert exc.value.status_code == 400


def test_an_empty_upload_request_names_both_required_fields() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_upload_request({})
    assert sorted(problems(exc)) == ["content_type", "size"]


def test_every_problem_of_an_upload_request_is_reported_at_once() -> None:
    body = {"content_type": "image/gif", "size": 0, "name": "x", "owner_id": OWNER}
    with pytest.raises(ValidationFailed) as exc:
        validate_upload_request(body)
    found = problems(exc)
    assert sorted(found) == ["content_type", "name", "owner_id", "size"]
    assert "image/jpeg" in found["content_type"] and "image/png" in found["content_type"]
    assert str(MAX_UPLOAD_BYTES) in found["size"]
    assert found["name"] == "is not a known field"


# --- labels ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("dog", "dog"),
        ("Dog", "dog"),
        ("  DOG\t", "dog"),
        ("Golden Retriever", "golden retriever"),
        ("Straße", "strasse"),  # casefold, not lower
        ("\uff24\uff4f\uff47", "dog"),  # fullwidth letters: NFKC
        ("x" * MAX_LABEL_LENGTH, "x" * MAX_LABEL_LENGTH),
        (" " + "X" * MAX_LABEL_LENGTH + " ", "x" * MAX_LABEL_LENGTH),  # length after trimming
    ],
)
def test_a_label_is_normalised(raw: str | None, expected: str | None) -> None:
    assert validate_label(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "\t\n",
        "x" * (MAX_LABEL_LENGTH + 1),
        "hot\x00dog",
        "hot\ndog",
    ],
)
def test_an_invalid_label_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_label(raw)
    assert list(problems(exc)) == ["label"]


# --- S3 notifications ------------------------------------------------------------------


def record(event: str, key: str, etag: str = "abc123", size: int = 1024) -> dict[str, Any]:
    """One record of an S3 event notification, as S3 sends it."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-26T12:00:00.000Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploads",
            "bucket": {"name": "uploads-bucket", "arn": "arn:aws:s3:::uploads-bucket"},
            "object": {"key": key, "size": size, "eTag": etag, "sequencer": "0055AED6DCD90281E5"},
        },
    }


def test_s3s_test_event_creates_nothing() -> None:
    """S3 sends it once, when the notification is configured."""
    notification = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-11-26T12:00:00.000Z",
        "Bucket": "uploads-bucket",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert created_objects(notification) == []


def test_a_created_object_is_read_from_its_record() -> None:
    key = f"uploads/{OWNER}/{IMAGE}.jpg"
    notification = {"Records": [record("ObjectCreated:Post", key, size=2_000_000)]}
    assert created_objects(notification) == [
        CreatedObject("uploads-bucket", key, "abc123", 2_000_000, "2026-11-26T12:00:00Z")
    ]


def test_a_key_arrives_url_encoded() -> None:
    """S3 encodes keys in notifications, with `+` for a space."""
    encoded = f"uploads%2F{OWNER}%2F{IMAGE}.jpg"
    [created] = created_objects({"Records": [record("ObjectCreated:Post", encoded)]})
    assert created.key == f"uploads/{OWNER}/{IMAGE}.jpg"
    assert parse_upload_key(created.key) == UploadKey(OWNER, IMAGE, "jpg")

    [spaced] = created_objects({"Records": [record("ObjectCreated:Put", "my+cat%2B1%25.jpg")]})
    assert spaced.key == "my cat+1%.jpg"


def test_only_created_objects_count() -> None:
    key = f"uploads/{OWNER}/{IMAGE}.png"
    notification = {
        "Records": [
            record("ObjectRemoved:Delete", key),
            record("ObjectCreated:Put", key, etag="first"),
            record("ObjectRestore:Completed", key),
            record("ObjectCreated:CompleteMultipartUpload", key, etag="second-2"),
            record("ObjectRemoved:DeleteMarkerCreated", key),
        ]
    }
    assert [o.etag for o in created_objects(notification)] == ["first", "second-2"]


def test_a_removal_alone_creates_nothing() -> None:
    notification = {"Records": [record("ObjectRemoved:Delete", f"uploads/{OWNER}/{IMAGE}.jpg")]}
    assert created_objects(notification) == []


def test_etag_quotes_are_stripped() -> None:
    [created] = created_objects({"Records": [record("ObjectCreated:Post", "k", etag='"abc"')]})
    assert created.etag == "abc"


def test_an_empty_notification_creates_nothing() -> None:
    assert created_objects({}) == []
    assert created_objects({"Records": []}) == []
    assert created_objects({"Records": None}) == []


# --- what the API shows ----------------------------------------------------------------


def test_the_public_view_leaves_bookkeeping_out_and_is_json_ready() -> None:
    stored = {
        "image_id": IMAGE,
        "owner_id": OWNER,
        "key": f"uploads/{OWNER}/{IMAGE}.jpg",
        "status": "ready",
        "content_type": "image/jpeg",
        "size": Decimal("2000000"),
        "width": Decimal(4000),
        "height": Decimal("3000"),
        "labels": [
            {"name": "Dog", "confidence": Decimal("98.5")},
            {"name": "Pet", "confidence": Decimal("91")},
        ],
        "thumbnails": {
            "128": {"key": "thumbnails/a-128.jpg", "width": Decimal(128), "height": Decimal(96)},
        },
        "uploaded_at": "2026-11-26T12:00:00Z",
        "created_at": "2026-11-26T12:00:01Z",
        "updated_at": "2026-11-26T12:00:02Z",
        "reason": None,  # absent values are left out too
        "etag": "abc123",
        "version": Decimal(3),
        "created_key": f"2026-11-26T12:00:01Z#{IMAGE}",
        "retryable": False,
        "owner_label": f"{OWNER}#dog",
    }
    view = public_view(stored)
    assert not {"etag", "version", "created_key", "retryable", "owner_label", "reason"} & set(view)
    assert view["size"] == 2_000_000 and type(view["size"]) is int
    assert (view["width"], view["height"]) == (4000, 3000)
    assert type(view["width"]) is int
    assert view["labels"] == [
        {"name": "Dog", "confidence": 98.5},
        {"name": "Pet", "confidence": 91},
    ]
    assert type(view["labels"][0]["confidence"]) is float
    assert type(view["labels"][1]["confidence"]) is int
    assert view["thumbnails"] == {
        "128": {"key": "thumbnails/a-128.jpg", "width": 128, "height": 96}
    }
    assert type(view["thumbnails"]["128"]["width"]) is int


def test_the_public_view_of_a_failed_record_says_why() -> None:
    stored = {
        "image_id": IMAGE,
        "owner_id": OWNER,
        "status": "failed",
        "reason": "the file is not a JPEG or PNG image",
        "retryable": False,
        "size": Decimal(0),
    }
    assert public_view(stored) == {
        "image_id": IMAGE,
        "owner_id": OWNER,
        "status": "failed",
        "reason": "the file is not a JPEG or PNG image",
        "size": 0,
    }


# --- tombstones --------------------------------------------------------------------------


def test_a_tombstone_drops_the_labels_and_names_the_owner_until_forgotten() -> None:
    from chalicelib.images.model import DELETED, forgotten, is_deleted, names_owner, tombstone

    previous = {"image_id": IMAGE, "owner_id": OWNER, "version": 4, "created_key": "k",
                "key": upload_key(OWNER, IMAGE, "png"), "status": "ready",
                "labels": [{"name": "Dog", "confidence": 99}]}  # fmt: skip
    stone = tombstone(IMAGE, OWNER, previous, "2026-11-26T12:00:00.000000Z", 1_800_000_000)
    assert stone == {
        "image_id": IMAGE, "owner_id": OWNER, "created_key": "k", "status": DELETED,
        "deleted_at": "2026-11-26T12:00:00.000000Z", "expires_at": 1_800_000_000, "version": 5,
    }, "still in the owner's index (owner_id, created_key) while its objects go"  # fmt: skip
    assert is_deleted(stone) and not is_deleted(previous) and not is_deleted(None)
    assert names_owner(stone)
    fresh = tombstone(IMAGE, OWNER, None, "t", 1)
    assert fresh["version"] == 1 and fresh["created_key"] == f"t#{IMAGE}"

    gone = forgotten(stone)
    assert gone == {
        "image_id": IMAGE, "status": DELETED, "deleted_at": "2026-11-26T12:00:00.000000Z",
        "expires_at": 1_800_000_000, "version": 6,
    }  # fmt: skip
    assert is_deleted(gone) and not names_owner(gone) and OWNER not in repr(gone)
    assert not names_owner(forgotten({**previous, "status": DELETED}))


def test_the_erased_owner_marker_is_keyed_by_a_digest_of_the_owner() -> None:
    import hashlib

    from chalicelib.images.model import erased_owner_marker, owner_digest

    digest = hashlib.sha256(OWNER.encode()).hexdigest()
    assert owner_digest(OWNER) == digest and len(digest) == 64
    assert erased_owner_marker(OWNER) == f"erased-owner#{digest}"
    assert OWNER not in erased_owner_marker(OWNER)
    assert erased_owner_marker(OWNER) != erased_owner_marker(IMAGE)
