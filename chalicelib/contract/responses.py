"""Answers no domain module declares (errors, pages, uploads, reports), for the OpenAPI
document (`contract.openapi`); they reuse the domains' own models (`<domain>/schemas.py`).

Only the document imports this module: the views build their answers as dicts, and these
models describe them. Objects whose keys are data (report rows, an export) stay open.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.images.schemas import ImageRecord
from chalicelib.orders.schemas import OrderView
from chalicelib.users.schemas import PublicUser


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FieldProblem(BaseModel):
    field: str = Field(examples=["email"])
    issue: str = Field(examples=["must be a valid email address"])


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_failed"])
    message: str
    #: The request's X-Correlation-Id; null in WAF's own 429 answers.
    request_id: str | None
    details: list[FieldProblem] | None = None


class ErrorBody(BaseModel):
    """Every error, the app's and API Gateway's own (infra/api-responses.json)."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    stage: str


class OpenApiDocument(_Open):
    """This document."""

    openapi: str


class _Page(BaseModel):
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


# --- users ---------------------------------------------------------------------------


class SignupAccepted(BaseModel):
    email: str
    status: Literal["verification_pending"]
    message: str


class UserPage(_Page):
    items: list[PublicUser]


class UserExport(_Open):
    """Everything stored about the user (profile, images, orders, telemetry)."""

    export_version: int
    user_id: str
    exported_at: str
    profile: dict[str, Any]


# --- images ------------------------------------------------------------------------------


class PresignedPost(BaseModel):
    method: Literal["POST"]
    url: str
    fields: dict[str, str] = Field(description="Form fields to send before the file.")
    content_type: str
    max_bytes: int
    expires_at: str


class ImageUpload(BaseModel):
    image_id: str
    key: str
    upload: PresignedPost


class ImageUrls(BaseModel):
    original: str
    thumbnails: dict[str, str]


class Image(ImageRecord):
    """GET /images/{image_id}: the record, with presigned links valid `urls_expire_in` s."""

    urls: ImageUrls
    urls_expire_in: int


class ImagePage(_Page):
    items: list[ImageRecord]


# --- orders ------------------------------------------------------------------------------


class OrderPage(_Page):
    items: list[OrderView]


# --- analytics ---------------------------------------------------------------------------


class DailyReportSummary(_Open):
    date: str = Field(examples=["2026-12-05"])
    state: str | None
    run: int | None
    requested_at: str | None
    requested_by: str | None
    completed_at: str | None
    bytes_scanned: int | None
    events: int | None
    failed_queries: list[str]


class DailyReportPage(BaseModel):
    reports: list[DailyReportSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for older reports.")


class DailyReport(DailyReportSummary):
    """The summary, each query's rows (daily, by_kind, transactions, alerts, top_users,
    metrics), `errors` and, while it runs, `jobs`."""

    errors: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] | None = None
