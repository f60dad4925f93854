"""An owner's images as a whole, for the user-deletion and data-export flows.

- `erase(user_id)` (`ImageOwnerData`): every image of the user removed as
  `DELETE /images/{id}` removes one (`removal`), plus any object under the user's uploads/,
  originals/ and thumbnails/ prefixes (an upload never analysed, a leftover). First a
  marker is stored that the analysis checks (keyed by a digest of the id), so an upload
  posted after the erasure with a link issued before it (valid 5 minutes) is removed
  rather than analysed.
  What is left afterwards names nobody: forgotten tombstones (image id, status, TTL) and
  the marker. Idempotent: run it again after a failure (every step raises rather than
  skip; a tombstone whose removal was interrupted is still in the owner's index, and is
  finished); a second run removes nothing and returns 0.
- `export(user_id)` (`ImageOwnerExport`, which only reads, and `ImageOwnerData`): every
  image record of the user as the API shows it, with presigned links, JSON-ready.

Both page through everything: the owner's index page by page (a page stops at 1 MB; its
cursor continues), the bucket's listing 1,000 keys at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.core import clock as app_clock
from chalicelib.core.ids import is_uuid
from chalicelib.core.observability import logger
from chalicelib.images.model import (
    TOMBSTONE_DAYS,
    is_shown,
    originals_prefix,
    owner_digest,
    parse_upload_key,
    public_view,
    thumbnails_prefix,
    uploads_prefix,
)
from chalicelib.images.removal import ImageRemoval

#: Records read from the owner's index per Query.
PAGE = 100
#: How long the links of an export work (a Lambda role's own session may end sooner).
EXPORT_URL_SECONDS = 3600


class OwnedRecords(Protocol):
    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class OwnerRecords(OwnedRecords, Protocol):
    def mark_owner_erased(self, owner_id: str, erased_at: str, expires_at: int) -> None: ...


class LinkSigner(Protocol):
    def presign_get(self, key: str, expires_in: int) -> str: ...


class OwnerObjects(LinkSigner, Protocol):
    def remove_all(self, keys: Iterable[str]) -> None: ...
    def keys_under(self, prefix: str) -> Iterator[str]: ...


class ImageOwnerExport:
    """`export(user_id)` only: it reads the owner's index and signs links, nothing else."""

    def __init__(self, signer: LinkSigner, records: OwnedRecords) -> None:
        self._signer = signer
        self._records = records

    def export(self, user_id: str) -> list[dict[str, Any]]:
        """Every image record of `user_id`, newest first, as `GET /images/{id}` shows it:
        public fields (size, labels, created_at...), `label_names`, and links."""
        _check(user_id)
        exported = []
        for record in _owned(self._records, user_id):
            if not is_shown(record):  # deleted, or only claimed: not analysed yet
                continue
            view = public_view(record)
            view["label_names"] = [label["name"] for label in record.get("labels") or []]
            view["urls"] = {
                "original": self._signer.presign_get(record["key"], EXPORT_URL_SECONDS),
                "thumbnails": {
                    size: self._signer.presign_get(thumbnail["key"], EXPORT_URL_SECONDS)
                    for size, thumbnail in (record.get("thumbnails") or {}).items()
                },
            }
            view["urls_expire_in"] = EXPORT_URL_SECONDS
            exported.append(view)
        return exported


class ImageOwnerData:
    """`erase(user_id)` and `export(user_id)`, for the user-deletion flow."""

    def __init__(
        self,
        storage: OwnerObjects,
        records: OwnerRecords,
        removal: ImageRemoval,
        now: Callable[[], datetime] = app_clock.now,
    ) -> None:
        self._storage = storage
        self._records = records
        self._removal = removal
        self._now = now
        self._export = ImageOwnerExport(storage, records)

    def export(self, user_id: str) -> list[dict[str, Any]]:
        return self._export.export(user_id)

    def erase(self, user_id: str) -> int:
        """Remove every image of `user_id`; how many this call removed."""
        _check(user_id)
        moment = self._now()
        expires = int((moment + timedelta(days=TOMBSTONE_DAYS)).timestamp())
        self._records.mark_owner_erased(user_id, app_clock.timestamp(moment), expires)
        removed = 0
        # Tombstones too: one still in the index is a removal an earlier run left unfinished.
        for record in _owned(self._records, user_id):
            removed += self._removal.remove(record["image_id"], user_id)
        # Uploads without a record (never analysed, or not yet in the owner's index), then
        # whatever is left under the prefixes. Originals and thumbnails last: each is of an
        # image whose record is a tombstone by now, so one written after this listing is
        # removed by the step that wrote it (it finds the tombstone).
        strays = []
        for key in self._storage.keys_under(uploads_prefix(user_id)):
            upload = parse_upload_key(key)
            if upload is not None and upload.owner_id == user_id:
                removed += self._removal.remove(upload.image_id, user_id)
            else:
                strays.append(key)
        self._storage.remove_all(strays)
        for prefix in (originals_prefix(user_id), thumbnails_prefix(user_id)):
            # One batch delete per listing page (both hold 1,000 keys).
            self._storage.remove_all(self._storage.keys_under(prefix))
        logger.info("owner's images erased", owner=owner_digest(user_id), removed=removed)
        return removed


def _owned(records: OwnedRecords, user_id: str) -> Iterator[dict[str, Any]]:
    """Every item of the owner's index (records, and tombstones still naming the owner)."""
    after: str | None = None
    while True:
        page, after = records.owned_page(user_id, PAGE, after)
        yield from page
        if after is None:
            return


def _check(user_id: str) -> None:
    """User ids are UUIDs; anything else would name a prefix of other users' objects."""
    if not is_uuid(user_id):
        raise ValueError(f"not a user id: {user_id[:64]!r}")
