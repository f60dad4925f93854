"""The real stack with faults in the app's AWS calls (`spawn(faults=...)`, `local.faults`): a
registration completes through them, and an outage of DynamoDB reaches the client as a 503
with Retry-After and the JSON error body, never a 500.

A stack of its own (its emulator's plan changes mid-test through `/_local/faults`), so the
session's stack stays fault-free for every other test."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.faults import CONTROL_PATH
from local.stack import free_ports, spawn
from tests.integration.conftest import EMULATOR_OF_API, stop, wait_until_ready

PASSWORD = "Corr3ct-Horse!"
#: Every service, 20% of calls, the kinds that answer at once (a timeout holds a call 11 s:
#: the local clients' read timeout, `chalicelib.core.aws`, is 10 s).
SPEC, KINDS, SEED = "0.2", "throttle,error,latency", 20261207


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("faulty-stack")
    log_path = state_dir / "stack.log"
    with log_path.open("w") as log:
        process = spawn(
            state_dir,
            *free_ports(2),
            faults=SPEC,
            fault_kinds=KINDS,
            fault_seed=SEED,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            state = wait_until_ready(process, state_dir)
            if state is None:
                pytest.fail(f"the faulty stack did not start:\n{log_path.read_text()[-4000:]}")
            EMULATOR_OF_API[state["api_url"]] = state["emulator_url"]
            yield {**state, "log": log_path}
        finally:
            stop(process)


def faults(stack: dict[str, Any], **changes: Any) -> dict[str, Any]:
    url = stack["emulator_url"] + CONTROL_PATH
    if changes:
        answer = requests.post(url, json=changes, timeout=5)
    else:
        answer = requests.get(url, timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def patiently(method: str, url: str, seen: list[int], **kwargs: Any) -> requests.Response:
    """A well-behaved client: a 503 is retried after its Retry-After; anything else is the
    answer. Every status is kept in `seen`."""
    for _ in range(20):
        response = requests.request(method, url, timeout=30, **kwargs)
        seen.append(response.status_code)
        if response.status_code != 503:
            return response
        assert response.headers["Retry-After"].isdigit()
        time.sleep(min(int(response.headers["Retry-After"]), 1) / 4)
    return response


def test_the_stack_prints_and_records_its_plan(faulty: dict[str, Any]) -> None:
    assert faulty["faults"]["spec"] == SPEC and faulty["faults"]["seed"] == SEED
    assert "every service 20%; kinds throttle,error,latency" in faulty["faults"]["plan"]
    assert f"Faults: {faulty['faults']['plan']}" in faulty["log"].read_text()
    state = faults(faulty)
    assert state["armed"] and state["default"] == 0.2


@pytest.fixture(scope="module")
def registered(faulty: dict[str, Any]) -> dict[str, Any]:
    """A user registered through the faults, signed in: statuses seen, headers, id."""
    from local.mailbox import wait_for_code
    from local.provision import emulator_client

    api, seen = faulty["api_url"], []
    email = f"faults-{time.time_ns()}@example.com"
    before = faults(faulty, reset=True)
    assert before["services"] == {}
    asked = patiently("POST", f"{api}/register", seen, json={"email": email, "name": "Faulty"})
    assert asked.status_code == 202, asked.text
    code = wait_for_code(faulty["emulator_url"], email, timeout=20)
    confirmed = patiently(
        "POST",
        f"{api}/register/confirm",
        seen,
        json={"email": email, "code": code, "password": PASSWORD},
    )
    assert confirmed.status_code == 201, confirmed.text
    user_id = confirmed.json()["user_id"]
    tokens = emulator_client(faulty, "cognito-idp").initiate_auth(
        ClientId=faulty["resources"]["UserPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    headers = {"Authorization": f"Bearer {tokens['AccessToken']}"}
    profile = patiently("GET", f"{api}/users/{user_id}", seen, headers=headers)
    assert profile.status_code == 200, profile.text
    assert profile.json()["email"] == email
    return {"seen": seen, "headers": headers, "user_id": user_id}


def test_a_registration_completes_through_faults(
    faulty: dict[str, Any], registered: dict[str, Any]
) -> None:
    assert 500 not in registered["seen"], registered["seen"]
    injected = faults(faulty)["services"]
    assert sum(s["throttle"] + s["error"] + s["latency"] for s in injected.values()) > 0, injected


def test_dynamodb_down_answers_503_with_retry_after(
    faulty: dict[str, Any], registered: dict[str, Any]
) -> None:
    url = f"{faulty['api_url']}/users/{registered['user_id']}"
    faults(faulty, faults="dynamodb=1", kinds="throttle,error", reset=True)
    try:
        started = time.perf_counter()
        response = requests.get(url, headers=registered["headers"], timeout=30)
        took = time.perf_counter() - started
    finally:
        faults(faulty, faults=SPEC, kinds=KINDS)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.text)
    assert body["error"]["code"] == "service_unavailable", body
    # The local clients' 3 attempts (`chalicelib.core.aws` "local" profile), all faulted.
    assert faults(faulty)["services"]["dynamodb"]["calls"] >= 3
    assert took < 10
