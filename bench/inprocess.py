"""The app in this process against moto in-process, set up as tests/conftest.py does."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import AWS_OVERRIDES, PROJECT_DIR, STAGE, patched_environ, quiet_stdout, stage_env


def reset_app_caches() -> None:
    from chalicelib.core import aws
    from chalicelib.core.settings import get_settings
    from chalicelib.users import users_service

    get_settings.cache_clear()
    aws.reset_clients()
    users_service.cache_clear()


@dataclass
class InProcess:
    client: Any  # chalice.test.Client
    outputs: dict[str, str]

    def register(self, email: str, name: str = "Bench User") -> dict[str, Any]:
        response = self.client.http.post(
            "/register",
            headers={"Content-Type": "application/json"},
            body=_json({"email": email, "name": name}),
        )
        expect(response, 201, "POST /register")
        return _load(response)


@contextlib.contextmanager
def in_process_app() -> Iterator[InProcess]:
    """moto (mock_aws) provisioned from infra/resources.json, the dev stage's environment,
    fresh app caches, the Chalice test client; stdout (the app's logs) goes to /dev/null."""
    with patched_environ(stage_env(), drop_prefixes=AWS_OVERRIDES), quiet_stdout():
        import boto3
        from chalice.test import Client
        from moto import mock_aws

        from local.provision import provision

        reset_app_caches()
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
                    yield InProcess(client, outputs)
        finally:
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
