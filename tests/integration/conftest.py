"""Starts the real local stack (`python -m local.stack`) once per session, on free ports and
its own state directory, so it never collides with a `make run` the developer has open."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.stack import free_ports, spawn
from local.stack import interrupt as stop

STARTUP_TIMEOUT_S = 60


def start_stack(state_dir: Path, api_port: int, emulator_port: int) -> subprocess.Popen[str]:
    return spawn(
        state_dir,
        api_port,
        emulator_port,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


#: The emulator of each running stack, by its API's URL (helpers that only get the API's URL,
#: such as `register`, read a mailed code there).
EMULATOR_OF_API: dict[str, str] = {}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("stack")
    # Its output goes to a file: a pipe nobody reads fills up and then blocks the server.
    log_path = state_dir / "stack.log"
    with log_path.open("w") as log:
        process = spawn(
            state_dir,
            *free_ports(2),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            state = wait_until_ready(process, state_dir)
            if state is None:
                pytest.fail(f"the local stack did not start:\n{log_path.read_text()[-4000:]}")
            EMULATOR_OF_API[state["api_url"]] = state["emulator_url"]
            yield {**state, "state_dir": state_dir, "process": process}
        finally:
            if not stop(process):
                pytest.fail("the local stack did not stop on SIGINT within 20 s")


def wait_until_ready(process: subprocess.Popen[Any], state_dir: Path) -> dict[str, Any] | None:
    """The stack's state once its API answers; None if it exits or times out first."""
    state_file = state_dir / "stack.json"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text())
                if requests.get(state["api_url"] + "/health", timeout=2).status_code == 200:
                    return dict(state)
            except (ValueError, KeyError, requests.RequestException):
                pass
        time.sleep(0.1)
    return None


@pytest.fixture(scope="session")
def api(stack: dict[str, Any]) -> str:
    return str(stack["api_url"])


@pytest.fixture(scope="session")
def emulator(stack: dict[str, Any]) -> Any:
    """boto3 clients against the stack's emulator."""
    from local.provision import emulator_client

    return lambda service: emulator_client(stack, service)


@pytest.fixture(scope="session")
def token_for(stack: dict[str, Any]) -> Any:
    """A real token from the emulator's user pool, as `make token` makes it."""
    from local.token import issue_token

    return lambda email, admin=False: issue_token(stack, email, admin, id_token=False)


@pytest.fixture(scope="session")
def admin_headers(token_for: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for('it-admin@example.com', admin=True)}"}
