"""What the plain `chalice` commands do with this app: work, or stop at once with one line.

`app.py` calls `check_command()` when the chalice CLI loads it (never in Lambda, where the
CLI is not installed). The app needs more than Chalice alone gives it:

- `chalice package` would write a template without the app's tables, queues and topics, for
  the runtime of whatever Python runs it and with a placeholder stream ARN; `chalice deploy`
  would deploy functions without their resources and without the event-source settings of
  infra/functions.json (partial batch failures, failure queues). Both stop and name
  `make package` / `make deploy`, which run the same commands through infra/chalice_cli.py
  with everything they need (that wrapper calls `allow_deploy_commands()`).
- `chalice local` serves the routes, as Chalice documents, against AWS. With a `make run`
  stack running on this machine it uses that stack's emulator (whose event runtime delivers
  the events the routes cause); with a region and credentials configured it uses AWS; with
  neither it stops, since every request would fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMANDS = ("package", "deploy", "local")
_deploy_commands_allowed = False


def allow_deploy_commands() -> None:
    """Called by infra/chalice_cli.py: this process packages or deploys the whole app."""
    global _deploy_commands_allowed
    _deploy_commands_allowed = True


def chalice_command(argv: list[str]) -> str | None:
    """The chalice subcommand being run (`chalice --debug local --port 8001` -> "local")."""
    if Path(argv[0]).name != "chalice":
        return None
    return next((word for word in argv[1:] if word in COMMANDS), None)


def check_command(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    command = chalice_command(argv)
    if command is not None:
        _set_stage_environment(_option(argv, "--stage") or "dev")
    if command in ("package", "deploy") and not _deploy_commands_allowed:
        _stop(
            f"`chalice {command}` alone leaves out this app's resources and event-source "
            f"settings: run `make {command} STAGE=<stage>` (README, 'Deploy to AWS')."
        )
    elif command == "local":
        _prepare_chalice_local(argv)


def _set_stage_environment(stage: str) -> None:
    """Chalice sets only the stage-wide variables while it loads the app; app.py's decorators
    name every function's event source, and `chalice local` runs every route in one process:
    both need all the stage's names (each function is still deployed with only its own)."""
    from infra.wiring import stage_environment

    try:
        environment = stage_environment(stage)
    except KeyError:
        return  # an unknown stage: Chalice itself says so
    for name, value in environment.items():
        os.environ.setdefault(name, value)


def _prepare_chalice_local(argv: list[str]) -> None:
    """Point `chalice local` at the running `make run` emulator, if there is one and the
    developer has not chosen an endpoint; else insist on a region to reach AWS with."""
    from local.gateway import emulate_api_gateway

    emulate_api_gateway()  # API Gateway's error shapes, and a 401 instead of a dropped request
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    state = _running_stack()
    if state is not None:
        port = _option(argv, "--port") or "8000"
        if state["api_url"].endswith(f":{port}"):
            _stop(
                f"`make run` already serves the API on port {port}: "
                "run `chalice local --port 8001` to use its emulator beside it."
            )
        from local.stack import point_at_emulator

        point_at_emulator(state["emulator_url"])
        print(f"chalice local: using the emulator of `make run` at {state['emulator_url']}")
        return
    import boto3

    if boto3.session.Session().region_name is None:
        _stop(
            "`chalice local` needs the AWS resources of a stage and finds neither an emulator "
            "nor a region: run `make run` (the whole system locally), then, for auto-reload, "
            "`chalice local --port 8001` beside it."
        )


def _running_stack() -> dict | None:
    from local.provision import STATE_DIR
    from local.stack import running_state

    return running_state(STATE_DIR, quiet=True)


def _option(argv: list[str], name: str) -> str | None:
    for position, word in enumerate(argv):
        if word == name and position + 1 < len(argv):
            return argv[position + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def _stop(message: str) -> None:
    """One line and exit 2. `os._exit`, because `chalice local` loads the app in a thread of
    its reloader's worker, where SystemExit would end only that thread."""
    print(message, file=sys.stderr, flush=True)
    os._exit(2)
