"""The API's Lambda authorizer and what handlers learn from it.

The authorizer allows every route to a valid token (API Gateway caches its answer per token
for all routes); the rules of who may do what live in the service (`policy`). The user id,
groups, scopes and whether the caller is a machine identity reach handlers through the
authorizer's context, never from the request body.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

from chalice.app import AuthRequest, AuthResponse, Request

from chalicelib.auth.config import COGNITO_CONFIG_READ
from chalicelib.auth.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    InvalidToken,
    JwksKeys,
    Principal,
    TokenVerifier,
    VerifiedTokens,
    bearer_token,
)
from chalicelib.core.errors import ApiError, Forbidden, Unauthenticated
from chalicelib.core.observability import logger
from chalicelib.core.resources import needs


class Unauthorized(Exception):
    """API Gateway answers 401 when a Lambda authorizer fails with exactly this message."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


#: As the authorizer's `ttl_seconds` in app.py: a verified token is trusted this long at most.
AUTHORIZER_CACHE_SECONDS = 300


@cache
def verifier() -> VerifiedTokens:
    from chalicelib.auth.config import cognito_config

    config = cognito_config()
    tokens = TokenVerifier(
        config.issuer,
        config.client_id,
        JwksKeys(config.jwks_url),
        machine_client_ids=config.machine_client_ids,
    )
    return VerifiedTokens(tokens, ttl=AUTHORIZER_CACHE_SECONDS)


@needs(COGNITO_CONFIG_READ)
def authorize(auth_request: AuthRequest) -> AuthResponse:
    try:
        principal = verifier().verify(bearer_token(auth_request.token or ""))
    except InvalidToken as exc:
        logger.info("token rejected", reason=str(exc))
        raise Unauthorized() from None
    # Context values must be strings or numbers. Groups go as JSON (a group name may hold a
    # comma); `expires_at` lets handlers refuse a token API Gateway's authorizer cache keeps
    # serving after it expired.
    return AuthResponse(
        routes=["*"],
        principal_id=principal.user_id,
        context={
            "user_id": principal.user_id,
            "groups": json.dumps(sorted(principal.groups)),
            "expires_at": int(principal.expires_at),
            "scopes": json.dumps(sorted(principal.scopes)),
            "machine": 1 if principal.is_machine else 0,
        },
    )


def principal_of(request: Request, allow_machine: bool = False) -> Principal:
    """The caller, as the authorizer established it. A machine identity (a trusted
    producer's client-credentials token) is refused (403) unless the route accepts one
    (`allow_machine`): it is nobody's user, so it can never act as one."""
    context: dict[str, Any] = (request.context or {}).get("authorizer") or {}
    user_id = context.get("user_id")
    if not user_id:
        # A protected route reached without the authorizer: a deployment mistake, not the
        # client's; never trust anything else in the request instead.
        raise ApiError("The request was not authorized by the API's authorizer.")
    expires_at = float(context.get("expires_at") or 0)
    if expires_at and expires_at + DEFAULT_LEEWAY_SECONDS < time.time():
        raise Unauthenticated("The token has expired.")
    groups = frozenset(json.loads(context.get("groups") or "[]"))
    machine = str(context.get("machine") or "0") not in ("0", "")
    if machine and not allow_machine:
        raise Forbidden("A machine identity may not call this route.")
    return Principal(
        user_id=str(user_id),
        groups=frozenset() if machine else groups,
        expires_at=expires_at,
        scopes=frozenset(json.loads(context.get("scopes") or "[]")),
        is_machine=machine,
    )
