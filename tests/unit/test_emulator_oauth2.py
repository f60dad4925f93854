"""The emulator's OAuth 2.0 token endpoint (`local/oauth2.py`): the client-credentials grant as
Cognito answers it, against moto's pool (in process), through the WSGI middleware the
emulator puts in front of moto."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws
from werkzeug.test import Client

from local import oauth2
from local.inprocess import moto_jwks
from tests.unit.machine_tokens import FORM, basic

SCOPE = "telemetry/metrics.write"


def moto_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"moto"]


@pytest.fixture
def pool(stage_env: dict[str, str]) -> Any:
    with mock_aws():
        idp = boto3.client("cognito-idp")
        pool_id = idp.create_user_pool(PoolName="p")["UserPool"]["Id"]
        idp.create_resource_server(
            UserPoolId=pool_id, Identifier="telemetry", Name="t",
            Scopes=[{"ScopeName": "metrics.write", "ScopeDescription": "d"},
                    {"ScopeName": "other", "ScopeDescription": "d"}],
        )  # fmt: skip
        idp.create_user_pool_domain(UserPoolId=pool_id, Domain="app-dev-1")

        def client(**config: Any) -> tuple[str, str]:
            settings = {
                "GenerateSecret": True,
                "AllowedOAuthFlowsUserPoolClient": True,
                "AllowedOAuthFlows": ["client_credentials"],
                "AllowedOAuthScopes": [SCOPE],
                "AccessTokenValidity": 15,
                "TokenValidityUnits": {"AccessToken": "minutes"},
                **config,
            }
            made = idp.create_user_pool_client(UserPoolId=pool_id, ClientName="c", **settings)
            return made["UserPoolClient"]["ClientId"], made["UserPoolClient"].get(
                "ClientSecret", ""
            )

        yield type("Pool", (), {"id": pool_id, "client": staticmethod(client), "idp": idp})


def post(form: dict[str, str], auth: str | None = None, content_type: str = FORM) -> Any:
    app = Client(oauth2.TokenEndpoint(moto_app))
    headers = {"Content-Type": content_type, **({"Authorization": auth} if auth else {})}
    return app.post("/oauth2/token", data=urllib.parse.urlencode(form), headers=headers)


def test_a_confidential_client_gets_a_token_signed_with_the_pools_key(pool: Any) -> None:
    client_id, secret = pool.client()
    response = post({"grant_type": "client_credentials"}, basic(client_id, secret))
    assert response.status_code == 200, response.text
    body = response.json
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 900)
    key = jwt.PyJWK(moto_jwks()["keys"][0]).key  # what the pool's JWKS publishes
    claims = jwt.decode(body["access_token"], key, algorithms=["RS256"])
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["token_use"] == "access" and claims["scope"] == SCOPE
    assert claims["iss"] == f"https://cognito-idp.us-east-1.amazonaws.com/{pool.id}"
    assert 890 <= claims["exp"] - time.time() <= 900
    assert "username" not in claims and "cognito:groups" not in claims


def test_the_credentials_may_come_in_the_form_and_scopes_be_asked_for(pool: Any) -> None:
    client_id, secret = pool.client(AllowedOAuthScopes=[SCOPE, "telemetry/other"])
    form = {"grant_type": "client_credentials", "client_id": client_id,
            "client_secret": secret, "scope": "telemetry/other"}  # fmt: skip
    token = post(form).json["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "telemetry/other"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong_secret", "invalid_client"),
        ("unknown_client", "invalid_client"),
        ("no_credentials", "invalid_client"),
        ("public_client", "invalid_client"),  # no secret: no client credentials
        ("grant_password", "unsupported_grant_type"),
        ("no_grant", "invalid_request"),
        ("flow_not_allowed", "unauthorized_client"),
        ("scope_not_allowed", "invalid_scope"),
        ("scope_unknown", "invalid_scope"),
        ("json_body", "invalid_request"),
    ],
)
def test_refusals_are_cognitos(pool: Any, case: str, error: str) -> None:
    client_id, secret = pool.client()
    auth: str | None = basic(client_id, secret)
    form = {"grant_type": "client_credentials"}
    content_type = FORM
    if case == "wrong_secret":
        auth = basic(client_id, secret[:-1] + ("0" if secret[-1] != "0" else "1"))
    elif case == "unknown_client":
        auth = basic("nosuchclient", secret)
    elif case == "no_credentials":
        auth = None
    elif case == "public_client":
        public_id, _ = pool.client(GenerateSecret=False)
        auth = basic(public_id, "")
    elif case == "grant_password":
        form = {"grant_type": "password"}
    elif case == "no_grant":
        form = {}
    elif case == "flow_not_allowed":
        other_id, other_secret = pool.client(AllowedOAuthFlows=["code"])
        auth = basic(other_id, other_secret)
    elif case == "scope_not_allowed":
        form["scope"] = "telemetry/other"  # defined, but not this client's
    elif case == "scope_unknown":
        unknown_id, unknown_secret = pool.client(AllowedOAuthScopes=["nowhere/write"])
        auth = basic(unknown_id, unknown_secret)
    elif case == "json_body":
        content_type = "application/json"
    response = post(form, auth, content_type)
    assert response.status_code == 400, response.text
    assert response.json["error"] == error
    assert "access_token" not in response.json


def test_no_domain_no_token_endpoint(pool: Any) -> None:
    client_id, secret = pool.client()
    pool.idp.delete_user_pool_domain(UserPoolId=pool.id, Domain="app-dev-1")
    response = post({"grant_type": "client_credentials"}, basic(client_id, secret))
    assert (response.status_code, response.json["error"]) == (400, "invalid_request")


def test_everything_else_goes_to_moto() -> None:
    app = Client(oauth2.TokenEndpoint(moto_app))
    assert app.get("/").text == "moto"
    assert app.post("/oauth2/tokens").text == "moto"
    response = app.get("/oauth2/token")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert json.loads(post({"grant_type": "x"}).text)["error"] == "invalid_client"
