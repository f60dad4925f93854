"""Errors a client can cause, and the one JSON shape every error response has.

    {"error": {"code": "validation_failed", "message": "...", "details": [...],
               "request_id": "..."}}

Domain code raises `ApiError` subclasses. They derive from Chalice's `ChaliceUnhandledError`
so that Chalice lets them through to the HTTP middleware (`chalicelib.core.http`), which turns
them, and Chalice's own error responses (415, 405, malformed JSON), into this shape.
"""

from __future__ import annotations

from typing import Any

from chalice import ChaliceUnhandledError


class ApiError(ChaliceUnhandledError):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        #: Response headers the error carries (a quota's or a busy service's `Retry-After`).
        self.headers = headers or {}


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class ValidationFailed(ApiError):
    status_code = 400
    code = "validation_failed"


class Unauthenticated(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class UnprocessableEntity(ApiError):
    status_code = 422
    code = "unprocessable_entity"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"


#: Chalice names its own errors after their classes; clients get our stable codes instead.
CHALICE_CODES: dict[str, str] = {
    "BadRequestError": "bad_request",
    "BadRequest": "bad_request",
    "UnauthorizedError": "unauthorized",
    "ForbiddenError": "forbidden",
    "NotFoundError": "not_found",
    "MethodNotAllowedError": "method_not_allowed",
    "RequestTimeoutError": "request_timeout",
    "ConflictError": "conflict",
    "UnprocessableEntityError": "unprocessable_entity",
    "TooManyRequestsError": "too_many_requests",
    "UnsupportedMediaType": "unsupported_media_type",
    "InternalServerError": "internal_error",
}


def error_body(
    code: str, message: str, request_id: str, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}
