"""`make fire JOB=sweep_abandoned_signups` on the running local stack: a sign-up made over
real HTTP and never confirmed loses its disabled identity and its record; a confirmed account
stays."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from infra.paths import PROJECT_DIR
from tests.integration.test_local_stack import PASSWORD, new_email, register

pytestmark = pytest.mark.integration


def fire(stack: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "local.fire", *args, "--state-dir", str(stack["state_dir"])]
    return subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_fire_sweeps_a_sign_up_nobody_confirmed(
    api: str, stack: dict[str, Any], emulator: Any
) -> None:
    assert "sweep_abandoned_signups" in fire(stack).stdout.split()  # `make fire` lists it
    idp, db = emulator("cognito-idp"), emulator("dynamodb")
    pool, table = stack["resources"]["UserPoolId"], stack["resources"]["UsersTableName"]
    email = new_email()
    body = {"email": email, "name": "Never Confirmed", "password": PASSWORD}
    assert requests.post(f"{api}/register", json=body, timeout=10).status_code == 202
    assert idp.admin_get_user(UserPoolId=pool, Username=email)["Enabled"] is False
    kept = register(api)

    # As if the schedule fired a day later: the code is long dead.
    at = (clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = fire(stack, "sweep_abandoned_signups", "--at", at)
    assert done.returncode == 0, done.stdout + done.stderr

    with pytest.raises(idp.exceptions.UserNotFoundException):
        idp.admin_get_user(UserPoolId=pool, Username=email)
    key = {"pk": {"S": f"SIGNUP#{email}"}}
    assert "Item" not in db.get_item(TableName=table, Key=key, ConsistentRead=True)
    assert idp.admin_get_user(UserPoolId=pool, Username=kept["email"])["Enabled"] is True
