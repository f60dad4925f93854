"""The images API: presigned uploads, an image with its links, the caller's images by label,
and deleting an image.

Rules: any signed-in user may upload, within daily quotas (uploads and declared bytes);
an image is visible to, and may be deleted by, its owner and admins; to anyone else it is
404, exactly as an unknown id, so ids cannot be probed. Lists show the caller's own images.
Links are presigned and short-lived, so the bucket stays private.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import Forbidden, NotFound
from chalicelib.core.pagination import decode_cursor, encode_cursor
from chalicelib.core.quotas import Quota, Quotas
from chalicelib.images.model import (
    CONTENT_TYPES,
    is_image_id,
    is_shown,
    public_view,
    upload_key,
    validate_label,
    validate_upload_request,
)

#: How long a presigned upload may be started; the upload itself may take longer. Short:
#: the link can be posted again until then (each later post is removed unanalysed, see
#: `pipeline`, but still costs a notification and a short run of the analysis).
UPLOAD_URL_SECONDS = 300
#: How long the links in `GET /images/{id}` work.
DOWNLOAD_URL_SECONDS = 900
DAY_SECONDS = 86400
#: What an unknown image, and an image of someone else, both answer.
NO_SUCH_IMAGE = "No image has this id (or its upload has not been analysed yet)."


class UrlSigner(Protocol):
    def presign_post(
        self, key: str, content_type: str, max_bytes: int, expires_in: int
    ) -> dict[str, Any]: ...
    def presign_get(self, key: str, expires_in: int) -> str: ...


class ImageCatalog(Protocol):
    def get(self, image_id: str) -> dict[str, Any] | None: ...
    def owned_page(
        self, owner_id: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def labelled_page(
        self, owner_id: str, label: str, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...


class Removal(Protocol):
    def unrecorded_upload(self, owner_id: str, image_id: str) -> str | None: ...
    def remove(self, image_id: str, owner_id: str) -> bool: ...


def daily_upload_quotas(uploads: int, upload_bytes: int) -> tuple[Quota, Quota]:
    """The per-user daily quotas of `POST /images`: how many, and how many declared bytes."""
    return Quota("uploads", uploads, DAY_SECONDS), Quota("upload-bytes", upload_bytes, DAY_SECONDS)


class ImagesService:
    def __init__(
        self,
        signer: UrlSigner,
        catalog: ImageCatalog,
        removal: Removal,
        quotas: Quotas,
        daily: tuple[Quota, Quota],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._signer = signer
        self._catalog = catalog
        self._removal = removal
        self._quotas = quotas
        self._uploads, self._upload_bytes = daily
        self._new_id = new_id
        self._now = now

    def create_upload(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """A presigned POST for a new image of at most the declared `size`: S3 itself refuses
        other content types, larger files, other keys, and uploads started after the expiry.
        The upload and its declared bytes count against the caller's daily quotas, both or
        neither (429 with Retry-After past either)."""
        content_type, size = validate_upload_request(body)
        if not is_image_id(principal.user_id):
            raise Forbidden("This identity cannot upload images.")
        self._quotas.take(principal.user_id, [(self._uploads, 1), (self._upload_bytes, size)])
        image_id = self._new_id()
        key = upload_key(principal.user_id, image_id, CONTENT_TYPES[content_type])
        post = self._signer.presign_post(key, content_type, size, UPLOAD_URL_SECONDS)
        expires_at = self._now() + timedelta(seconds=UPLOAD_URL_SECONDS)
        return {
            "image_id": image_id,
            "key": key,
            "upload": {
                "method": "POST",
                "url": post["url"],
                "fields": post["fields"],
                "content_type": content_type,
                "max_bytes": size,
                "expires_at": clock.timestamp(expires_at, timespec="seconds"),
            },
        }

    def get(self, principal: Principal, image_id: str) -> dict[str, Any]:
        """The record with links to the original and the thumbnails (owner or admin)."""
        record = self._visible(principal, image_id)
        if record is None or not is_shown(record):  # unknown, deleted, or not analysed yet
            raise NotFound(NO_SUCH_IMAGE)
        view = public_view(record)
        view["urls"] = {
            "original": self._signer.presign_get(record["key"], DOWNLOAD_URL_SECONDS),
            "thumbnails": {
                size: self._signer.presign_get(thumbnail["key"], DOWNLOAD_URL_SECONDS)
                for size, thumbnail in (record.get("thumbnails") or {}).items()
            },
        }
        view["urls_expire_in"] = DOWNLOAD_URL_SECONDS
        return view

    def list(
        self, principal: Principal, label: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """The caller's images, newest first; with `label`, only those Rekognition gave it."""
        wanted = validate_label(label)
        after = decode_cursor(cursor) if cursor else None
        if wanted is None:
            items, last = self._catalog.owned_page(principal.user_id, limit, after)
        else:
            items, last = self._catalog.labelled_page(principal.user_id, wanted, limit, after)
        return {
            "items": [public_view(item) for item in items if is_shown(item)],
            "next_cursor": encode_cursor(last) if last else None,
        }

    def delete(self, principal: Principal, image_id: str) -> None:
        """Delete the image: its record and label entries (a tombstone takes their place),
        the upload and its thumbnails (owner or admin; 404 for anyone else, as for an
        unknown id). The owner may also delete an upload not analysed yet. Deleting again
        is 404, as GET then says; it still finishes removing objects a failed first
        attempt may have left, so retrying a failed DELETE is safe. (A finished delete's
        tombstone names no owner: it is nobody's to see; an upload the caller posted again
        under the id is still the caller's to remove.)"""
        record = self._visible(principal, image_id)
        if record is None:
            key = (
                self._removal.unrecorded_upload(principal.user_id, image_id)
                if is_image_id(image_id) and is_image_id(principal.user_id)
                else None
            )
            if key is None or not self._removal.remove(image_id, principal.user_id):
                raise NotFound(NO_SUCH_IMAGE)
            return
        if not self._removal.remove(image_id, str(record["owner_id"])):
            raise NotFound(NO_SUCH_IMAGE)  # deleted before (now finished), or meanwhile

    def _visible(self, principal: Principal, image_id: str) -> dict[str, Any] | None:
        """The record (maybe a tombstone still naming its owner) if the caller may see it:
        its owner or an admin. A forgotten tombstone names no owner: nobody sees it."""
        record = self._catalog.get(image_id) if is_image_id(image_id) else None
        owner = record.get("owner_id") if record is not None else None
        if owner is None or (owner != principal.user_id and not principal.is_admin):
            return None
        return record
