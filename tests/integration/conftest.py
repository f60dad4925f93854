"""Starts the real local stack (`python -m local.stack`) once per session, on free ports and
its own state directory, so it never collides with a `make run` the developer has open."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.stack import free_port, spawn

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("stack")
    # Its output goes to a file: a pipe nobody reads fills up and then blocks the server.
    log_path = state_dir / "stack.log"
    log = log_path.open("w")
    process = spawn(state_dir, free_port(), free_port(), stdout=log, stderr=subprocess.STDOUT)
    state_file = state_dir / "stack.json"
    started = time.monotonic()
    state: dict[str, Any] | None = None
    while time.monotonic() - started < STARTUP_TIMEOUT_S and process.poll() is None:
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text())
                requests.get(state["api_url"] + "/users?limit=1", timeout=2)
                break
            except (ValueError, requests.ConnectionError):
                pass
        time.sleep(0.1)
    if state is None or process.poll() is not None:
        process.kill()
        pytest.fail(f"the local stack did not start:\n{log_path.read_text()[-4000:]}")
    state["ready_seconds"] = round(time.monotonic() - started, 2)
    state["state_dir"] = state_dir
    state["process"] = process
    yield state
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the local stack did not stop on SIGINT within 20 s")
    finally:
        log.close()


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
