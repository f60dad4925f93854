"""The app in this process against moto in-process, set up as tests/conftest.py does."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import AWS_OVERRIDES, STAGE, patched_environ, quiet_stdout, stage_env
from infra.paths import PROJECT_DIR

PASSWORD = "Bench-Passw0rd!"


class AuthorizedHTTP:
    """chalice.test.Client's `http`, sending a bearer token with every request."""

    def __init__(self, http: Any, token: str) -> None:
        self._http = http
        self._auth = {"Authorization": f"Bearer {token}"}

    def __getattr__(self, method: str) -> Any:
        send = getattr(self._http, method)

        def request(path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
            return send(path, headers={**self._auth, **(headers or {})}, **kwargs)

        return request


@dataclass
class InProcess:
    client: Any  # chalice.test.Client
    outputs: dict[str, str]
    http: Any = None  # AuthorizedHTTP as an admin, once `sign_in_admin` ran

    def register(self, email: str, name: str = "Bench User") -> dict[str, Any]:
        """Both steps of a registration: the code is read from moto's SES."""
        from local.inprocess import mailed_code

        headers = {"Content-Type": "application/json"}
        body = {"email": email, "name": name}
        response = self.client.http.post("/register", headers=headers, body=_json(body))
        expect(response, 202, "POST /register")
        confirmation = {"email": email, "code": mailed_code(email), "password": PASSWORD}
        response = self.client.http.post(
            "/register/confirm", headers=headers, body=_json(confirmation)
        )
        expect(response, 201, "POST /register/confirm")
        return _load(response)

    def sign_in_admin(self, email: str = "bench-admin@example.com") -> None:
        import boto3

        user = self.register(email, "Bench Admin")
        idp = boto3.client("cognito-idp")
        pool = self.outputs["UserPoolId"]
        idp.admin_add_user_to_group(UserPoolId=pool, Username=user["user_id"], GroupName="admins")
        result = idp.initiate_auth(
            ClientId=self.outputs["UserPoolClientId"],
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
        )
        self.http = AuthorizedHTTP(self.client.http, result["AuthenticationResult"]["AccessToken"])


@contextlib.contextmanager
def in_process_app() -> Iterator[InProcess]:
    """moto (mock_aws) provisioned from infra/resources.json, the dev stage's environment,
    fresh app caches, the Chalice test client; stdout (the app's logs) goes to /dev/null."""
    with patched_environ(stage_env(), drop_prefixes=AWS_OVERRIDES), quiet_stdout():
        import boto3
        from chalice.test import Client
        from moto import mock_aws

        from local.gateway import emulate_api_gateway
        from local.inprocess import reset_app_caches, serve_moto_jwks
        from local.provision import provision

        emulate_api_gateway()
        reset_app_caches()
        restore_jwks = serve_moto_jwks()
        try:
            with mock_aws():
                # moto warns that it skips the CloudWatch alarm: expected, not news.
                moto_logger = logging.getLogger("moto")
                level = moto_logger.level
                moto_logger.setLevel(logging.ERROR)
                try:
                    outputs = provision(STAGE, boto3.client("cloudformation"))
                finally:
                    moto_logger.setLevel(level)
                from app import app

                with Client(app, stage_name=STAGE, project_dir=str(PROJECT_DIR)) as client:
                    env = InProcess(client, outputs)
                    env.sign_in_admin()
                    yield env
        finally:
            restore_jwks()
            reset_app_caches()


def expect(response: Any, status: int, what: str) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{what}: expected {status}, got {response.status_code}: {response.body[:500]!r}"
        )


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _load(response: Any) -> Any:
    import json

    return json.loads(response.body)
