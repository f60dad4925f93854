"""Client-credentials tokens for tests, from the emulator's own token endpoint code
(`local/oauth2.py`) run in process against moto's pool."""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import boto3

FORM = "application/x-www-form-urlencoded"


def client_secret(pool_id: str, client_id: str) -> str:
    described = boto3.client("cognito-idp").describe_user_pool_client(
        UserPoolId=pool_id, ClientId=client_id
    )
    return str(described["UserPoolClient"]["ClientSecret"])


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def machine_token(outputs: dict[str, str], scope: str | None = None) -> str:
    """An access token of the stack's telemetry producers' client (`TelemetryMachineClient`)."""
    from local import oauth2

    client_id = outputs["TelemetryMachineClientId"]
    secret = client_secret(outputs["UserPoolId"], client_id)
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    answer: dict[str, Any] = oauth2.issue(
        FORM, basic(client_id, secret), urllib.parse.urlencode(form)
    )
    return str(answer["access_token"])
