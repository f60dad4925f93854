"""Images: presigned uploads, Rekognition labels, Pillow thumbnails.

    POST /images ─► presigned POST ─► uploads bucket (uploads/) ─► S3 notification ─► SQS
      ─► `analyze_image`: the first upload kept (originals/), labels, record (images +
         image-labels tables), upload removed ─► thumbnail task (SQS)
      ─► `make_thumbnails`: 128 and 512 px under thumbnails/, record ready

- `images_service()`: the API (`service`), with deleting (`removal`) and daily quotas;
- `image_analysis().handle(body, receive_count)` and `thumbnail_maker().handle(...)`: the
  two SQS steps (`pipeline`, `thumbnails`), each idempotent, failing an unusable file with
  a reason and leaving outages to SQS's retries and dead-letter queues; an image is its
  first upload, and a later post of its link is removed unanalysed;
- `image_owner_data()`: `erase(user_id)` and `export(user_id)` for the user-deletion flow,
  and `image_owner_export()`: `export(user_id)` only, with read grants only, for the
  export route (`owner_data`). An entry point of app.py that calls one gets its grants
  (the wiring reads what app.py names); a factory elsewhere that calls one declares
  `*IMAGE_OWNER_DATA_NEEDS` or `*IMAGE_OWNER_EXPORT_NEEDS` in its own `@needs`.

S3 reaches the app through SQS rather than `@app.on_s3_event`, which `chalice package`
cannot express; the bucket's notification is declared in infra/resources.json.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.core.resources import Resource, StageSetting, anywhere, needs

if TYPE_CHECKING:
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.owner_data import ImageOwnerData, ImageOwnerExport
    from chalicelib.images.pipeline import ImageAnalysis
    from chalicelib.images.service import ImagesService
    from chalicelib.images.thumbnails import ThumbnailMaker

UPLOADS_BUCKET = Resource("UploadsBucket")
IMAGES_TABLE = Resource("ImagesTable")
IMAGE_LABELS_TABLE = Resource("ImageLabelsTable")
THUMBNAILS_QUEUE = Resource("ThumbnailsQueue")
QUOTAS_TABLE = Resource("QuotasTable")
#: Per user and UTC day: presigned uploads, and the bytes they declare (the template's
#: StageSettings, per stage).
UPLOADS_PER_DAY = StageSetting("ImageUploadsPerDay")
UPLOAD_BYTES_PER_DAY = StageSetting("ImageUploadBytesPerDay")
#: Where uploads, kept originals and thumbnails live in the bucket (see `model`).
UPLOADS = "/uploads/*"
ORIGINALS = "/originals/*"
THUMBNAILS = "/thumbnails/*"
#: Removing an image (`removal`): its record becomes a tombstone in one transaction that
#: deletes its label entries; its objects are listed (s3:ListBucket also makes a missing
#: key 404, not 403) and deleted.
REMOVE_IMAGES = (
    IMAGES_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem"),
    IMAGE_LABELS_TABLE.allow("dynamodb:DeleteItem"),
    UPLOADS_BUCKET.allow("s3:ListBucket"),
    UPLOADS_BUCKET.allow("s3:GetObject", "s3:DeleteObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:DeleteObject", within=ORIGINALS),
    UPLOADS_BUCKET.allow("s3:DeleteObject", within=THUMBNAILS),
)
#: What `image_owner_export()` does: one Query of the owner's index a page (it projects
#: every attribute), and links to the originals and thumbnails. Presigning calls nothing,
#: but a presigned GET acts with the signer's permissions: it works only while this role
#: may s3:GetObject the key.
IMAGE_OWNER_EXPORT_NEEDS = (
    IMAGES_TABLE.allow("dynamodb:Query", within="/index/by-owner"),
    UPLOADS_BUCKET.allow("s3:GetObject", within=ORIGINALS),
    UPLOADS_BUCKET.allow("s3:GetObject", within=THUMBNAILS),
)
#: What `image_owner_data()` does (see above): the export's, and removing.
IMAGE_OWNER_DATA_NEEDS = (*REMOVE_IMAGES, *IMAGE_OWNER_EXPORT_NEEDS)


def _stores() -> tuple[S3ImageStorage, DynamoImageRecords]:
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage

    return (
        S3ImageStorage(UPLOADS_BUCKET.name),
        DynamoImageRecords(IMAGES_TABLE.name, IMAGE_LABELS_TABLE.name),
    )


@cache
@needs(
    # Presigned uploads and links act with the signer's (this role's) permissions.
    UPLOADS_BUCKET.allow("s3:PutObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:GetObject", within=ORIGINALS),
    UPLOADS_BUCKET.allow("s3:GetObject", within=THUMBNAILS),
    IMAGES_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:GetItem"),
    IMAGES_TABLE.allow("dynamodb:Query", within="/index/by-owner"),
    IMAGE_LABELS_TABLE.allow("dynamodb:Query"),
    *REMOVE_IMAGES,
    # Both daily quotas are taken in one transaction (each item authorised as UpdateItem).
    QUOTAS_TABLE.allow("dynamodb:UpdateItem"),
    UPLOADS_PER_DAY.used(),
    UPLOAD_BYTES_PER_DAY.used(),
)
def images_service() -> ImagesService:
    from chalicelib.core.quotas import DynamoQuotas
    from chalicelib.images.removal import ImageRemoval
    from chalicelib.images.service import ImagesService, daily_upload_quotas

    storage, records = _stores()
    return ImagesService(
        storage,
        records,
        ImageRemoval(storage, records),
        DynamoQuotas(QUOTAS_TABLE.name),
        daily_upload_quotas(int(UPLOADS_PER_DAY.value), int(UPLOAD_BYTES_PER_DAY.value)),
    )


@cache
@needs(*IMAGE_OWNER_DATA_NEEDS)
def image_owner_data() -> ImageOwnerData:
    """`erase(user_id) -> int` and `export(user_id) -> list[dict]` (see `owner_data`)."""
    from chalicelib.images.owner_data import ImageOwnerData
    from chalicelib.images.removal import ImageRemoval

    storage, records = _stores()
    return ImageOwnerData(storage, records, ImageRemoval(storage, records))


@cache
@needs(*IMAGE_OWNER_EXPORT_NEEDS)
def image_owner_export() -> ImageOwnerExport:
    """`export(user_id) -> list[dict]` only, reading (see `owner_data`): for the export
    route, whose function must not get the grants of erasing."""
    from chalicelib.images.owner_data import ImageOwnerExport

    return ImageOwnerExport(*_stores())


@cache
@needs(
    # The first upload is read and written once to originals/, then removed; so are later
    # uploads under the key (unread), and those of a deleted image or an erased owner.
    UPLOADS_BUCKET.allow("s3:GetObject", "s3:DeleteObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:GetObject", "s3:PutObject", "s3:DeleteObject", within=ORIGINALS),
    # So that S3 answers a deleted upload's HeadObject with 404, not 403.
    UPLOADS_BUCKET.allow("s3:ListBucket"),
    # Rekognition reads the original with the caller's permissions (above).
    anywhere("rekognition:DetectLabels"),
    # Record and label entries are written in one transaction (Put, Delete); a run that
    # takes over a claim or a re-send renews the lease (Update).
    IMAGES_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    IMAGE_LABELS_TABLE.allow("dynamodb:DeleteItem", "dynamodb:PutItem"),
    THUMBNAILS_QUEUE.allow("sqs:GetQueueUrl", "sqs:SendMessage"),
)
def image_analysis() -> ImageAnalysis:
    from chalicelib.core import aws, clock
    from chalicelib.images.adapters import (
        DynamoImageRecords,
        RekognitionLabels,
        S3ImageStorage,
        SqsThumbnailTasks,
    )
    from chalicelib.images.pipeline import ImageAnalysis

    bucket = UPLOADS_BUCKET.name
    queue = THUMBNAILS_QUEUE.name
    return ImageAnalysis(
        bucket,
        S3ImageStorage(bucket),
        RekognitionLabels(bucket),
        DynamoImageRecords(IMAGES_TABLE.name, IMAGE_LABELS_TABLE.name),
        SqsThumbnailTasks(lambda: aws.queue_url(queue)),
        now=clock.now,
    )


@cache
@needs(
    UPLOADS_BUCKET.allow("s3:GetObject", within=ORIGINALS),
    # Thumbnails written while their image was deleted are removed by the task.
    UPLOADS_BUCKET.allow("s3:PutObject", "s3:DeleteObject", within=THUMBNAILS),
    IMAGES_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"),
)
def thumbnail_maker() -> ThumbnailMaker:
    from chalicelib.core import clock
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.thumbnails import ThumbnailMaker

    return ThumbnailMaker(
        S3ImageStorage(UPLOADS_BUCKET.name),
        DynamoImageRecords(IMAGES_TABLE.name, IMAGE_LABELS_TABLE.name),
        clock=clock.timestamp,
    )
