"""The words of the API's document that are not in any route or model: its error answers,
who may call, sections, headers and shared parameters (`contract.openapi` assembles them)."""

from __future__ import annotations

from typing import Any

#: The error answers, by status: their component's name and the codes they carry
#: (`core.errors`, API Gateway's responses in infra/api-responses.json).
ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "`bad_request` (malformed JSON, bad `limit` or `cursor`), "
        "`validation_failed` (with `details`, one per field)",
    ),
    401: (
        "Unauthorized",
        "`unauthorized`: no token, or one malformed, expired, forged or for another pool",
    ),
    403: (
        "Forbidden",
        "`forbidden`: the caller may not do this (someone else's resource, "
        "not an admin, a machine identity on a user's route)",
    ),
    404: ("NotFound", "`not_found`"),
    409: ("Conflict", "`conflict`: taken, changed meanwhile, or no longer possible"),
    413: (
        "PayloadTooLarge",
        "`payload_too_large`: body over 64 KiB (`POST /events`: 4 MiB), "
        "or more than a quota's whole window",
    ),
    415: (
        "UnsupportedMediaType",
        "`unsupported_media_type`: send `Content-Type: application/json`",
    ),
    422: (
        "UnprocessableEntity",
        "`unprocessable_entity`: an `Idempotency-Key` used before for another request",
    ),
    429: (
        "TooManyRequests",
        "`too_many_requests`: a quota is used up; retry after `Retry-After` seconds",
    ),
    503: (
        "ServiceUnavailable",
        "`service_unavailable`: an AWS service was busy; nothing was "
        "kept, retry after `Retry-After` seconds",
    ),
}
AUDIENCES = {
    "public": "Anyone: no token.",
    "user": "Any signed-in user.",
    "owner": "The resource's owner, or members of `admins`.",
    "admin": "Members of the `admins` group only.",
    "machine": "Any signed-in user, or a trusted producer's machine token "
    "(client credentials, `telemetry/metrics.write`).",
}
#: The section of the document each first path segment belongs to.
TAGS = {
    "register": "users",
    "events": "telemetry",
    "inventory": "orders",
    "health": "service",
    "openapi.json": "service",
}
HEADERS: dict[str, dict[str, Any]] = {
    "X-Correlation-Id": {
        "description": "The request's correlation id (the caller's if well formed, else "
        "the gateway's request id); equals an error's `request_id`.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Location": {"description": "The created resource's path.", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when the same `Idempotency-Key` answered an earlier order.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Content-Disposition": {
        "description": "`attachment`, with a file name.",
        "schema": {"type": "string"},
    },
}
#: Headers a request may send, by name (others in an operation's `headers` are answers).
REQUEST_HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "description": "The same key again answers with the first result and starts nothing.",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    },
}


def path_schema(name: str) -> dict[str, Any]:
    """A path parameter's schema, its pattern taken from the module that checks it."""
    from chalicelib.core.ids import UUID_PATTERN
    from chalicelib.orders.model import SKU_PATTERN

    patterns = {
        "user_id": f"^{UUID_PATTERN}$",
        "image_id": f"^{UUID_PATTERN}$",
        "order_id": f"^{UUID_PATTERN}$",
        "sku": SKU_PATTERN,
        "day": r"^\d{4}-\d{2}-\d{2}$",
    }
    pattern = patterns.get(name)
    formats = {"day": "date"}  # a real day (2026-02-30 is refused), not only its shape
    return {
        "type": "string",
        **({"pattern": pattern} if pattern else {}),
        **({"format": formats[name]} if name in formats else {}),
    }


#: A character that is not a C0 or C1 control (the JSON Schema pattern dialect's subset).
_NOT_CONTROL = "[^\\x00-\\x1f\\x7f-\\x9f]"


def common_parameters() -> dict[str, Any]:
    return {
        "cursor": {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "`next_cursor` of the previous page.",
            "schema": {"type": "string", "maxLength": 200},
        },
        "q": {
            "name": "q",
            "in": "query",
            "required": True,
            "description": "Words to search for (up to 5; exact, prefix or one typo).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "label": {
            "name": "label",
            "in": "query",
            "required": False,
            "description": "Only images with this label (e.g. `Dog`), matched whatever its "
            "case and surrounding spaces: 1 to 100 printable characters once so normalised.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                # some character other than a space, and no control character
                "pattern": f"^{_NOT_CONTROL}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{_NOT_CONTROL}*$",
            },
        },
        "X-Correlation-Id": {
            "name": "X-Correlation-Id",
            "in": "header",
            "required": False,
            "description": "Your id for this request, carried through logs and events.",
            "schema": HEADERS["X-Correlation-Id"]["schema"],
        },
    }
