"""Shared fixtures: an in-process moto with the app's resources, and the Chalice test client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.provision import FAKE_CREDENTIALS, PROJECT_DIR, provision, stage_environment

STAGE = "dev"

# Lambda sets a function's environment before its code is imported; so do the tests, whatever
# module a test file imports first. Fixtures below set it again for each test.
for _name, _value in stage_environment(STAGE).items():
    os.environ.setdefault(_name, _value)


def reset_app_caches() -> None:
    from chalicelib.core import aws
    from chalicelib.core.settings import get_settings
    from chalicelib.users import users_service

    get_settings.cache_clear()
    aws.reset_clients()
    users_service.cache_clear()


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

    with Client(app, stage_name=STAGE, project_dir=str(PROJECT_DIR)) as test_client:
        yield test_client
