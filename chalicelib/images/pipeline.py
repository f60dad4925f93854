"""The image pipeline's two steps, each run from an SQS message and each idempotent.

1. `ImageAnalysis.handle(body, receive_count)`: an S3 event notification (uploads/ ->
   SQS). Claims the image for this upload, keeps its bytes as the image's original, checks
   them, asks Rekognition for labels, stores the record and its label entries in one
   transaction, removes the upload, then queues a thumbnail task.
2. `ThumbnailMaker.handle(body, receive_count)` (`thumbnails`): a thumbnail task. Makes
   the 128 and 512 px thumbnails from the original, stores them under thumbnails/ and
   marks the record ready.

One presigned POST can be posted again, with other bytes, as long as it is valid, and S3
keeps only the latest bytes under its key. So the first upload of an image that the
analysis takes is the image, for good (see `model`): its claim is the record's first write
(conditional, so one upload wins), and its ETag never changes after. Its bytes, read at
that ETag, are written once to originals/ (S3 refuses a second write); everything else is
derived from that copy. An upload under the key with another ETag is removed unanalysed,
whenever it comes: one link costs at most one analysis and one set of thumbnails. (If the
claimed bytes are overwritten before they could be read, the image fails: its bytes are
gone; the client requests a new link.)

Every source delivers at least once, so both steps are decided by what is stored:
- a claim is worked on by the delivery holding its lease (`ANALYSIS_LEASE_SECONDS`); other
  deliveries of the same upload meanwhile do nothing (S3 duplicates, the same bytes posted
  again), and a redelivery after the lease (the run died; SQS brings its message back after
  the visibility timeout) takes over. A duplicated notification of an image analysed finds
  the record of its upload (same ETag) and only re-queues the thumbnail task if the record
  still waits for it past the lease (the first run may have died between the two); a
  duplicated task finds the record ready, or no longer at its ETag, and does nothing.
  Thumbnail keys carry the ETag, so a redone task overwrites the same objects;
- a file that cannot be used (empty, not JPEG/PNG, corrupt, a decompression bomb, refused
  by Rekognition) ends as status `failed` with a reason, and the message is done;
- anything else (an outage, throttling) raises, so SQS redelivers the message. On its
  last receive (MAX_RECEIVES, the queue's maxReceiveCount) the record is marked `failed`
  with `retryable: true` before raising, and the queue then moves the message to its
  dead-letter queue. Redriving it from there runs the step again, from the kept original
  if the upload is gone. (A receive the handler never sees, such as a timeout, leaves the
  record as it was; the DLQ's alarm still fires.)
- a deleted image (its record a tombstone, see `removal`) is never brought back: every
  write is conditional on the version read, so a write racing the delete fails, and the
  retry finds the tombstone. An upload for a deleted id, or of an owner whose images were
  erased, is removed instead of analysed, and so is an original kept after the delete
  listed the objects; thumbnails written while the image was being deleted are removed by
  the task that wrote them once it finds the tombstone. Both checks need nothing of the
  owner stored: the tombstone is found by image id, the erased-owner marker by a digest of
  the owner id in the upload's key (`model.erased_owner_marker`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from chalicelib.core import clock as app_clock
from chalicelib.core import correlation
from chalicelib.core.observability import logger
from chalicelib.images import imaging
from chalicelib.images.imaging import UnusableImage
from chalicelib.images.model import (
    ANALYSIS_LEASE_SECONDS,
    CONTENT_TYPES,
    FAILED,
    MAX_RECEIVES,
    MAX_UPLOAD_BYTES,
    PROCESSING,
    RECEIVED,
    CreatedObject,
    UploadKey,
    created_objects,
    is_deleted,
    label_key,
    parse_upload_key,
)

#: Optimistic writes tried before the message is left to SQS's retry.
WRITE_ATTEMPTS = 3
#: Why an image whose claimed upload was overwritten before it could be kept fails.
UPLOAD_LOST = (
    "the upload was replaced or removed before it could be processed; request a new upload"
)
#: The content type each original is stored with (the key's extension, which the POST
#: policy ties to the declared type; what the bytes are is checked by the analysis).
_STORED_TYPES = {extension: name for name, extension in CONTENT_TYPES.items()}


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str
    last_modified: str  # ISO-8601 UTC
    #: The id of the request that issued the upload link (the object's metadata).
    correlation_id: str | None = None


class ObjectGone(Exception):
    """The object is missing, or no longer the upload asked for (a newer one replaced it)."""


class ImageStorage(Protocol):
    def describe(self, key: str) -> StoredObject | None: ...
    def read(self, key: str, etag: str | None = None) -> bytes: ...
    def write(self, key: str, data: bytes, content_type: str) -> None: ...
    def write_once(self, key: str, data: bytes, content_type: str) -> bool: ...
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
        now: Callable[[], datetime] = app_clock.now,
    ) -> None:
        self._bucket = bucket
        self._storage = storage
        self._detector = detector
        self._records = records
        self._tasks = tasks
        self._now = now

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
        # The notification carries no correlation id; the object does (its metadata): from
        # here on, this upload's lines and its thumbnail task carry the upload request's id.
        with correlation.bound(stored.correlation_id if stored else None):
            self._analyze(upload, created, stored)

    def _analyze(
        self, upload: UploadKey, created: CreatedObject, stored: StoredObject | None
    ) -> None:
        if stored is None or stored.etag != created.etag:
            self._upload_gone(upload, created.etag)
            return
        for _ in range(WRITE_ATTEMPTS):
            previous = self._records.get(upload.image_id)
            if is_deleted(previous):
                self._remove_objects(upload)  # deleted meanwhile, or posted again after
                logger.info("upload of a deleted image removed", image_id=upload.image_id)
                return
            if previous is None:
                # An erasure tombstones every record of the owner: only an upload without
                # one yet needs the marker (posted with a link issued before the erasure).
                if self._records.owner_erased(upload.owner_id):
                    self._storage.remove(upload.key)
                    logger.info("upload of an erased owner removed", image_id=upload.image_id)
                    return
                claim = self._claim(upload, stored)
                if self._records.save(claim, None):
                    self._process(upload, claim)
                    return
                continue  # another upload claimed it first: decided on the next read
            if previous["etag"] != stored.etag:
                # The image is its first upload's: this one costs a removal, nothing else.
                self._storage.remove(upload.key)
                logger.warning("later upload under an image id removed", image_id=upload.image_id)
                return
            if not self._resume(upload, previous):
                continue
            if not _waits_for_analysis(previous):
                self._storage.remove(upload.key)  # its bytes are kept: a copy, or left over
            return
        raise RuntimeError(f"image {upload.image_id} kept changing; retried by SQS")

    def _upload_gone(self, upload: UploadKey, etag: str) -> None:
        """The upload is no longer under its key: removed (by its own analysis once kept,
        a delete, an erasure) or replaced by a later upload, whose own event comes. Left to
        do: an original kept after the image was deleted, and what a run of this upload
        left unfinished (it died: its lease is over)."""
        previous = self._records.get(upload.image_id)
        if is_deleted(previous):
            self._remove_objects(upload)
        elif previous is not None and previous.get("etag") == etag:
            self._resume(upload, previous)
        else:
            logger.info("upload gone or replaced; event ignored", key=upload.key)

    def _resume(self, upload: UploadKey, record: dict[str, Any]) -> bool:
        """Another delivery of the upload the record is of: finish what a run that died
        left (claimed but not analysed: keep and analyse it, from the original if the upload
        is gone; analysed but its thumbnail task maybe never sent: send it), once that run's
        lease is over; meanwhile the run may be alive, and this delivery does nothing.
        False if the record changed meanwhile (read it again)."""
        waits = _waits_for_analysis(record)
        if not waits and record["status"] != PROCESSING:
            logger.info("upload already analysed", image_id=upload.image_id)
            return True
        if not self._lease_over(record):
            logger.info("another run of this upload holds the lease", image_id=upload.image_id)
            return True
        leased = self._take_lease(record)
        if leased is None:
            return False
        if waits:
            self._process(upload, leased)
        else:
            self._queue_thumbnails(leased)
        return True

    def _claim(self, upload: UploadKey, stored: StoredObject) -> dict[str, Any]:
        return {**self._new_record(upload, stored, None), "status": RECEIVED, **self._lease()}

    def _lease(self) -> dict[str, str]:
        until = self._now() + timedelta(seconds=ANALYSIS_LEASE_SECONDS)
        return {"lease_until": app_clock.timestamp(until)}

    def _lease_over(self, record: dict[str, Any]) -> bool:
        return str(record.get("lease_until", "")) <= app_clock.timestamp(self._now())

    def _take_lease(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The record with this run's lease on it; None if it changed meanwhile."""
        lease = self._lease()
        if not self._records.update(record, lease):
            return None
        return {**record, **lease, "version": int(record["version"]) + 1}

    def _process(self, upload: UploadKey, claim: dict[str, Any]) -> None:
        """Keep, analyse and record the claimed upload (this run holds the lease)."""
        analysed = self._analysed_record(upload, claim)
        if not self._records.save(analysed, claim):
            if is_deleted(self._records.get(upload.image_id)):
                self._remove_objects(upload)  # what this run kept after the delete listed
                logger.info("image deleted while analysed", image_id=upload.image_id)
                return
            raise RuntimeError(f"image {upload.image_id} changed during analysis; retried")
        if analysed["status"] == PROCESSING:
            self._queue_thumbnails(analysed)
        # The bytes are kept (or were unusable): the upload, and any later one, can go.
        self._storage.remove(upload.key)
        logger.info("image analysed", image_id=upload.image_id, status=analysed["status"])

    def _analysed_record(self, upload: UploadKey, claim: dict[str, Any]) -> dict[str, Any]:
        stored = StoredObject(int(claim["size"]), str(claim["etag"]), str(claim["uploaded_at"]))
        record = {**self._new_record(upload, stored, claim), **self._lease()}
        try:
            data = self._kept_original(upload, stored)
            if data is None:
                logger.warning("claimed upload lost before it was kept", image_id=upload.image_id)
                return {**record, "status": FAILED, "reason": UPLOAD_LOST, "retryable": False}
            info = imaging.inspect(data)
            labels = self._labels(upload.original, data)
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

    def _kept_original(self, upload: UploadKey, stored: StoredObject) -> bytes | None:
        """The claimed upload's bytes, written once to the original's key; from the original
        if an earlier run kept it and the upload is gone since; None if neither is there."""
        if stored.size == 0:  # nothing to keep (S3 refuses it: the POST policy's 1 byte)
            raise UnusableImage("the file is empty")
        if stored.size > MAX_UPLOAD_BYTES:
            raise UnusableImage(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            data = self._storage.read(upload.key, stored.etag)  # only the claimed bytes
        except ObjectGone:
            try:
                return self._storage.read(upload.original)
            except ObjectGone:
                return None
        if not self._storage.write_once(upload.original, data, _STORED_TYPES[upload.extension]):
            logger.info("original kept by an earlier run", image_id=upload.image_id)
        return data

    def _new_record(
        self, upload: UploadKey, stored: StoredObject, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        now = app_clock.timestamp(self._now())
        created_at = previous["created_at"] if previous else now
        return {
            "image_id": upload.image_id,
            "owner_id": upload.owner_id,
            "key": upload.original,
            "etag": stored.etag,
            "size": stored.size,
            "uploaded_at": stored.last_modified,
            "created_at": created_at,
            "created_key": f"{created_at}#{upload.image_id}",
            "updated_at": now,
            "version": int(previous.get("version", 0)) + 1 if previous else 1,
        }

    def _labels(self, original: str, data: bytes) -> list[dict[str, Any]]:
        if len(data) <= imaging.REKOGNITION_MAX_S3_BYTES:
            found = self._detector.detect_in_object(original)
        else:
            found = self._detector.detect_in_bytes(imaging.analysis_copy(data))
        labels: dict[str, dict[str, Any]] = {}
        for label in found:
            name = str(label["name"])
            if label_key(name) and label_key(name) not in labels:
                confidence = Decimal(str(round(float(label["confidence"]), 2)))
                labels[label_key(name)] = {"name": name, "confidence": confidence}
        return list(labels.values())

    def _remove_objects(self, upload: UploadKey) -> None:
        self._storage.remove(upload.key)
        self._storage.remove(upload.original)

    def _queue_thumbnails(self, record: dict[str, Any]) -> None:
        self._tasks.send({"image_id": record["image_id"], "etag": record["etag"]})

    def _give_up(self, upload: UploadKey, created: CreatedObject, error: Exception) -> None:
        """Last receive: record the failure, unless a record is there already that is further
        along (its thumbnail task will finish it) or of another upload (not ours to touch)."""
        reason = f"analysis failed {MAX_RECEIVES} times ({type(error).__name__}); redrive the DLQ"
        try:
            previous = self._records.get(upload.image_id)
            if previous is not None and (
                previous.get("etag") != created.etag or previous["status"] not in (FAILED, RECEIVED)
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


def _waits_for_analysis(record: dict[str, Any]) -> bool:
    """Whether the record still needs its upload analysed: claimed, or failed for a passing
    reason (a notification redriven from the DLQ)."""
    failed_retryably = record["status"] == FAILED and bool(record.get("retryable"))
    return record["status"] == RECEIVED or failed_retryably
