"""What an image is in this app, and which input is acceptable: pure functions, no AWS.

An image lives at `uploads/{owner_id}/{image_id}.{jpg|png}` in the uploads bucket; its
thumbnails at `thumbnails/{owner_id}/{image_id}/{version}-{size}.{ext}`, where the version
comes from the upload's ETag, so a re-upload under the same id never mixes its thumbnails
with the previous upload's. Its record (images table) goes through these states:

    processing  labels stored, thumbnails being made
    ready       thumbnails made
    failed      `reason` says why; `retryable` when it was an outage, not the file
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from chalicelib.core.dynamo import plain
from chalicelib.core.errors import ValidationFailed
from chalicelib.core.ids import UUID_PATTERN, is_uuid

#: Content types an upload may declare -> the key's extension.
CONTENT_TYPES = {"image/jpeg": "jpg", "image/png": "png"}
#: The file formats an upload may have -> the content type the image is served as (Pillow
#: names a JPEG holding several pictures, as dual-camera phones write, MPO: a JPEG here).
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Long side of each thumbnail, in pixels.
THUMBNAIL_SIZES = (128, 512)
#: Rekognition DetectLabels settings: 10 labels at most, 80 % confidence or more.
MAX_LABELS = 10
MIN_CONFIDENCE = 80.0
#: How often an SQS message of the pipeline is received before the queue dead-letters it
#: (the redrive policies' maxReceiveCount in infra/resources.json; a test keeps them equal).
#: AWS advises at least 5 for queues a Lambda function reads: a receive can be spent by a
#: throttled function without the handler seeing it.
MAX_RECEIVES = 5
MAX_LABEL_LENGTH = 100

PROCESSING, READY, FAILED = "processing", "ready", "failed"

_UPLOAD_KEY = re.compile(
    rf"^uploads/(?P<owner>{UUID_PATTERN})/(?P<image>{UUID_PATTERN})\.(?P<ext>jpg|png)$"
)
PUBLIC_FIELDS = (
    "image_id",
    "owner_id",
    "key",
    "status",
    "reason",
    "content_type",
    "size",
    "width",
    "height",
    "labels",
    "thumbnails",
    "uploaded_at",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class UploadKey:
    """Whose image an uploads/ key holds, and which."""

    owner_id: str
    image_id: str
    extension: str

    @property
    def key(self) -> str:
        return upload_key(self.owner_id, self.image_id, self.extension)


def upload_key(owner_id: str, image_id: str, extension: str) -> str:
    return f"uploads/{owner_id}/{image_id}.{extension}"


def parse_upload_key(key: str) -> UploadKey | None:
    """The owner and image of an uploads/ key, or None for a key no presigned upload makes."""
    found = _UPLOAD_KEY.fullmatch(key)
    if not found:
        return None
    return UploadKey(found["owner"], found["image"], found["ext"])


def thumbnail_key(owner_id: str, image_id: str, etag: str, size: int, extension: str) -> str:
    version = re.sub(r"[^0-9A-Za-z]", "", etag)[:16] or "v"
    return f"thumbnails/{owner_id}/{image_id}/{version}-{size}.{extension}"


def is_image_id(value: str) -> bool:
    return is_uuid(value)


def label_key(label: str) -> str:
    """The form labels are matched in: `dog`, `Dog` and ` DOG ` are one label."""
    return unicodedata.normalize("NFKC", label).strip().casefold()


def validate_label(raw: str | None) -> str | None:
    """The `label` query parameter normalised, None when absent, or ValidationFailed."""
    if raw is None:
        return None
    key = label_key(raw)
    if not key or len(key) > MAX_LABEL_LENGTH or not key.isprintable():
        raise ValidationFailed(
            "The label is not valid.",
            [{"field": "label", "issue": f"must be 1 to {MAX_LABEL_LENGTH} printable characters"}],
        )
    return key


def validate_upload_request(body: Mapping[str, Any]) -> tuple[str, int | None]:
    """A `POST /images` body checked: (content type, declared size or None); or
    ValidationFailed listing every problem."""
    problems = [
        {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in ("content_type", "size")
    ]
    content_type = body.get("content_type")
    if not isinstance(content_type, str) or content_type.lower() not in CONTENT_TYPES:
        problems.append(
            {"field": "content_type", "issue": f"must be one of {', '.join(CONTENT_TYPES)}"}
        )
    size = body.get("size")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_UPLOAD_BYTES
    ):
        problems.append(
            {"field": "size", "issue": f"must be a whole number of bytes, 1 to {MAX_UPLOAD_BYTES}"}
        )
    if problems:
        raise ValidationFailed("The upload request is not valid.", problems)
    return str(content_type).lower(), size


@dataclass(frozen=True)
class CreatedObject:
    """One object-created record of an S3 event notification."""

    bucket: str
    key: str
    etag: str
    size: int
    event_time: str = ""  # when S3 stored it, ISO-8601 UTC to the second (as `uploaded_at`)


def created_objects(notification: Mapping[str, Any]) -> list[CreatedObject]:
    """The objects an S3 event notification (as S3 sends it to SQS) says were created.

    S3's test message (sent when the notification is configured) and other event kinds give
    none. Keys arrive URL-encoded (`+` for a space), ETags without quotes.
    """
    found = []
    for record in notification.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record["s3"]
        found.append(
            CreatedObject(
                bucket=s3["bucket"]["name"],
                key=unquote_plus(s3["object"]["key"]),
                etag=normalise_etag(s3["object"].get("eTag", "")),
                size=int(s3["object"].get("size", 0)),
                event_time=_to_the_second(str(record.get("eventTime", ""))),
            )
        )
    return found


def _to_the_second(timestamp: str) -> str:
    """`2026-11-26T05:50:20.689Z` as `2026-11-26T05:50:20Z`, the form of `uploaded_at`."""
    return timestamp[:19] + "Z" if len(timestamp) >= 19 else ""


def normalise_etag(etag: str) -> str:
    """S3 quotes ETags in object headers, not in event notifications."""
    return etag.strip('"')


def public_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as the API shows it (bookkeeping attributes left out), JSON-ready."""
    view = {name: record[name] for name in PUBLIC_FIELDS if record.get(name) is not None}
    return plain(view)
