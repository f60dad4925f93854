"""What the event runtime's tests share: the emulator in a process of its own, moto clients
(in process or that emulator), and a runtime started for some fixture handlers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto import mock_aws

from infra.paths import PROJECT_DIR
from local.events.core import EventRuntime, Invocation
from local.stack import free_port
from tests.fixtures import event_app

REGION = "us-east-1"
#: botocore sends DynamoDB Streams calls that name a stream ARN to an account endpoint
#: (`<account>.streams-ddb...`), which moto in process does not serve ("Not yet implemented").
IN_PROCESS = Config(account_id_endpoint_mode="disabled")

Client = Callable[[str], Any]


@contextlib.contextmanager
def emulator(lambda_endpoint: str | None = None) -> Iterator[str]:
    """The local stack's emulator (moto server under waitress) in a process of its own;
    `lambda_endpoint`: where it sends Lambda invocations (`--lambda-endpoint`), as the stack
    tells it."""
    port = free_port()
    command = [sys.executable, "-m", "local.emulator", "--port", str(port)]
    if lambda_endpoint is not None:
        command += ["--lambda-endpoint", lambda_endpoint]
    process = subprocess.Popen(command, cwd=PROJECT_DIR)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/data.json", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def fixture_aws(where: str = "in-process") -> Iterator[Client]:
    """Clients of a fresh moto: in process, or ("emulator") in the local stack's emulator
    process; the fixture app's records are reset."""
    with contextlib.ExitStack() as stack:
        if where == "emulator":
            url = stack.enter_context(emulator())

            def client(service: str) -> Any:
                return boto3.client(service, region_name=REGION, endpoint_url=url)
        else:
            stack.enter_context(mock_aws())

            def client(service: str) -> Any:
                return boto3.client(service, region_name=REGION, config=IN_PROCESS)

        event_app.reset()
        yield client


@dataclass
class Run:
    runtime: EventRuntime
    seen: list[Invocation] = field(default_factory=list)
    #: runtime.checkpoints as each invocation left them
    checkpoints: list[dict[tuple[str, str, str], str]] = field(default_factory=list)

    def record(self, invocation: Invocation) -> None:
        self.checkpoints.append(dict(self.runtime.checkpoints))
        self.seen.append(invocation)

    def checkpoint(self, handler: str) -> dict[str, str]:
        """shard id -> checkpoint, of `handler`."""
        return {
            key[2]: number for key, number in self.runtime.checkpoints.items() if key[0] == handler
        }

    def outcomes(self, source: str) -> list[str]:
        return [i.outcome for i in list(self.seen) if i.source == source]


def runtime_starter(aws_client: Client, fast: dict[str, Any]) -> Iterator[Callable[..., Run]]:
    """For a fixture: starts the runtime for some of the fixture app's handlers (`fast`: quick
    retry and poll settings); stops every runtime it started afterwards."""
    runs: list[Run] = []

    def start_runtime(
        *handlers: str, client: Client | None = None, ready: bool = True, **options: Any
    ) -> Run:
        """`options`: more of EventRuntime's, such as `report_batch_item_failures`."""
        runtime = EventRuntime(
            event_app.app, client or aws_client, REGION, handlers=handlers, **{**fast, **options}
        )
        run = Run(runtime)
        runtime._on_invocation = run.record
        runs.append(run)
        runtime.start()
        if ready:
            assert runtime.wait_until_ready(10)
        return run

    yield start_runtime
    for run in runs:
        run.runtime.stop()
