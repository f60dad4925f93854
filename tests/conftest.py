"""Shared fixtures: an in-process moto with the app's resources, and the Chalice test client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.paths import PROJECT_DIR
from local import athena as local_athena
from local.gateway import emulate_api_gateway
from local.inprocess import reset_app_caches, serve_moto_jwks
from local.provision import FAKE_CREDENTIALS, provision, stage_environment

STAGE = "dev"

# Lambda sets a function's environment before its code is imported; so do the tests, whatever
# module a test file imports first. Fixtures below set it again for each test.
for _name, _value in stage_environment(STAGE).items():
    os.environ.setdefault(_name, _value)
emulate_api_gateway()
local_athena.install()  # Athena runs queries (DuckDB), in process as in the emulator


@pytest.fixture
def stage_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The dev stage's environment and fake credentials, as Lambda would see them."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name == "AWS_PROFILE":
            monkeypatch.delenv(name)
    env = {**stage_environment(STAGE), **FAKE_CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_app_caches()
    return env


@pytest.fixture
def aws(stage_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """moto in-process, provisioned from infra/resources.json; yields the stack outputs."""
    with mock_aws():
        outputs = provision(STAGE, boto3.client("cloudformation"))
        yield outputs
    reset_app_caches()


@pytest.fixture
def client(aws: dict[str, str]) -> Iterator[Any]:
    from chalice.test import Client

    from app import app
    from chalicelib.core import aws as app_aws
    from tests.unit.iam_calls import Recorder, denied, watch

    recorder = Recorder()
    events = app_aws.session().events
    events.register("before-parameter-build", recorder.before_parameter_build)
    app_aws.reset_clients()  # clients copy the session's handlers when they are made
    try:
        with Client(app, stage_name=STAGE, project_dir=str(PROJECT_DIR)) as test_client:
            watch(test_client, recorder)
            yield test_client
    finally:
        events.unregister("before-parameter-build", recorder.before_parameter_build)
    region = app_aws.session().region_name or os.environ["AWS_DEFAULT_REGION"]
    refused = sorted(set(denied(recorder, region, "123456789012")))
    assert not refused, f"the function's policy does not allow: {refused}"


@pytest.fixture
def accounts(client: Any, aws: dict[str, str]) -> Iterator[Any]:
    """Users with real tokens from moto's pool; the authorizer reads moto's JWKS."""
    from tests.unit.api_helpers import Accounts

    restore = serve_moto_jwks()
    yield Accounts(client, aws)
    restore()


@pytest.fixture
def admin(accounts: Any) -> tuple[dict[str, Any], str]:
    return accounts.register(admin=True, email="admin@example.com", name="Admin")


@pytest.fixture
def api(client: Any, admin: tuple[dict[str, Any], str]) -> Any:
    """The API as an admin sees it (may do everything); `api.as_(token)` for anyone else."""
    from tests.unit.api_helpers import ApiClient

    return ApiClient(client, admin[1])
