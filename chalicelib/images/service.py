"""The images API: presigned uploads, an image with its links, and the caller's images by label.

Rules: any signed-in user may upload; an image is visible to its owner and to admins;
lists show the caller's own images. Links are presigned and short-lived, so the bucket
stays private.
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
from chalicelib.images.model import (
    CONTENT_TYPES,
    MAX_UPLOAD_BYTES,
    is_image_id,
    public_view,
    upload_key,
    validate_label,
    validate_upload_request,
)

#: How long a presigned upload may be started; the upload itself may take longer.
UPLOAD_URL_SECONDS = 600
#: How long the links in `GET /images/{id}` work.
DOWNLOAD_URL_SECONDS = 900


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


class ImagesService:
    def __init__(
        self,
        signer: UrlSigner,
        catalog: ImageCatalog,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._signer = signer
        self._catalog = catalog
        self._new_id = new_id
        self._now = now

    def create_upload(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """A presigned POST for a new image: S3 itself refuses other content types, sizes
        over 20 MB, other keys, and uploads started after the expiry."""
        content_type, _ = validate_upload_request(body)
        if not is_image_id(principal.user_id):
            raise Forbidden("This identity cannot upload images.")
        image_id = self._new_id()
        key = upload_key(principal.user_id, image_id, CONTENT_TYPES[content_type])
        post = self._signer.presign_post(key, content_type, MAX_UPLOAD_BYTES, UPLOAD_URL_SECONDS)
        expires_at = self._now() + timedelta(seconds=UPLOAD_URL_SECONDS)
        return {
            "image_id": image_id,
            "key": key,
            "upload": {
                "method": "POST",
                "url": post["url"],
                "fields": post["fields"],
                "content_type": content_type,
                "max_bytes": MAX_UPLOAD_BYTES,
                "expires_at": clock.timestamp(expires_at, timespec="seconds"),
            },
        }

    def get(self, principal: Principal, image_id: str) -> dict[str, Any]:
        """The record with links to the original and the thumbnails (owner or admin)."""
        record = self._catalog.get(image_id) if is_image_id(image_id) else None
        if record is None:
            raise NotFound("No image has this id (or its upload has not been analysed yet).")
        if record["owner_id"] != principal.user_id and not principal.is_admin:
            raise Forbidden("Only the image's owner or an admin may see it.")
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
            "items": [public_view(item) for item in items],
            "next_cursor": encode_cursor(last) if last else None,
        }
