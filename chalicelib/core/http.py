"""The HTTP boundary, wired once as Chalice middleware.

Every request gets a correlation id (the caller's `X-Correlation-Id` if well formed, else the
API Gateway request id; `core.correlation` carries it on), bound to every log line it writes,
one access line (`access_logger`: at every log level) and EMF metrics. A view's unhandled
exception is logged once, with the id, and answered with a JSON 500. Bodies over 64 KiB (4 MiB
for a telemetry batch) are refused before any handler runs. Every error leaves in one JSON
shape (`core.errors`), Chalice's own errors included. CORS headers are added for the stage's
allowed origins.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from chalice import Chalice, Response
from chalice.app import ChaliceUnhandledError, ChaliceViewError, Request

from chalicelib.core import correlation, settings
from chalicelib.core.errors import (
    CHALICE_CODES,
    ApiError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ServiceUnavailable,
    error_body,
)
from chalicelib.core.observability import (
    access_logger,
    emit_metrics,
    logger,
    start_tracing_if_enabled,
)
from chalicelib.core.resources import needs

MAX_BODY_BYTES = 64 * 1024
#: Routes that take bigger bodies: a batch of up to 500 telemetry events, each with up to
#: 4 KiB of details (API Gateway takes 10 MB, Lambda 6 MB).
MAX_BODY_BYTES_BY_ROUTE = {"/events": 4 * 1024 * 1024}
CORRELATION_HEADER = "X-Correlation-Id"
#: What Chalice answers a view's unhandled exception with (reshaped by `_reshape_error`).
_INTERNAL_ERROR = {"Code": "InternalServerError", "Message": "An internal server error occurred."}
PREFLIGHT_MAX_AGE_SECONDS = 600
ALLOWED_REQUEST_HEADERS = "Authorization,Content-Type,Idempotency-Key,X-Correlation-Id"


@needs(settings.CORS_ALLOW_ORIGINS.used())
def install(app: Chalice) -> None:
    """Register the HTTP middleware on `app` (it answers CORS for the stage's origins)."""

    def http_boundary(request: Request, get_response: Any) -> Response:
        started = time.perf_counter()
        # The request's own Lambda context: `app.lambda_context` is one attribute per app,
        # which concurrent requests of the local threaded server overwrite.
        context = request.lambda_context
        request_id = correlation.start_invocation(context, [correlation_id(request)])
        try:
            start_tracing_if_enabled()
            response = _handle(request, get_response)
            if response.status_code >= 400:
                _reshape_error(response, request_id)
            response.headers[CORRELATION_HEADER] = request_id
            _add_cors_headers(request, response)
            _record(request, response, time.perf_counter() - started)
            return response
        finally:
            correlation.end_invocation()

    app.register_middleware(http_boundary, "http")


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    raw = request.raw_body or b""
    if not raw.strip():
        raise BadRequest("Request body is empty; send a JSON object.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Request body nests too deeply.") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def health() -> dict[str, str]:
    return {"status": "ok", "stage": settings.stage()}


def preflight(request: Request, methods: str) -> Response:
    """Answer a CORS preflight: 204 with the allowed methods for an allowed origin, else 403."""
    origin = request.headers.get("origin")
    if origin is None or origin not in settings.cors_allow_origins():
        raise Forbidden(f"Origin {origin!r} is not allowed.")
    return Response(
        body="",
        status_code=204,
        headers={
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ALLOWED_REQUEST_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
        },
    )


def complete_routes(app: Chalice, not_for_browsers: set[str]) -> None:
    """Once every route is declared: each view answers an AWS call that was throttled or
    timed out with a 503 (`busy_aws_as_503`), any other exception of a view reaches the
    middleware (logged there, with the correlation id, as a 500), and each route gets its
    preflight."""
    for entries in app.routes.values():
        for entry in entries.values():
            entry.view_function = busy_aws_as_503(entry.view_function)
    add_preflights(app, not_for_browsers)


def busy_aws_as_503(view: Any) -> Any:
    """`view`, with an AWS call that was throttled or timed out turned into a 503 with
    `Retry-After`: the API makes one attempt per call (`core.aws`) to answer in time, so the
    client's retry is the one that follows, and it must hear so, not a 500. Any other
    exception goes to the middleware as ChaliceUnhandledError (Chalice would otherwise answer
    it with its own 500 and log it outside the request's keys)."""
    if getattr(view, "busy_aws_as_503", False):
        return view

    @functools.wraps(view)
    def answering_503(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except (ApiError, ChaliceViewError):  # answered as they say (4xx)
            raise
        except Exception as exc:
            from chalicelib.core.aws import retryable

            if not retryable(exc):
                raise ChaliceUnhandledError(f"{type(exc).__name__} in {view.__name__}") from exc
            logger.warning("AWS busy or slow for this request", error=repr(exc)[:300])
            raise ServiceUnavailable(
                "A service this request needs is busy; retry it.", headers={"Retry-After": "1"}
            ) from None

    answering_503.busy_aws_as_503 = True  # type: ignore[attr-defined]
    return answering_503


def add_preflights(app: Chalice, not_for_browsers: set[str]) -> None:
    """An OPTIONS route for every route of `app` declared so far (except those browsers
    never call cross-origin), answering a preflight with exactly that route's methods: the
    list is derived from the routes, so it cannot drift from them."""
    for path, entries in list(app.routes.items()):
        methods = sorted(m for m in entries if m != "OPTIONS")
        if path in not_for_browsers or not methods or "OPTIONS" in entries:
            continue
        name = "preflight_" + "_".join(p.strip("{}") for p in path.strip("/").split("/"))
        app.route(path, methods=["OPTIONS"], name=name)(_preflight_view(app, methods))


def _preflight_view(app: Chalice, methods: list[str]) -> Any:
    allowed = ",".join([*methods, "OPTIONS"])

    def answer_preflight(**_path_params: str) -> Response:
        return preflight(app.current_request, allowed)

    return answer_preflight


def _handle(request: Request, get_response: Any) -> Response:
    route = (request.context or {}).get("resourcePath", "")
    limit = MAX_BODY_BYTES_BY_ROUTE.get(route, MAX_BODY_BYTES)
    if len(request.raw_body or b"") > limit:
        return _api_error_response(PayloadTooLarge(f"Request body is larger than {limit} bytes."))
    try:
        return get_response(request)
    except ApiError as exc:
        return _api_error_response(exc)
    except ChaliceUnhandledError as exc:
        cause = exc.__cause__ or exc
        logger.error(
            "unhandled error; answered 500",
            route=route,
            error_type=type(cause).__name__,
            exc_info=(type(cause), cause, cause.__traceback__),
        )
        return Response(body=dict(_INTERNAL_ERROR), status_code=500)


def _api_error_response(exc: ApiError) -> Response:
    body: dict[str, Any] = {"Code": exc.code, "Message": exc.message}
    if exc.details:
        body["Details"] = exc.details
    return Response(body=body, status_code=exc.status_code, headers=dict(exc.headers))


def _reshape_error(response: Response, correlation_id: str) -> None:
    body = response.body
    if isinstance(body, dict) and "Code" in body and "Message" in body:
        code = CHALICE_CODES.get(body["Code"], body["Code"])
        response.body = error_body(code, body["Message"], correlation_id, body.get("Details"))
    elif not (isinstance(body, dict) and "error" in body):
        # An error response built elsewhere (e.g. Chalice's debug text): keep it JSON.
        response.body = error_body("error", str(body)[:500], correlation_id)
    response.headers["Content-Type"] = "application/json"


def correlation_id(request: Request) -> str:
    """The request's correlation id: the caller's `X-Correlation-Id` if well formed, else
    the API Gateway request id. Handlers pass it on to what they start (a workflow)."""
    supplied = request.headers.get(CORRELATION_HEADER.lower())
    if correlation.well_formed(supplied):
        return str(supplied)
    request_id = (request.context or {}).get("requestId")
    return str(request_id) if request_id else str(uuid.uuid4())


def client_ip(request: Request) -> str:
    """The caller's address as API Gateway saw it (never a header the client can set)."""
    identity = (request.context or {}).get("identity") or {}
    return str(identity.get("sourceIp") or "unknown")


def _add_cors_headers(request: Request, response: Response) -> None:
    origin = request.headers.get("origin")
    if origin and origin in settings.cors_allow_origins():
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORRELATION_HEADER
    response.headers["Vary"] = "Origin"


def _record(request: Request, response: Response, seconds: float) -> None:
    """The access line (at every log level: `access_logger`) and the request's metrics."""
    route = (request.context or {}).get("resourcePath", "unknown")
    status = response.status_code
    caller = ((request.context or {}).get("authorizer") or {}).get("user_id")
    access_logger.info(
        "request",
        method=request.method,
        route=route,
        path=request.to_original_event().get("path"),
        status=status,
        duration_ms=round(seconds * 1000, 2),
        caller_id=caller,
    )
    emit_metrics(
        [
            ("Requests", MetricUnit.Count, 1),
            ("ClientErrors", MetricUnit.Count, 1 if 400 <= status < 500 else 0),
            ("ServerErrors", MetricUnit.Count, 1 if status >= 500 else 0),
            ("Latency", MetricUnit.Milliseconds, seconds * 1000),
        ],
        route=f"{request.method} {route}",
    )
