"""The app client's sign-in flows per stage (issue 17, safe deploys): password sign-in
(USER_PASSWORD_AUTH, what `make token` uses) in dev only; SRP and refresh everywhere, as
CloudFormation resolves infra/resources.json and as the emulator's provisioning creates the
client from the same properties."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.deploy_api import resolve
from infra.paths import PROJECT_DIR
from local.provision import _create_cognito_resources

RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
STAGES = list(RESOURCES["Mappings"]["StageSettings"])
PASSWORD = "ALLOW_USER_PASSWORD_AUTH"
EVERYWHERE = {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}


def flows(stage: str) -> set[str]:
    client = RESOURCES["Resources"]["UserPoolClient"]["Properties"]
    return set(resolve(client["ExplicitAuthFlows"], stage, RESOURCES))


@pytest.mark.parametrize("stage", STAGES)
def test_password_sign_in_is_allowed_in_dev_only(stage: str) -> None:
    assert flows(stage) == (EVERYWHERE | {PASSWORD} if stage == "dev" else EVERYWHERE)


def test_no_other_client_allows_password_sign_in() -> None:
    resources = RESOURCES["Resources"]
    others = [v["Properties"] for k, v in resources.items()
              if v["Type"] == "AWS::Cognito::UserPoolClient" and k != "UserPoolClient"]  # fmt: skip
    assert others
    for stage in STAGES:
        for properties in others:
            assert PASSWORD not in resolve(
                properties.get("ExplicitAuthFlows", []), stage, RESOURCES
            )


@pytest.mark.parametrize("stage", ["dev", "staging"])
def test_the_emulator_creates_the_client_with_its_stages_flows(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    template: dict[str, Any] = json.loads(json.dumps(RESOURCES))
    with mock_aws():
        _create_cognito_resources(template, stage, boto3.client("cloudformation"))
        cognito = boto3.client("cognito-idp")
        [pool] = cognito.list_user_pools(MaxResults=10)["UserPools"]
        clients = cognito.list_user_pool_clients(UserPoolId=pool["Id"])["UserPoolClients"]
        [api] = [c for c in clients if c["ClientName"] == f"serverless-app-{stage}-api"]
        client = cognito.describe_user_pool_client(UserPoolId=pool["Id"], ClientId=api["ClientId"])
    assert set(client["UserPoolClient"]["ExplicitAuthFlows"]) == flows(stage)
