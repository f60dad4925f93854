"""Accounts with real tokens from the (moto) Cognito pool, and a client that sends them."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import jwt
from moto.utilities.utils import load_resource

from local.inprocess import mailed_code

PASSWORD = "Corr3ct-Horse!"
JSON = {"Content-Type": "application/json"}


def register_user(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST /register, then the mailed code and the password to POST /register/confirm."""
    fields = {k: v for k, v in body.items() if k != "password"}
    asked = client.http.post("/register", headers=JSON, body=json.dumps(fields))
    assert asked.status_code == 202, asked.body
    confirmation = {
        "email": body["email"],
        "code": mailed_code(body["email"]),
        "password": body.get("password", PASSWORD),
    }
    response = client.http.post("/register/confirm", headers=JSON, body=json.dumps(confirmation))
    assert response.status_code == 201, response.body
    return dict(response.json_body)


class Accounts:
    """Registers users through the API and signs them in to the pool for tokens."""

    def __init__(self, client: Any, outputs: dict[str, str]) -> None:
        self._client = client
        self.pool_id = outputs["UserPoolId"]
        self.client_id = outputs["UserPoolClientId"]
        self._count = 0

    def register(self, admin: bool = False, **fields: Any) -> tuple[dict[str, Any], str]:
        """A new user and its access token."""
        self._count += 1
        body = {"email": f"user{self._count}@example.com", "name": f"User {self._count}"}
        body = {**body, "password": PASSWORD, **fields}
        user = register_user(self._client, body)
        if admin:
            boto3.client("cognito-idp").admin_add_user_to_group(
                UserPoolId=self.pool_id, Username=user["user_id"], GroupName="admins"
            )
        return user, self.sign_in(body["email"], body["password"])

    def sign_in(self, email: str, password: str = PASSWORD, kind: str = "AccessToken") -> str:
        result = boto3.client("cognito-idp").initiate_auth(
            ClientId=self.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": email, "PASSWORD": password},
        )
        return str(result["AuthenticationResult"][kind])

    def forge(self, sub: str, **overrides: Any) -> str:
        """A token signed with the pool's own key, with claims of our choosing."""
        private = load_resource("cognitoidp/resources/jwks-private.json")
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{self.pool_id}",
            "client_id": self.client_id,
            "token_use": "access",
            "iat": now,
            "exp": now + 3600,
            **overrides,
        }
        key = jwt.PyJWK(private).key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": private["kid"]})


class ApiClient:
    """chalice.test.Client's HTTP side, sending a bearer token when it has one."""

    def __init__(self, client: Any, token: str | None = None) -> None:
        self._client = client
        self.token = token

    def as_(self, token: str | None) -> ApiClient:
        return ApiClient(self._client, token)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        if self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        raw = body if body is None or isinstance(body, str | bytes) else json.dumps(body)
        return self._client.http.request(method, path, headers=sent, body=raw or b"")

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, body, headers)

    def put(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.request("PUT", path, body, headers)

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.request("DELETE", path, headers=headers)
