"""Where an operator tool acts: a stage in AWS (boto3's default credentials and region) or
the local stack `make run` started (its emulator, from `.local/stack.json`). Clients are
made once per process, lazily, with explicit retries and timeouts; nothing names an
account or a region.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.core.aws import APP_NAME

#: Every client but Lambda's: standard retries (throttling aware), short timeouts.
CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 4},
    "connect_timeout": 3,
    "read_timeout": 20,
}
#: A synchronous Invoke waits for the handler: up to Lambda's 15-minute limit. One attempt:
#: botocore retrying an Invoke whose answer was lost would run the handler again unseen.
LAMBDA_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 1},
    "connect_timeout": 3,
    "read_timeout": 910,
}
#: The emulator accepts any credentials.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


@dataclass
class Target:
    """A stage, in AWS (`local` None) or on a running local stack (`local`: its stack.json)."""

    stage: str
    local: dict[str, Any] | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, service: str) -> Any:
        """The one client of `service` for this target."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make(service)
            return self._clients[service]

    def _make(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(**(LAMBDA_CONFIG if service == "lambda" else CLIENT_CONFIG))
        if self.local is None:
            return boto3.session.Session().client(service, config=config)
        return boto3.session.Session().client(
            service,
            config=config,
            endpoint_url=self.local["emulator_url"],
            region_name=self.local["region"],
            **LOCAL_CREDENTIALS,
        )

    def name(self, suffix: str) -> str:
        """A resource's name in this stage: `serverless-app-<stage>-<suffix>`."""
        return f"{APP_NAME}-{self.stage}-{suffix}"

    def describe(self) -> str:
        if self.local is not None:
            return f"stage {self.stage} on the local stack (emulator {self.local['emulator_url']})"
        sts = self.client("sts")
        account = sts.get_caller_identity()["Account"]
        return f"stage {self.stage} in AWS account {account}, {sts.meta.region_name}"


def local_target(stage: str, state_dir: Path) -> Target:
    """The running local stack's stage; LookupError if none runs, or it runs another stage."""
    from local.stack import running_state

    state = running_state(state_dir, quiet=True)
    if state is None:
        raise LookupError("No local stack is running: start one with `make run` first.")
    if state.get("stage") != stage:
        raise LookupError(f"The local stack runs stage {state.get('stage')!r}, not {stage!r}.")
    return Target(stage, state)
