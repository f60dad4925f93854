"""Images: presigned uploads, Rekognition labels, Pillow thumbnails.

    POST /images ─► presigned POST ─► uploads bucket (uploads/) ─► S3 notification ─► SQS
      ─► `analyze_image`: labels, record (images + image-labels tables) ─► thumbnail task (SQS)
      ─► `make_thumbnails`: 128 and 512 px under thumbnails/, record ready

- `images_service()`: the API (`service`);
- `image_analysis().handle(body, receive_count)` and `thumbnail_maker().handle(...)`: the
  two SQS steps (`pipeline`), each idempotent, failing an unusable file with a reason and
  leaving outages to SQS's retries and dead-letter queues.

S3 reaches the app through SQS rather than `@app.on_s3_event`, which `chalice package`
cannot express; the bucket's notification is declared in infra/resources.json.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.core.resources import Resource, anywhere, needs

if TYPE_CHECKING:
    from chalicelib.images.pipeline import ImageAnalysis, ThumbnailMaker
    from chalicelib.images.service import ImagesService

UPLOADS_BUCKET = Resource("UploadsBucket")
IMAGES_TABLE = Resource("ImagesTable")
IMAGE_LABELS_TABLE = Resource("ImageLabelsTable")
THUMBNAILS_QUEUE = Resource("ThumbnailsQueue")
#: Where uploads and thumbnails live in the bucket (see `model`).
UPLOADS = "/uploads/*"
THUMBNAILS = "/thumbnails/*"


@cache
@needs(
    # Presigned uploads and links act with the signer's (this role's) permissions.
    UPLOADS_BUCKET.allow("s3:PutObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:GetObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:GetObject", within=THUMBNAILS),
    IMAGES_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:GetItem"),
    IMAGES_TABLE.allow("dynamodb:Query", within="/index/by-owner"),
    IMAGE_LABELS_TABLE.allow("dynamodb:Query"),
)
def images_service() -> ImagesService:
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.service import ImagesService

    return ImagesService(
        S3ImageStorage(UPLOADS_BUCKET.name),
        DynamoImageRecords(IMAGES_TABLE.name, IMAGE_LABELS_TABLE.name),
    )


@cache
@needs(
    UPLOADS_BUCKET.allow("s3:GetObject", within=UPLOADS),
    # So that S3 answers a deleted upload's HeadObject with 404, not 403.
    UPLOADS_BUCKET.allow("s3:ListBucket"),
    # Rekognition reads the S3 object with the caller's permissions (above).
    anywhere("rekognition:DetectLabels"),
    # Record and label entries are written in one transaction (Put, Delete).
    IMAGES_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem"),
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
        clock=clock.timestamp,
    )


@cache
@needs(
    UPLOADS_BUCKET.allow("s3:GetObject", within=UPLOADS),
    UPLOADS_BUCKET.allow("s3:PutObject", within=THUMBNAILS),
    IMAGES_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"),
)
def thumbnail_maker() -> ThumbnailMaker:
    from chalicelib.core import clock
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.pipeline import ThumbnailMaker

    return ThumbnailMaker(
        S3ImageStorage(UPLOADS_BUCKET.name),
        DynamoImageRecords(IMAGES_TABLE.name, IMAGE_LABELS_TABLE.name),
        clock=clock.timestamp,
    )
