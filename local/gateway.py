"""Where `chalice local` differs from API Gateway in a way the app depends on, make it match.

API Gateway answers 401 when a Lambda authorizer fails with the message "Unauthorized" (the
documented way for an authorizer to reject a token); `chalice local` lets the exception
escape instead. Used by the local stack and by the tests' `chalice.test.Client`.
"""

from __future__ import annotations

from typing import Any

UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'


def emulate_authorizer_rejection() -> None:
    """Patch chalice's local authorizer runner (idempotent)."""
    from chalice import local

    original = local.LocalGatewayAuthorizer.authorize
    if getattr(original, "emulates_api_gateway", False):
        return

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

    authorize.emulates_api_gateway = True  # type: ignore[attr-defined]
    local.LocalGatewayAuthorizer.authorize = authorize  # type: ignore[method-assign]
