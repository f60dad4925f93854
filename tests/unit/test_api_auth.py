"""Who may do what, on every protected route, with real and forged tokens.

Tokens come from the (moto) Cognito pool; forged ones are signed with the pool's own key but
carry a wrong claim, or use the classic forgeries (`alg: none`, HS256 keyed with the public
key). A bad token is a 401 from the authorizer; a good token for someone else's profile is a
403 from the rules; admins may do everything.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from local.inprocess import moto_jwks
from tests.unit.api_helpers import ApiClient
from tests.unit.auth_helpers import hs256_with_public_key, unsigned

ROUTES = [
    ("GET", "/users"),
    ("GET", "/users/search?q=owner"),
    ("GET", "/users/{owner}"),
    ("PUT", "/users/{owner}"),
    ("DELETE", "/users/{owner}"),
]
BAD_TOKENS = [
    "none",
    "garbage",
    "expired",
    "wrong_issuer",
    "wrong_audience",
    "wrong_client",
    "alg_none",
    "hs256_public_key",
    "not_bearer_but_basic",
]


@pytest.fixture
def world(client: Any, accounts: Any) -> dict[str, Any]:
    owner, owner_token = accounts.register(email="owner@example.com")
    _, other_token = accounts.register(email="other@example.com")
    _, admin_token = accounts.register(email="boss@example.com", admin=True)
    return {
        "client": client,
        "accounts": accounts,
        "owner": owner,
        "tokens": {"owner": owner_token, "other": other_token, "admin": admin_token},
    }


def bad_token(world: dict[str, Any], kind: str) -> str | None:
    accounts, sub = world["accounts"], world["owner"]["user_id"]
    past = int(time.time()) - 7200
    public_key = _moto_public_key_pem()
    return {
        "none": None,
        "garbage": "Bearer not-a-token",
        "expired": accounts.forge(sub, iat=past, exp=past + 3600),
        "wrong_issuer": accounts.forge(
            sub, iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_someoneelse"
        ),
        "wrong_audience": accounts.forge(sub, token_use="id", aud="another-client"),
        "wrong_client": accounts.forge(sub, client_id="another-client"),
        "alg_none": unsigned(_claims_of(accounts.forge(sub)), kid="dummy"),
        "hs256_public_key": hs256_with_public_key(_claims_of(accounts.forge(sub)), public_key),
        "not_bearer_but_basic": "Basic b3duZXI6cGFzc3dvcmQ=",
    }[kind]


def call(world: dict[str, Any], method: str, route: str, token: str | None) -> Any:
    path = route.format(owner=world["owner"]["user_id"])
    body = {"bio": "changed"} if method == "PUT" else None
    api = ApiClient(world["client"])
    headers = {}
    if token is not None:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    return api.request(method, path, body, headers=headers)


@pytest.mark.parametrize(("method", "route"), ROUTES)
@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_tokens_are_401(world: dict[str, Any], method: str, route: str, kind: str) -> None:
    response = call(world, method, route, bad_token(world, kind))
    assert response.status_code == 401, (kind, response.body)
    error = json.loads(response.body)["error"]
    assert (error["code"], error["message"]) == ("unauthorized", "Unauthorized")


@pytest.mark.parametrize(
    ("method", "route", "who", "status"),
    [
        ("GET", "/users", "owner", 403),
        ("GET", "/users", "other", 403),
        ("GET", "/users", "admin", 200),
        ("GET", "/users/search?q=owner", "owner", 403),
        ("GET", "/users/search?q=owner", "other", 403),
        ("GET", "/users/search?q=owner", "admin", 200),
        ("GET", "/users/{owner}", "owner", 200),
        ("GET", "/users/{owner}", "other", 403),
        ("GET", "/users/{owner}", "admin", 200),
        ("PUT", "/users/{owner}", "owner", 200),
        ("PUT", "/users/{owner}", "other", 403),
        ("PUT", "/users/{owner}", "admin", 200),
        ("DELETE", "/users/{owner}", "other", 403),
        ("DELETE", "/users/{owner}", "owner", 204),
        ("DELETE", "/users/{owner}", "admin", 204),
    ],
)
def test_rules(world: dict[str, Any], method: str, route: str, who: str, status: int) -> None:
    response = call(world, method, route, world["tokens"][who])
    assert response.status_code == status, response.body
    if status == 403:
        assert json.loads(response.body)["error"]["code"] == "forbidden"


def test_a_bare_token_without_the_bearer_scheme_is_401(world: dict[str, Any]) -> None:
    """The docs require `Authorization: Bearer <token>`; a valid token sent bare is refused."""
    bare = world["tokens"]["owner"]
    response = ApiClient(world["client"]).get(
        f"/users/{world['owner']['user_id']}", headers={"Authorization": bare}
    )
    assert response.status_code == 401, response.body
    error = json.loads(response.body)["error"]
    assert (error["code"], error["message"]) == ("unauthorized", "Unauthorized")


@pytest.mark.parametrize("scheme", ["bearer ", "BEARER ", "Bearer   "])
def test_the_bearer_scheme_is_case_insensitive(world: dict[str, Any], scheme: str) -> None:
    header = scheme + world["tokens"]["owner"]
    response = ApiClient(world["client"]).get(
        f"/users/{world['owner']['user_id']}", headers={"Authorization": header}
    )
    assert response.status_code == 200, response.body


def test_id_tokens_work_too(world: dict[str, Any]) -> None:
    id_token = world["accounts"].sign_in("owner@example.com", kind="IdToken")
    assert call(world, "GET", "/users/{owner}", id_token).status_code == 200


def test_other_users_profile_is_403_even_when_it_does_not_exist(world: dict[str, Any]) -> None:
    response = ApiClient(world["client"], world["tokens"]["other"]).get(
        "/users/00000000-0000-4000-8000-000000000404"
    )
    assert response.status_code == 403  # no way to probe which ids exist


def test_identity_comes_from_the_token_not_the_body(world: dict[str, Any]) -> None:
    other = ApiClient(world["client"], world["tokens"]["other"])
    path = f"/users/{world['owner']['user_id']}"
    response = other.put(path, {"bio": "pwned", "user_id": world["owner"]["user_id"]})
    assert response.status_code in (400, 403)
    owner = ApiClient(world["client"], world["tokens"]["owner"])
    assert "bio" not in owner.get(path).json_body


def test_jwks_is_fetched_once_for_many_requests(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.auth.authorizer import verifier

    verifier.cache_clear()
    fetches = []
    jwks = moto_jwks()

    def counting_fetch(url: str, timeout: float = 3.0) -> dict[str, Any]:
        fetches.append(url)
        return jwks

    monkeypatch.setattr("chalicelib.auth.tokens.fetch_json", counting_fetch)
    for _ in range(5):
        assert call(world, "GET", "/users/{owner}", world["tokens"]["owner"]).status_code == 200
    assert len(fetches) == 1
    pool_id = world["accounts"].pool_id
    assert fetches[0].endswith(f"/{pool_id}/.well-known/jwks.json")


def _claims_of(token: str) -> dict[str, Any]:
    import jwt

    return dict(jwt.decode(token, options={"verify_signature": False}))


def _moto_public_key_pem() -> Any:
    """The pool's public key, as a forger would download it, for the HS256 confusion attack."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    public = jwt.PyJWK(moto_jwks()["keys"][0]).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    class PublicKeyAsSecret:
        kid = "dummy"
        public_pem = pem

    return PublicKeyAsSecret()


def test_a_group_name_with_a_comma_does_not_make_an_admin(world: dict[str, Any]) -> None:
    import boto3

    accounts = world["accounts"]
    idp = boto3.client("cognito-idp")
    idp.create_group(GroupName="support,admins", UserPoolId=accounts.pool_id)
    user, _ = accounts.register(email="sneaky@example.com")
    idp.admin_add_user_to_group(
        UserPoolId=accounts.pool_id, Username=user["user_id"], GroupName="support,admins"
    )
    token = accounts.sign_in("sneaky@example.com")
    assert call(world, "GET", "/users", token).status_code == 403


def test_a_token_expired_while_cached_by_api_gateway_is_refused() -> None:
    """API Gateway's authorizer cache (ttl 300 s) does not look at `exp`: handlers do."""
    from chalicelib.auth.authorizer import principal_of
    from chalicelib.core.errors import Unauthenticated

    class Request:
        def __init__(self, expires_at: float) -> None:
            authorizer = {"user_id": "u1", "groups": '["admins"]', "expires_at": expires_at}
            self.context = {"authorizer": authorizer}

    assert principal_of(Request(time.time() + 60)).is_admin  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        principal_of(Request(time.time() - 120))  # type: ignore[arg-type]


def test_an_authorizer_fault_is_a_shaped_500_not_a_dropped_connection(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As API Gateway answers when the authorizer fails (e.g. the SSM parameter is gone)."""

    def broken() -> Any:
        raise RuntimeError("ssm unavailable")

    broken.cache_clear = lambda: None  # type: ignore[attr-defined]  (stands in for @cache)
    monkeypatch.setattr("chalicelib.auth.authorizer.verifier", broken)
    response = call(world, "GET", "/users/{owner}", world["tokens"]["owner"])
    assert response.status_code == 500
    assert json.loads(response.body)["error"]["code"] == "internal_error"


# --- machine identities: a trusted producer's client-credentials token ----------------------

MACHINE_REFUSED = [
    ("GET", "/users/{machine}"),
    ("PUT", "/users/{machine}"),
    ("DELETE", "/users/{machine}"),
    ("GET", "/users/{machine}/export"),
    ("GET", "/users"),
    ("GET", "/users/search?q=owner"),
    ("GET", "/users/{owner}"),
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("POST", "/images"),
    ("GET", "/images"),
    ("GET", "/analytics/daily"),
]


@pytest.mark.parametrize(("method", "route"), MACHINE_REFUSED)
def test_a_machine_identity_is_nobodys_user(
    world: dict[str, Any], aws: dict[str, str], method: str, route: str
) -> None:
    """Its token is valid (its `sub` is its client's id), but it may not act as a user: not
    as the user whose id its `sub` is, nor on any route of a user's own."""
    from tests.unit.machine_tokens import machine_token

    machine_id = aws["TelemetryMachineClientId"]
    path = route.format(owner=world["owner"]["user_id"], machine=machine_id)
    body = {"bio": "x"} if method == "PUT" else ({} if method == "POST" else None)
    api = ApiClient(world["client"], machine_token(aws))
    response = api.request(method, path, body)
    assert response.status_code == 403, response.body
    assert json.loads(response.body)["error"]["code"] == "forbidden"


def test_a_token_of_another_confidential_client_of_the_pool_is_401(
    world: dict[str, Any], aws: dict[str, str]
) -> None:
    """Only the configured producers' client makes machine identities."""
    import boto3

    from tests.unit.machine_tokens import machine_token

    other = boto3.client("cognito-idp").create_user_pool_client(
        UserPoolId=aws["UserPoolId"], ClientName="rogue", GenerateSecret=True,
        AllowedOAuthFlowsUserPoolClient=True, AllowedOAuthFlows=["client_credentials"],
        AllowedOAuthScopes=["telemetry/metrics.write"],
    )["UserPoolClient"]  # fmt: skip
    token = machine_token({**aws, "TelemetryMachineClientId": other["ClientId"]})
    response = ApiClient(world["client"], token).post("/events", {"events": []})
    assert response.status_code == 401, response.body


def test_the_authorizer_hands_scopes_and_machine_to_handlers() -> None:
    from chalicelib.auth.authorizer import principal_of
    from chalicelib.core.errors import Forbidden

    class Request:
        def __init__(self, machine: str) -> None:
            authorizer = {"user_id": "c1", "groups": "[]", "machine": machine,
                          "scopes": '["telemetry/metrics.write"]'}  # fmt: skip
            self.context = {"authorizer": authorizer}

    with pytest.raises(Forbidden):
        principal_of(Request("1"))  # type: ignore[arg-type]
    machine = principal_of(Request("1"), allow_machine=True)  # type: ignore[arg-type]
    assert machine.is_machine and machine.scopes == {"telemetry/metrics.write"}
    assert not principal_of(Request("0")).is_machine  # type: ignore[arg-type]
