"""The pipeline's second step: a thumbnail task (see `pipeline` for the whole pipeline).

`ThumbnailMaker.handle(body, receive_count)` makes the 128 and 512 px thumbnails of an
image from its original (kept once by the analysis, never rewritten), stores them under
thumbnails/ and marks the record ready. A duplicated task finds the record ready, or no
longer at its ETag, and does nothing; thumbnail keys carry the ETag, so a redone task
overwrites the same objects. Thumbnails written while the image was being deleted are
removed by the task that wrote them once it finds the tombstone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.core.observability import logger
from chalicelib.images import imaging
from chalicelib.images.imaging import UnusableImage
from chalicelib.images.model import (
    CONTENT_TYPES,
    FAILED,
    MAX_RECEIVES,
    PROCESSING,
    READY,
    THUMBNAIL_SIZES,
    is_deleted,
    thumbnail_key,
)
from chalicelib.images.pipeline import WRITE_ATTEMPTS, ImageRecords, ImageStorage, ObjectGone


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
            data = self._storage.read(record["key"])  # the original: written once
        except ObjectGone:
            logger.info("original gone (the image is being deleted)", image_id=image_id)
            return
        try:
            thumbnails = imaging.make_thumbnails(data, THUMBNAIL_SIZES)
        except UnusableImage as unusable:
            self._finish(image_id, etag, self._failed(unusable.reason, False))
            return
        extension = CONTENT_TYPES.get(record.get("content_type", ""), "png")
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
