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

if TYPE_CHECKING:
    from chalicelib.images.pipeline import ImageAnalysis, ThumbnailMaker
    from chalicelib.images.service import ImagesService


@cache
def images_service() -> ImagesService:
    from chalicelib.core.settings import get_settings
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.service import ImagesService

    settings = get_settings()
    return ImagesService(
        S3ImageStorage(settings.uploads_bucket_name),
        DynamoImageRecords(settings.images_table_name, settings.image_labels_table_name),
    )


@cache
def image_analysis() -> ImageAnalysis:
    from chalicelib.core import aws, clock
    from chalicelib.core.settings import get_settings
    from chalicelib.images.adapters import (
        DynamoImageRecords,
        RekognitionLabels,
        S3ImageStorage,
        SqsThumbnailTasks,
    )
    from chalicelib.images.pipeline import ImageAnalysis

    settings = get_settings()
    bucket = settings.uploads_bucket_name
    queue = settings.thumbnails_queue_name
    return ImageAnalysis(
        bucket,
        S3ImageStorage(bucket),
        RekognitionLabels(bucket),
        DynamoImageRecords(settings.images_table_name, settings.image_labels_table_name),
        SqsThumbnailTasks(lambda: aws.queue_url(queue)),
        clock=clock.timestamp,
    )


@cache
def thumbnail_maker() -> ThumbnailMaker:
    from chalicelib.core import clock
    from chalicelib.core.settings import get_settings
    from chalicelib.images.adapters import DynamoImageRecords, S3ImageStorage
    from chalicelib.images.pipeline import ThumbnailMaker

    settings = get_settings()
    return ThumbnailMaker(
        S3ImageStorage(settings.uploads_bucket_name),
        DynamoImageRecords(settings.images_table_name, settings.image_labels_table_name),
        clock=clock.timestamp,
    )
