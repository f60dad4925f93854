"""Where `chalice local` differs from API Gateway in a way the app depends on, make it match.

- API Gateway answers 401 when a Lambda authorizer fails with the message "Unauthorized" (the
  documented way for an authorizer to reject a token); `chalice local` lets the exception
  escape instead.
- API Gateway's own errors (no token, access denied, no such route) are shaped by the
  gateway responses in infra/api-responses.json once packaged; `chalice local` answers with
  API Gateway's defaults. Here they get the same shape and status as deployed.
- Lambda runs one request at a time per execution environment; `chalice local` serves
  requests on threads of one process, and Chalice keeps the request being handled in one
  attribute of the app (`app.current_request`, `app.lambda_context`): a request arriving
  meanwhile replaces it, so a view could read another request's body or caller. Here each
  thread has its own.
- API Gateway gives every request an id (`requestContext.requestId`), which the app takes
  for the request's correlation id when the caller sends none; `chalice local` gives none,
  so each asking made up another (the answer's id and the workflow's differed). Here each
  request gets one.

Used by the local stack and by the tests' `chalice.test.Client`.
"""

from __future__ import annotations

import json
import threading
from functools import cache
from typing import Any

from infra.paths import PROJECT_DIR

API_RESPONSES = PROJECT_DIR / "infra" / "api-responses.json"
UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'


def emulate_api_gateway() -> None:
    """Patch chalice's local gateway (idempotent)."""
    from chalice import local

    if getattr(local.LocalGateway.handle_request, "emulates_api_gateway", False):
        return
    _reject_like_api_gateway(local)
    _shape_like_api_gateway(local)
    _one_request_per_thread(local)
    _request_ids(local)


class PerThread:
    """An attribute whose value belongs to the thread that set it (a data descriptor, so it
    takes precedence over the instance's own attribute of that name)."""

    def __init__(self) -> None:
        self._values = threading.local()

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else getattr(self._values, "value", None)

    def __set__(self, instance: Any, value: Any) -> None:
        self._values.value = value


def requests_per_thread(app: Any) -> None:
    """Give `app` a `current_request` and a `lambda_context` of each thread's own
    (idempotent)."""
    if getattr(type(app), "requests_per_thread", False):
        return
    attributes = {"current_request": PerThread(), "lambda_context": PerThread(),
                  "requests_per_thread": True}  # fmt: skip
    app.__class__ = type(type(app).__name__, (type(app),), attributes)
    for name in ("current_request", "lambda_context"):
        app.__dict__.pop(name, None)


def _one_request_per_thread(local: Any) -> None:
    original = local.LocalGateway.__init__

    def __init__(self: Any, app_object: Any, config: Any) -> None:
        requests_per_thread(app_object)
        original(self, app_object, config)

    local.LocalGateway.__init__ = __init__


def _reject_like_api_gateway(local: Any) -> None:
    original = local.LocalGatewayAuthorizer.authorize

    def authorize(self: Any, raw_path: str, lambda_event: Any, lambda_context: Any) -> Any:
        try:
            return original(self, raw_path, lambda_event, lambda_context)
        except local.LocalGatewayException:
            raise
        except Exception as exc:
            if str(exc) != "Unauthorized":
                raise
            headers = {
                "x-amzn-RequestId": lambda_context.aws_request_id,
                "x-amzn-ErrorType": "UnauthorizedException",
            }
            raise local.NotAuthorizedError(headers, UNAUTHORIZED_BODY) from None

    local.LocalGatewayAuthorizer.authorize = authorize


def _shape_like_api_gateway(local: Any) -> None:
    original = local.LocalGateway.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        try:
            return original(self, method, path, headers, body)
        except local.LocalGatewayException as exc:
            raise _as_gateway_response(local, exc) from None
        except Exception:
            # What API Gateway does when the authorizer (or the gateway) fails: a 500.
            error = local.LocalGatewayException({"x-amzn-RequestId": ""}, b'{"message": null}')
            error.CODE = 500
            raise _as_gateway_response(local, error) from None

    handle_request.emulates_api_gateway = True  # type: ignore[attr-defined]
    local.LocalGateway.handle_request = handle_request


def _as_gateway_response(local: Any, exc: Any) -> Any:
    response_type = _response_type(local, exc)
    template = gateway_responses().get(response_type) or gateway_responses()["DEFAULT_4XX"]
    try:
        original = json.loads(exc.body or b"{}")
    except ValueError:
        original = {}
    message = original.get("message") or original.get("Message") or "Internal server error"
    request_id = exc.headers.get("x-amzn-RequestId", "")
    body = template["ResponseTemplates"]["application/json"]
    body = body.replace("$context.error.messageString", json.dumps(message))
    body = body.replace("$context.requestId", request_id)
    status = int(template.get("StatusCode", exc.CODE))
    reshaped = type(type(exc).__name__, (local.LocalGatewayException,), {"CODE": status})
    return reshaped({**exc.headers, "Content-Type": "application/json"}, body.encode())


def _response_type(local: Any, exc: Any) -> str:
    if isinstance(exc, local.NotAuthorizedError):
        return "UNAUTHORIZED"
    if exc.headers.get("x-amzn-ErrorType") == "AccessDeniedException":
        return "ACCESS_DENIED"
    if isinstance(exc, local.ForbiddenError):
        return "MISSING_AUTHENTICATION_TOKEN"
    return "DEFAULT_5XX" if exc.CODE >= 500 else "DEFAULT_4XX"


@cache
def gateway_responses() -> dict[str, Any]:
    document = json.loads(API_RESPONSES.read_text())
    return dict(document["Resources"]["RestAPI"]["Properties"]["GatewayResponses"])


def _request_ids(local: Any) -> None:
    """Each event gets a request id, as API Gateway's have (see the module's docstring)."""
    import uuid

    create = local.LambdaEventConverter.create_lambda_event

    def create_lambda_event(self: Any, *args: Any, **kwargs: Any) -> Any:
        event = create(self, *args, **kwargs)
        event["requestContext"].setdefault("requestId", str(uuid.uuid4()))
        return event

    local.LambdaEventConverter.create_lambda_event = create_lambda_event
