"""Removing images: `DELETE /images/{id}` and erasing an owner's images use the same steps.

1. The record becomes a tombstone (`model.tombstone`) in one conditional transaction that
   also deletes its label entries. An upload never analysed gets a tombstone too (written
   only if no record appeared meanwhile), so the analysis running on it cannot create one.
   This tombstone still names the owner and stays in the owner's index: an interrupted
   removal (a DELETE retried, an erasure run again) finds it and finishes.
2. The objects go: the upload and the kept original (each under either extension) and
   everything under the image's thumbnails prefix (not only the thumbnails the record
   lists).
3. The tombstone is `forgotten` (a conditional write): it keeps the image id, the status and
   the TTL, nothing that names the owner, and leaves the owner's index.

The tombstone comes first because the pipeline checks it (by image id): a write of the
pipeline racing the delete is conditional on the version it read, fails, and its retry
finds the tombstone; an upload, an original or a thumbnail written after step 2 is removed
by the step that wrote it (see `pipeline`). Steps 2 and 3 are safe to repeat, so a delete
that failed half-way is finished by the next one (`remove` again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.core import clock as app_clock
from chalicelib.core.errors import Conflict
from chalicelib.core.observability import logger
from chalicelib.images.model import (
    CONTENT_TYPES,
    TOMBSTONE_DAYS,
    forgotten,
    is_deleted,
    names_owner,
    original_key,
    thumbnails_prefix,
    tombstone,
    upload_key,
)

#: Conditional writes tried before giving up on an image that keeps changing.
WRITE_ATTEMPTS = 3


class ObjectStore(Protocol):
    def describe(self, key: str) -> Any: ...
    def remove_all(self, keys: Iterable[str]) -> None: ...
    def keys_under(self, prefix: str) -> Iterator[str]: ...


class RecordStore(Protocol):
    def get(self, image_id: str) -> dict[str, Any] | None: ...
    def save(self, record: dict[str, Any], previous: dict[str, Any] | None) -> bool: ...


class ImageRemoval:
    def __init__(
        self,
        storage: ObjectStore,
        records: RecordStore,
        now: Callable[[], datetime] = app_clock.now,
    ) -> None:
        self._storage = storage
        self._records = records
        self._now = now

    def unrecorded_upload(self, owner_id: str, image_id: str) -> str | None:
        """The key of `owner_id`'s upload `image_id` if it is in the bucket (not analysed
        yet, its record not yet written, or posted again after a delete), else None."""
        for extension in CONTENT_TYPES.values():
            key = upload_key(owner_id, image_id, extension)
            if self._storage.describe(key) is not None:
                return key
        return None

    def remove(self, image_id: str, owner_id: str) -> bool:
        """Tombstone the image (whatever its record is now: none, processing, ready, failed),
        remove its objects, then forget its owner. True if this call deleted it, False if it
        was deleted already (what is left of it is removed all the same). `owner_id` is the
        record's owner (checked), or the owner of an upload that has no record."""
        deleted_now = self._tombstone(image_id, owner_id)
        self._purge(image_id, owner_id)
        self._forget_owner(image_id, owner_id)
        return deleted_now

    def _purge(self, image_id: str, owner_id: str) -> None:
        """Remove the objects of a deleted image (repeatable)."""
        fixed = [
            key(owner_id, image_id, extension)
            for extension in CONTENT_TYPES.values()
            for key in (upload_key, original_key)
        ]
        thumbnails = self._storage.keys_under(thumbnails_prefix(owner_id, image_id))
        self._storage.remove_all([*fixed, *thumbnails])

    def _tombstone(self, image_id: str, owner_id: str) -> bool:
        """True if this call wrote the tombstone, False if the image was already deleted."""
        for _ in range(WRITE_ATTEMPTS):
            current = self._records.get(image_id)
            if is_deleted(current):
                return False
            if current is not None and current.get("owner_id") != owner_id:
                raise ValueError(f"image {image_id} is not {owner_id}'s")
            moment = self._now()
            stone = tombstone(
                image_id,
                owner_id,
                current,
                app_clock.timestamp(moment),
                int((moment + timedelta(days=TOMBSTONE_DAYS)).timestamp()),
            )
            if self._records.save(stone, current):
                logger.info("image deleted", image_id=image_id)
                return True
        raise Conflict("The image kept changing while being deleted; retry.")

    def _forget_owner(self, image_id: str, owner_id: str) -> None:
        """Drop the owner from the tombstone once the objects are gone (repeatable; a
        tombstone naming someone else is not this removal's)."""
        for _ in range(WRITE_ATTEMPTS):
            current = self._records.get(image_id)
            if current is None or not is_deleted(current) or not names_owner(current):
                return
            if current.get("owner_id") != owner_id:
                return
            if self._records.save(forgotten(current), current):
                return
        raise Conflict("The image kept changing while being deleted; retry.")
