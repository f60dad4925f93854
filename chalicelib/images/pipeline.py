"""The image pipeline's two steps, each run from an SQS message and each idempotent.

1. `ImageAnalysis.handle(body, receive_count)`: an S3 event notification (uploads/ ->
   SQS). Checks the file, asks Rekognition for labels, stores the image record and its
   label entries in one transaction, then queues a thumbnail task.
2. `ThumbnailMaker.handle(body, receive_count)`: a thumbnail task. Makes the 128 and 512 px
   thumbnails, stores them under thumbnails/ and marks the record ready.

Every source delivers at least once, so both steps are decided by what is stored:
- a duplicated notification finds the record of the same upload (same ETag) and only
  re-queues the thumbnail task if the record still waits for it (the first run may have
  died between the two); a duplicated task finds the record ready, or no longer at its
  ETag, and does nothing. Thumbnail keys carry the ETag, so a redone task overwrites the
  same objects;
- a second upload under the same id (the presigned POST used twice) replaces the record:
  the newest upload wins, and events for an upload already overwritten are ignored;
- a file that cannot be used (empty, not JPEG/PNG, corrupt, a decompression bomb, refused
  by Rekognition) ends as status `failed` with a reason, and the message is done;
- anything else (an outage, throttling) raises, so SQS redelivers the message. On its
  last receive (MAX_RECEIVES, the queue's maxReceiveCount) the record is marked `failed`
  with `retryable: true` before raising, and the queue then moves the message to its
  dead-letter queue. Redriving it from there runs the step again. (A receive the handler
  never sees, such as a timeout, leaves the record as it was; the DLQ's alarm still fires.)
- a deleted image (its record a tombstone, see `removal`) is never brought back: every
  write is conditional on the version read, so a write racing the delete fails, and the
  retry finds the tombstone. An upload for a deleted id, or of an owner whose images were
  erased, is removed instead of analysed; thumbnails written while the image was being
  deleted are removed by the task that wrote them once it finds the tombstone. Both checks
  need nothing of the owner stored: the tombstone is found by image id, the erased-owner
  marker by a digest of the owner id in the upload's key (`model.erased_owner_marker`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from chalicelib.core.observability import logger
from chalicelib.images import imaging
from chalicelib.images.imaging import ImageInfo, UnusableImage
from chalicelib.images.model import (
    FAILED,
    MAX_RECEIVES,
    MAX_UPLOAD_BYTES,
    PROCESSING,
    READY,
    THUMBNAIL_SIZES,
    CreatedObject,
    UploadKey,
    created_objects,
    is_deleted,
    label_key,
    parse_upload_key,
    thumbnail_key,
)

#: How much of a file is read to find its format and size (JPEG EXIF can be 64 KiB).
HEADER_BYTES = 256 * 1024
#: Optimistic writes tried before the message is left to SQS's retry.
WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str
    last_modified: str  # ISO-8601 UTC


class ObjectGone(Exception):
    """The object is missing, or no longer the upload asked for (a newer one replaced it)."""


class ImageStorage(Protocol):
    def describe(self, key: str) -> StoredObject | None: ...
    def read(self, key: str, etag: str, first_bytes: int | None = None) -> bytes: ...
    def write(self, key: str, data: bytes, content_type: str) -> None: ...
    def remove(self, key: str) -> None: ...


class LabelDetector(Protocol):
    def detect_in_object(self, key: str) -> list[dict[str, Any]]: ...
    def detect_in_bytes(self, data: bytes) -> list[dict[str, Any]]: ...


class ImageRecords(Protocol):
    def get(self, image_id: str) -> dict[str, Any] | None: ...
    def save(self, record: dict[str, Any], previous: dict[str, Any] | None) -> bool: ...
    def update(self, previous: dict[str, Any], changes: dict[str, Any]) -> bool: ...
    def owner_erased(self, owner_id: str) -> bool: ...


class ThumbnailTasks(Protocol):
    def send(self, task: dict[str, str]) -> None: ...


class ImageAnalysis:
    def __init__(
        self,
        bucket: str,
        storage: ImageStorage,
        detector: LabelDetector,
        records: ImageRecords,
        tasks: ThumbnailTasks,
        clock: Callable[[], str],
    ) -> None:
        self._bucket = bucket
        self._storage = storage
        self._detector = detector
        self._records = records
        self._tasks = tasks
        self._clock = clock

    def handle(self, body: str, receive_count: int = 1) -> None:
        """One SQS message from the uploads bucket's notifications."""
        for created in created_objects(json.loads(body)):
            upload = parse_upload_key(created.key)
            if created.bucket != self._bucket or upload is None:
                logger.warning("not an upload of this app; ignored", key=created.key)
                continue
            try:
                self.analyze(upload, created)
            except Exception as error:
                if receive_count >= MAX_RECEIVES:
                    self._give_up(upload, created, error)
                raise

    def analyze(self, upload: UploadKey, created: CreatedObject) -> None:
        stored = self._storage.describe(upload.key)
        if stored is None or stored.etag != created.etag:
            # Deleted, or overwritten by a newer upload, whose own event will come.
            logger.info("upload gone or replaced; event ignored", key=upload.key)
            return
        if self._records.owner_erased(upload.owner_id):
            self._storage.remove(upload.key)  # posted with a link issued before the erasure
            logger.info("upload of an erased owner removed", image_id=upload.image_id)
            return
        for _ in range(WRITE_ATTEMPTS):
            previous = self._records.get(upload.image_id)
            if is_deleted(previous):
                self._storage.remove(upload.key)  # deleted meanwhile, or posted again after
                logger.info("upload of a deleted image removed", image_id=upload.image_id)
                return
            if previous is not None and not self._replaces(previous, stored):
                if previous["etag"] == stored.etag and previous["status"] == PROCESSING:
                    self._queue_thumbnails(previous)  # the first run may have died before
                logger.info("upload already analysed", image_id=upload.image_id)
                return
            record = self._analysed_record(upload, stored, previous)
            if self._records.save(record, previous):
                if record["status"] == PROCESSING:
                    self._queue_thumbnails(record)
                logger.info("image analysed", image_id=upload.image_id, status=record["status"])
                return
        raise RuntimeError(f"image {upload.image_id} kept changing; retried by SQS")

    @staticmethod
    def _replaces(previous: dict[str, Any], stored: StoredObject) -> bool:
        """Whether an analysis of `stored` should replace `previous`."""
        if previous["etag"] == stored.etag:
            return previous["status"] == FAILED and bool(previous.get("retryable"))
        return str(previous.get("uploaded_at", "")) <= stored.last_modified

    def _analysed_record(
        self, upload: UploadKey, stored: StoredObject, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        record = self._new_record(upload, stored, previous)
        try:
            info, data = self._inspect(upload.key, stored)
            labels = self._labels(upload.key, stored, data)
        except UnusableImage as unusable:
            logger.info("upload refused", image_id=upload.image_id, reason=unusable.reason)
            return {**record, "status": FAILED, "reason": unusable.reason, "retryable": False}
        return {
            **record,
            "status": PROCESSING,
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "labels": labels,
        }

    def _new_record(
        self, upload: UploadKey, stored: StoredObject, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        now = self._clock()
        created_at = previous["created_at"] if previous else now
        return {
            "image_id": upload.image_id,
            "owner_id": upload.owner_id,
            "key": upload.key,
            "etag": stored.etag,
            "size": stored.size,
            "uploaded_at": stored.last_modified,
            "created_at": created_at,
            "created_key": f"{created_at}#{upload.image_id}",
            "updated_at": now,
            "version": int(previous.get("version", 0)) + 1 if previous else 1,
        }

    def _inspect(self, key: str, stored: StoredObject) -> tuple[ImageInfo, bytes | None]:
        """The image's format and size, and its bytes if they had to be read whole."""
        if stored.size == 0:
            raise UnusableImage("the file is empty")
        if stored.size > MAX_UPLOAD_BYTES:
            raise UnusableImage(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        if stored.size > HEADER_BYTES:
            try:
                head = self._read(key, stored, HEADER_BYTES)
                return imaging.inspect(head, complete=False), None
            except imaging.TruncatedHeader:
                pass  # a header longer than HEADER_BYTES: read it all
        data = self._read(key, stored)
        return imaging.inspect(data), data

    def _labels(self, key: str, stored: StoredObject, data: bytes | None) -> list[dict[str, Any]]:
        if stored.size <= imaging.REKOGNITION_MAX_S3_BYTES:
            found = self._detector.detect_in_object(key)
        else:
            found = self._detector.detect_in_bytes(
                imaging.analysis_copy(data or self._read(key, stored))
            )
        labels: dict[str, dict[str, Any]] = {}
        for label in found:
            name = str(label["name"])
            if label_key(name) and label_key(name) not in labels:
                confidence = Decimal(str(round(float(label["confidence"]), 2)))
                labels[label_key(name)] = {"name": name, "confidence": confidence}
        return list(labels.values())

    def _read(self, key: str, stored: StoredObject, first_bytes: int | None = None) -> bytes:
        try:
            return self._storage.read(key, stored.etag, first_bytes)
        except ObjectGone as gone:
            # Replaced while being analysed: fail this try; the redelivery sees the new ETag.
            raise RuntimeError(f"{key} changed during analysis") from gone

    def _queue_thumbnails(self, record: dict[str, Any]) -> None:
        self._tasks.send({"image_id": record["image_id"], "etag": record["etag"]})

    def _give_up(self, upload: UploadKey, created: CreatedObject, error: Exception) -> None:
        """Last receive: record the failure, unless a record is there already that is further
        along (its thumbnail task will finish it) or of another upload (not ours to touch)."""
        reason = f"analysis failed {MAX_RECEIVES} times ({type(error).__name__}); redrive the DLQ"
        try:
            previous = self._records.get(upload.image_id)
            if previous is not None and (
                previous.get("etag") != created.etag or previous["status"] != FAILED
            ):
                return  # also a tombstone: a deleted image stays deleted
            if previous is None and self._records.owner_erased(upload.owner_id):
                return
            stored = StoredObject(created.size, created.etag, created.event_time)
            record = {
                **self._new_record(upload, stored, previous),
                "status": FAILED,
                "reason": reason,
                "retryable": True,
            }
            self._records.save(record, previous)
        except Exception:
            logger.exception("could not record the failure", image_id=upload.image_id)


class ThumbnailMaker:
    def __init__(
        self, storage: ImageStorage, records: ImageRecords, clock: Callable[[], str]
    ) -> None:
        self._storage = storage
        self._records = records
        self._clock = clock

    def handle(self, body: str, receive_count: int = 1) -> None:
        """One thumbnail task: {"image_id": ..., "etag": ...}."""
        task = json.loads(body)
        try:
            self.make(str(task["image_id"]), str(task["etag"]))
        except Exception as error:
            if receive_count >= MAX_RECEIVES:
                reason = (
                    f"thumbnails failed {MAX_RECEIVES} times ({type(error).__name__}); "
                    "redrive the DLQ"
                )
                try:
                    self._finish(
                        str(task["image_id"]), str(task["etag"]), self._failed(reason, True)
                    )
                except Exception:
                    logger.exception("could not record the failure", image_id=task["image_id"])
            raise

    def make(self, image_id: str, etag: str) -> None:
        record = self._records.get(image_id)
        if not _waits_for_thumbnails(record, etag):
            logger.info("thumbnail task stale or done; ignored", image_id=image_id)
            return
        assert record is not None
        try:
            data = self._storage.read(record["key"], etag)
        except ObjectGone:
            logger.info("upload replaced; its own task will come", image_id=image_id)
            return
        try:
            thumbnails = imaging.make_thumbnails(data, THUMBNAIL_SIZES)
        except UnusableImage as unusable:
            self._finish(image_id, etag, self._failed(unusable.reason, False))
            return
        extension = "jpg" if record.get("content_type") == "image/jpeg" else "png"
        made = {}
        for thumbnail in thumbnails:
            key = thumbnail_key(record["owner_id"], image_id, etag, thumbnail.size, extension)
            self._storage.write(key, thumbnail.data, thumbnail.content_type)
            made[str(thumbnail.size)] = {
                "key": key,
                "width": thumbnail.width,
                "height": thumbnail.height,
            }
        if not self._finish(image_id, etag, {"status": READY, "thumbnails": made}):
            self._remove_if_deleted(image_id, [m["key"] for m in made.values()])

    def _remove_if_deleted(self, image_id: str, keys: list[str]) -> None:
        """The image was deleted while its thumbnails were made: the delete may have listed
        its thumbnails before these were written, so they are this task's to remove."""
        current = self._records.get(image_id)
        if current is None or is_deleted(current):
            for key in keys:
                self._storage.remove(key)
            logger.info("image deleted meanwhile; its new thumbnails removed", image_id=image_id)

    @staticmethod
    def _failed(reason: str, retryable: bool) -> dict[str, Any]:
        return {"status": FAILED, "reason": reason, "retryable": retryable}

    def _finish(self, image_id: str, etag: str, changes: dict[str, Any]) -> bool:
        """Apply `changes` to the record while it still waits for these thumbnails; False
        if it no longer does (done by another run, replaced, deleted)."""
        for _ in range(WRITE_ATTEMPTS):
            record = self._records.get(image_id)
            if not _waits_for_thumbnails(record, etag):
                return False
            if self._records.update(record, {**changes, "updated_at": self._clock()}):
                logger.info("thumbnails finished", image_id=image_id, status=changes["status"])
                return True
        raise RuntimeError(f"image {image_id} kept changing; retried by SQS")


def _waits_for_thumbnails(record: dict[str, Any] | None, etag: str) -> bool:
    """Whether a thumbnail task for upload `etag` still has work: the record is of that
    upload and waits for them, or failed for a passing reason (a task redriven from the DLQ)."""
    if record is None or record.get("etag") != etag:  # a tombstone has no etag
        return False
    failed_retryably = record["status"] == FAILED and bool(record.get("retryable"))
    return record["status"] == PROCESSING or failed_retryably
