"""What an image is in this app, and which input is acceptable: pure functions, no AWS.

A presigned POST puts a file at `uploads/{owner_id}/{image_id}.{jpg|png}` in the uploads
bucket; it can be posted again (with other bytes) until it expires, and S3 keeps only the
latest bytes under a key. So the first upload the pipeline takes (`claim`) is the image, for
good: its bytes are written once to `originals/{owner_id}/{image_id}.{ext}` (S3 refuses a
second write there), everything is derived from that copy, and the uploads/ object is
removed. Any later upload under the same key is removed unanalysed. Thumbnails live at
`thumbnails/{owner_id}/{image_id}/{version}-{size}.{ext}`, the version coming from the
upload's ETag. Its record (images table) goes through these states:

    received    claimed by its first upload (its ETag, for good), being kept and analysed
                by the delivery holding the lease (`lease_until`); not shown by the API
    processing  original kept, labels stored, thumbnails being made
    ready       thumbnails made
    failed      `reason` says why; `retryable` when it was an outage, not the file
    deleted     a tombstone (DELETE /images/{id}, or the owner's data erased): no labels,
                gone from the API; the pipeline never writes over it and removes what it
                finds of the image. It expires (TTL) after TOMBSTONE_DAYS, longer than any
                notification or task can wait in a queue.

A tombstone names its owner only while the image's objects are being removed (`tombstone`:
it stays in the owner's index, so an interrupted delete or erasure finds it and finishes);
then it becomes `forgotten`: the image id, the status, when and until when, nothing that
names or leads to the owner (no owner, key or index keys). The pipeline checks tombstones
by image id only.

An owner whose data was erased has a marker item for as long (`erased_owner_marker`, keyed
by a digest of the owner's id, never the id): an upload posted afterwards with a link issued
before is removed, not analysed; the pipeline finds the marker from the upload key's owner.
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
from chalicelib.core.ids import UUID_PATTERN, digest, is_uuid

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

RECEIVED, PROCESSING, READY, FAILED = "received", "processing", "ready", "failed"
DELETED = "deleted"
#: How long a delivery of an upload's notification holds the image (claim, keep, analyse;
#: or re-send its thumbnail task) before another delivery may take over: longer than the
#: analysis function's timeout (60 s), so a live run is never doubled, and shorter than the
#: uploads queue's visibility timeout (360 s), so the redelivery of a run that died takes
#: over. Deliveries of the same upload meanwhile (S3 duplicates, the same bytes posted
#: again) do nothing. A test keeps it between the two.
ANALYSIS_LEASE_SECONDS = 120
#: How long tombstones and erased-owner markers are kept: above the queues' retention
#: (4 days) plus their dead-letter queues' (14 days), so a late message still finds them.
TOMBSTONE_DAYS = 30

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

    @property
    def original(self) -> str:
        return original_key(self.owner_id, self.image_id, self.extension)


def upload_key(owner_id: str, image_id: str, extension: str) -> str:
    return f"uploads/{owner_id}/{image_id}.{extension}"


def parse_upload_key(key: str) -> UploadKey | None:
    """The owner and image of an uploads/ key, or None for a key no presigned upload makes."""
    found = _UPLOAD_KEY.fullmatch(key)
    if not found:
        return None
    return UploadKey(found["owner"], found["image"], found["ext"])


def uploads_prefix(owner_id: str) -> str:
    return f"uploads/{owner_id}/"


def original_key(owner_id: str, image_id: str, extension: str) -> str:
    """Where an image's first upload is kept (written once): what it is analysed from, what
    its thumbnails are made from and what its links serve."""
    return f"originals/{owner_id}/{image_id}.{extension}"


def originals_prefix(owner_id: str) -> str:
    return f"originals/{owner_id}/"


def thumbnails_prefix(owner_id: str, image_id: str | None = None) -> str:
    """Where an owner's thumbnails (or one image's, of every upload under its id) live."""
    return f"thumbnails/{owner_id}/{image_id}/" if image_id else f"thumbnails/{owner_id}/"


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


def validate_upload_request(body: Mapping[str, Any]) -> tuple[str, int]:
    """A `POST /images` body checked (`schemas.UploadRequest`): (content type, declared size
    in bytes); or ValidationFailed listing every problem. The size is required: the
    presigned POST pins the upload to at most that many bytes, and the daily byte quota
    counts it."""
    from chalicelib.core.validation import validate
    from chalicelib.images.schemas import UploadRequest

    request = validate(UploadRequest, body, "The upload request is not valid.")
    return request.content_type, request.size


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


def is_deleted(record: Mapping[str, Any] | None) -> bool:
    return record is not None and record.get("status") == DELETED


def is_shown(record: Mapping[str, Any] | None) -> bool:
    """Whether the API shows the record: analysed (not only claimed), and not deleted."""
    return record is not None and record.get("status") not in (RECEIVED, DELETED)


def tombstone(
    image_id: str,
    owner_id: str,
    previous: Mapping[str, Any] | None,
    deleted_at: str,
    expires_at: int,
) -> dict[str, Any]:
    """What replaces a deleted image's record (or stands for an upload never recorded) while
    its objects are removed: no labels (so its label entries go in the same write), a TTL,
    and the owner and index keys, so the owner's index still lists it and an interrupted
    removal is found and finished (then the tombstone is `forgotten`)."""
    created_key = (previous or {}).get("created_key") or f"{deleted_at}#{image_id}"
    return {
        "image_id": image_id,
        "owner_id": owner_id,
        "created_key": created_key,
        "status": DELETED,
        "deleted_at": deleted_at,
        "expires_at": expires_at,
        "version": int(previous["version"]) + 1 if previous else 1,
    }


#: What a forgotten tombstone keeps (besides `version`): nothing about the owner.
FORGOTTEN_FIELDS = ("image_id", "status", "deleted_at", "expires_at")


def forgotten(stone: Mapping[str, Any]) -> dict[str, Any]:
    """A tombstone whose image's objects are gone: the owner, the upload key and the index
    keys dropped (out of the owner's index), the status and the TTL kept."""
    kept = {name: stone[name] for name in FORGOTTEN_FIELDS if name in stone}
    return {**kept, "version": int(stone["version"]) + 1}


def names_owner(record: Mapping[str, Any]) -> bool:
    """Whether a tombstone still says whose image it was (its removal not finished)."""
    return any(name not in FORGOTTEN_FIELDS and name != "version" for name in record)


def owner_digest(owner_id: str) -> str:
    """How an erased owner is named in the images table: a SHA-256 digest (hex) of the id,
    computed again from an upload key to check it, never turned back into the id."""
    return digest(owner_id)


def erased_owner_marker(owner_id: str) -> str:
    """The images table key of the marker saying an owner's images were erased (never an
    image id: those are UUIDs; never the owner's id: its digest)."""
    return f"erased-owner#{owner_digest(owner_id)}"
