"""The user pool's OAuth 2.0 token endpoint for the client-credentials grant, which moto lacks.

In AWS a user pool with a domain answers `POST https://<domain>.auth.<region>.amazoncognito.com
/oauth2/token`: a confidential app client sends its id and secret (HTTP Basic, or `client_id`
and `client_secret` in the form), `grant_type=client_credentials` and optionally `scope`, and
gets an access token for itself (no user): `sub` and `client_id` the client's id,
`token_use` access, `scope` the granted scopes, no username, no groups. moto (5.2.5) serves
the pools' JWKS and OpenID configuration but no OAuth endpoint at all.

The emulator answers `POST /oauth2/token` on its own address, in front of moto
(`TokenEndpoint`, a WSGI middleware installed by `local.emulator`), with Cognito's rules:
the client must exist, have a secret and be that secret's (compared in constant time), have
the client-credentials flow allowed (`AllowedOAuthFlowsUserPoolClient`, `AllowedOAuthFlows`),
and its pool a domain (AWS has no token endpoint without one). The scopes asked for must be
among the client's `AllowedOAuthScopes` and defined by a resource server of the pool; none
asked for grants all of the client's. The token lives the client's `AccessTokenValidity`
(`TokenValidityUnits`; Cognito's default, 60 minutes) and is signed with the pool's own key
(moto's, `pool.json_web_key`, the one its JWKS publishes), with the header moto's own tokens
have. Errors are Cognito's: 400 with `{"error": "invalid_request" | "invalid_client" |
"unauthorized_client" | "unsupported_grant_type" | "invalid_scope"}`.

One difference: the emulator serves every pool at one address, so the pool is the client's
(found by its id), not the one a domain names.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from typing import Any

TOKEN_PATH = "/oauth2/token"
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024
#: Cognito's unit of `AccessTokenValidity` when `TokenValidityUnits` says none, and its
#: default validity.
DEFAULT_UNIT = "hours"
DEFAULT_SECONDS = 3600
UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class TokenEndpoint:
    """WSGI: `POST /oauth2/token` answered here, everything else by moto's app."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != TOKEN_PATH:
            return self._app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST")])
            return [b""]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            status, body = 400, _error("invalid_request", "bad Content-Length")
        else:
            form = environ["wsgi.input"].read(length).decode("utf-8", "replace")
            status, body = answer(
                environ.get("CONTENT_TYPE", ""), environ.get("HTTP_AUTHORIZATION", ""), form
            )
        data = json.dumps(body).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Bad Request'}",
            [
                ("Content-Type", "application/json;charset=UTF-8"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
                ("Pragma", "no-cache"),
            ],
        )
        return [data]


def answer(content_type: str, authorization: str, form: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one token request."""
    try:
        return 200, issue(content_type, authorization, form)
    except OAuthError as problem:
        return 400, _error(problem.error, problem.description)


def _error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


def issue(content_type: str, authorization: str, form: str) -> dict[str, Any]:
    if content_type.split(";")[0].strip().lower() != FORM:
        raise OAuthError("invalid_request", f"Content-Type must be {FORM}")
    try:
        fields = urllib.parse.parse_qs(form, keep_blank_values=True, strict_parsing=bool(form))
    except ValueError:
        raise OAuthError("invalid_request", "the body is not a form") from None
    if any(len(values) > 1 for values in fields.values()):
        raise OAuthError("invalid_request", "a parameter is repeated")
    params = {name: values[0] for name, values in fields.items()}
    client_id, secret = _client_credentials(authorization, params)
    grant = params.get("grant_type")
    if not grant:
        raise OAuthError("invalid_request", "grant_type is required")
    pool, client = _find_client(client_id)
    if not client.generate_secret or not hmac.compare_digest(
        client.secret.encode(), secret.encode()
    ):
        raise OAuthError("invalid_client", "client authentication failed")
    if grant != "client_credentials":
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    config = client.extended_config
    if not config.get("AllowedOAuthFlowsUserPoolClient") or "client_credentials" not in (
        config.get("AllowedOAuthFlows") or []
    ):
        raise OAuthError("unauthorized_client", "the client may not use client_credentials")
    if pool.domain is None:
        raise OAuthError("invalid_request", "the user pool has no domain (no OAuth endpoints)")
    scopes = _granted_scopes(pool, config, params.get("scope"))
    lifetime = _lifetime(config)
    token = sign(pool, client.id, " ".join(scopes), lifetime)
    return {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}


def _client_credentials(authorization: str, params: dict[str, str]) -> tuple[str, str]:
    """(client id, secret) from HTTP Basic (RFC 6749 2.3.1: each form-url-encoded) or the
    form; `invalid_client` without them."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "malformed Basic credentials") from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise OAuthError("invalid_client", "malformed Basic credentials")
        return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
    if params.get("client_id") and params.get("client_secret"):
        return params["client_id"], params["client_secret"]
    raise OAuthError("invalid_client", "client credentials are required")


def _find_client(client_id: str) -> tuple[Any, Any]:
    """The pool and client of `client_id` in any account and region moto holds."""
    from moto.cognitoidp.models import cognitoidp_backends

    for regions in list(dict.values(cognitoidp_backends)):
        for backend in list(dict.values(regions)):
            for pool in list(backend.user_pools.values()):
                client = pool.clients.get(client_id)
                if client is not None:
                    return pool, client
    raise OAuthError("invalid_client", "client authentication failed")


def _granted_scopes(pool: Any, config: dict[str, Any], requested: str | None) -> list[str]:
    allowed = list(config.get("AllowedOAuthScopes") or [])
    wanted = allowed if requested is None or not requested.strip() else requested.split()
    defined = {
        f"{server.identifier}/{scope['ScopeName']}"
        for server in pool.resource_servers.values()
        for scope in server.scopes or []
    }
    refused = [s for s in wanted if s not in allowed or s not in defined]
    if refused or not wanted:
        raise OAuthError("invalid_scope", f"scope not allowed: {' '.join(refused) or '(none)'}")
    return list(dict.fromkeys(wanted))


def _lifetime(config: dict[str, Any]) -> int:
    validity = config.get("AccessTokenValidity")
    if validity is None:
        return DEFAULT_SECONDS
    unit = (config.get("TokenValidityUnits") or {}).get("AccessToken") or DEFAULT_UNIT
    return int(validity) * UNITS[unit]


def sign(pool: Any, client_id: str, scope: str, lifetime: int) -> str:
    """A client-credentials access token as Cognito issues one, signed with the pool's key
    and moto's token header (`CognitoIdpUserPool.create_jwt`)."""
    from joserfc import jwt

    now = int(time.time())
    claims = {
        "sub": client_id,
        "token_use": "access",
        "scope": scope,
        "auth_time": now,
        "iss": f"https://cognito-idp.{pool.region}.amazonaws.com/{pool.id}",
        "exp": now + lifetime,
        "iat": now,
        "version": 2,
        "jti": str(uuid.uuid4()),
        "client_id": client_id,
    }
    return str(jwt.encode({"kid": "dummy", "alg": "RS256"}, claims, pool.json_web_key))
