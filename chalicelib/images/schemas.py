"""The images API's upload request (and the image record it shows) as declared models.

`model.validate_upload_request` checks bodies with `UploadRequest`, and the OpenAPI
document is generated from these classes, so both say the same. Imported only on first
validation (Pydantic is not loaded by `import app`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from chalicelib.core.ids import UUID_PATTERN
from chalicelib.core.validation import Issue, absent, whole_number
from chalicelib.images import model

_CONTENT_TYPE_ISSUE = f"must be one of {', '.join(model.CONTENT_TYPES)}"
_SIZE_ISSUE = f"must be a whole number of bytes, 1 to {model.MAX_UPLOAD_BYTES}"


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


ContentType = Annotated[
    Literal["image/jpeg", "image/png"],
    BeforeValidator(_lower),
    Issue(_CONTENT_TYPE_ISSUE, missing=_CONTENT_TYPE_ISSUE),
]
Size = Annotated[
    int,
    Field(ge=1, le=model.MAX_UPLOAD_BYTES),
    BeforeValidator(whole_number),
    Issue(_SIZE_ISSUE, missing=_SIZE_ISSUE),
]


class UploadRequest(BaseModel):
    """POST /images: what will be uploaded. The answer is a presigned POST that takes one
    file of this type and at most this many bytes; the size counts against the daily byte
    quota when the link is issued."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        defer_build=True,
        json_schema_extra={"examples": [{"content_type": "image/jpeg", "size": 2_483_200}]},
    )

    content_type: ContentType = Field(
        description="The file's type; matched whatever its case (`IMAGE/JPEG` is image/jpeg).",
        examples=["image/jpeg"],
    )
    size: Size = Field(description="The file's size in bytes (at most 20 MiB).")


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str = Field(examples=["Dog"])
    confidence: float = Field(ge=model.MIN_CONFIDENCE, le=100, examples=[97.25])


class Thumbnail(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    key: str
    width: int
    height: int


class ImageRecord(BaseModel):
    """An image as the API lists it (`model.public_view`): absent fields are not known yet
    (or, for `reason`, the image did not fail). GET /images/{id} adds presigned links."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    image_id: str = Field(pattern=f"^{UUID_PATTERN}$")
    owner_id: str = Field(pattern=f"^{UUID_PATTERN}$")
    key: str = absent(description="Where the original is kept.")
    status: Literal["processing", "ready", "failed"] = Field(
        description="Records still `received` or `deleted` are never shown."
    )
    reason: str = absent(description="Why it failed.", examples=["the file is empty"])
    content_type: Literal["image/jpeg", "image/png"] = absent()
    size: int = absent(ge=0, le=model.MAX_UPLOAD_BYTES)
    width: int = absent(ge=1)
    height: int = absent(ge=1)
    labels: list[Label] = absent(max_length=model.MAX_LABELS)
    thumbnails: dict[str, Thumbnail] = absent(description="By long side in pixels ('128', '512').")
    uploaded_at: str = absent(examples=["2026-11-26T05:50:20Z"])
    created_at: str = absent(examples=["2026-11-26T05:50:19Z"])
    updated_at: str = absent(examples=["2026-11-26T05:50:21Z"])
