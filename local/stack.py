"""`make run`: the whole system on this machine, no AWS account and no Docker.

1. starts the AWS emulator (moto server, `local.emulator`) on 127.0.0.1 in its own process;
2. creates the app's resources in it from infra/resources.json, as CloudFormation;
3. serves the Chalice app on 127.0.0.1 with the stage's environment, its AWS clients pointed
   at the emulator through AWS_ENDPOINT_URL, with the event runtime beside it, and Lambda's
   Invoke API for the emulator to run the app's functions (state machines' tasks, `aws lambda
   invoke`); seeds the catalog (`local.seed`);
4. serves the local console (`local.console`: the system at work, in a browser);
5. writes what a client needs to `.local/stack.json`, prints it, and on Ctrl-C (or SIGTERM)
   stops everything and removes that file.

`chalice local`'s own server stalls keep-alive clients on Nagle's algorithm and queues only 5
connections; the server class here sets TCP_NODELAY and a 128-connection backlog.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from chalice.local import LocalDevServer

from infra.paths import PROJECT_DIR
from local import faults_cli
from local.console import start_console
from local.docs import DocsRequestHandler
from local.events.invoke import InvokeEndpoint, app_functions
from local.provision import STATE_DIR, create_functions, provision, stage_environment
from local.seed import seed_catalog
from local.server import FastLocalServer
from local.token import PASSWORDS_FILE

HOST = "127.0.0.1"
EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different ports on 127.0.0.1 that nothing listens on right now (each probe is
    held until all are chosen: two `free_port()` calls in a row may give the same one)."""
    with contextlib.ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((HOST, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def spawn(
    state_dir: Path,
    api_port: int,
    emulator_port: int,
    stage: str = "dev",
    faults: str | None = None,
    fault_kinds: str | None = None,
    fault_seed: int | None = None,
    console_port: int = 0,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """Start a stack in a child process (tests, benchmarks); it is ready once
    `<state_dir>/stack.json` exists, and stops on SIGINT. AWS_* variables of the caller are
    not passed on, so the child can only reach its own emulator. `faults`, `fault_kinds`,
    `fault_seed`: its fault plan (`local.faults`); None: LOCAL_FAULTS (and the others) of
    this environment, if set. `console_port`: the console's (0: any free one; its URL is
    stack.json's `console_url`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    command = [sys.executable, "-m", "local.stack", "--stage", stage]
    command += ["--api-port", str(api_port), "--emulator-port", str(emulator_port)]
    command += ["--state-dir", str(state_dir), "--console-port", str(console_port)]
    for option, value in (("--faults", faults), ("--fault-kinds", fault_kinds),
                          ("--fault-seed", fault_seed)):  # fmt: skip
        if value is not None:
            command += [option, str(value)]
    return subprocess.Popen(command, cwd=PROJECT_DIR, env=env, **popen)


def interrupt(process: subprocess.Popen[Any], grace_s: float = 20, group: bool = True) -> bool:
    """Stop a child as Ctrl-C would: SIGINT, and SIGKILL if it still runs after `grace_s`
    seconds, to its whole process group with `group` (a stack started in a session of its
    own: its emulator dies with it). True if it had ended or SIGINT alone ended it."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
        return True
    except subprocess.TimeoutExpired:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=5)
        return False


class AlreadyRunning(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run serverless-app locally.")
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("API_PORT", 8000)))
    parser.add_argument(
        "--emulator-port", type=int, default=int(os.environ.get("EMULATOR_PORT", 5000))
    )
    parser.add_argument(
        "--console-port",
        type=int,
        default=int(os.environ.get("CONSOLE_PORT", 8900)),
        help="the local console's port (0: any free one)",
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    faults_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    stages = list(json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())["stages"])
    if args.stage not in stages:
        print(f"Unknown stage {args.stage!r}: .chalice/config.json has {stages}.", file=sys.stderr)
        return 2
    try:
        faults = faults_cli.chosen(args)
    except ValueError as exc:
        print(f"FAULTS: {exc}", file=sys.stderr)
        return 2
    try:
        return run(args.stage, args.api_port, args.emulator_port, args.state_dir, faults,
                   args.console_port)  # fmt: skip
    except AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return 1


def run(
    stage: str,
    api_port: int,
    emulator_port: int,
    state_dir: Path,
    faults: dict[str, Any] | None = None,
    console_port: int = 0,
) -> int:
    """`faults`: the fault plan (`main`'s), given to the emulator and armed once the stack
    is up: provisioning and the catalog's seeding run the app's code and are never faulted."""
    started = time.perf_counter()
    # Hand the GIL over sooner (default 5 ms): shorter waits behind busy threads at high
    # concurrency (p99 at 50 clients 270 -> 200 ms measured here).
    sys.setswitchinterval(0.001)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "stack.json"
    if api_port == emulator_port:
        raise AlreadyRunning(f"The API and the emulator need two ports; both are {api_port}.")
    lock = _single_instance_lock(state_dir / "stack.lock", state_file)
    # What the previous stack's users signed in with: its emulator, and they, are gone.
    passwords = state_dir / PASSWORDS_FILE
    passwords.unlink(missing_ok=True)
    for port, what in ((api_port, "API"), (emulator_port, "emulator"), (console_port, "console")):
        if port and not _port_free(port):
            raise AlreadyRunning(
                f"Port {port} ({what}) on {HOST} is in use by another program. "
                f"Stop it, or choose another port: make run API_PORT=8001 EMULATOR_PORT=5001"
            )

    emulator_url = f"http://{HOST}:{emulator_port}"
    # Where the emulator sends Lambda invocations (the Invoke API, state machines' tasks):
    # bound now, so the emulator can be told; it answers once the app is loaded.
    lambda_endpoint = InvokeEndpoint(HOST)
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.emulator",
            "--host",
            HOST,
            "--port",
            str(emulator_port),
            "--lambda-endpoint",
            lambda_endpoint.url,
            "--arm-faults-later",
        ],
        cwd=PROJECT_DIR,
        env={**os.environ, **faults_cli.emulator_environment(faults)},
        preexec_fn=_die_with_parent,
        # Its own process group: a Ctrl-C or a SIGTERM to the whole group reaches only this
        # process, which stops the event runtime's pollers before it stops the emulator
        # (else they would log a traceback each for the vanished emulator).
        process_group=0,
    )
    server: LocalDevServer | None = None
    events: Any = None
    console: Any = None
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        _wait_until_up(f"{emulator_url}/moto-api/data.json", emulator, timeout=30)
        point_at_emulator(emulator_url)

        import boto3

        outputs = provision(stage, boto3.client("cloudformation", endpoint_url=emulator_url))
        # The stream's ARN exists only now; the app names it when Chalice loads it (app.py).
        os.environ["USERS_TABLE_STREAM_ARN"] = outputs["UsersTableStreamArn"]
        server = _api_server(stage, api_port)
        events = _event_runtime(server, stage)
        functions = app_functions(server.app_object)
        create_functions(stage, functions, boto3.client("lambda"), boto3.client("iam"))
        lambda_endpoint.serve(events, stage)
        products = seed_catalog()
        if faults and faults["spec"]:
            faults_cli.arm(emulator_url)
        state = {
            "stage": stage,
            "api_url": f"http://{HOST}:{api_port}",
            "console_url": "",
            "emulator_url": emulator_url,
            "lambda_endpoint": lambda_endpoint.url,
            "region": EMULATOR_CREDENTIALS["AWS_REGION"],
            "resources": outputs,
            "environment": stage_environment(stage),
            "state_dir": str(state_dir),
            "pid": os.getpid(),
            "emulator_pid": emulator.pid,
            "faults": faults or {"plan": "no faults"},
        }
        console = start_console(state, events, HOST, console_port)
        state["console_url"] = console.url
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        print(json.dumps(state, indent=2))
        catalog = ", ".join(f"{p['sku']} ({p['available']} at {p['unit_amount']} cents)"
                            for p in products)  # fmt: skip
        print(f"\nCatalog: {catalog}", flush=True)
        print(f"Faults: {state['faults']['plan']}", flush=True)
        print(
            f"\nReady in {time.perf_counter() - started:.1f} s: API {state['api_url']}, "
            f"docs {state['api_url']}/docs, console {console.url}, emulator {emulator_url} "
            f"(state in {state_file}). "
            "Ctrl-C stops everything.\n"
            "Try: TOKEN=$(make -s token EMAIL=root@example.com ADMIN=1) && curl -s "
            f"'{state['api_url']}/users?limit=5' -H \"Authorization: Bearer $TOKEN\"",
            flush=True,
        )
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopping the local stack.", flush=True)
    finally:
        lambda_endpoint.stop()
        if console is not None:
            console.stop()
        if events is not None:
            events.stop()
        if server is not None:
            server.server.server_close()
        emulator.terminate()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
        state_file.unlink(missing_ok=True)
        passwords.unlink(missing_ok=True)
        lock.close()
    return 0


def point_at_emulator(emulator_url: str) -> None:
    """Send this process's AWS clients to the emulator and nowhere else: no profile,
    per-service endpoint or "ignore endpoint" setting of the developer's may send the app
    elsewhere, and no proxy may sit in between."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update({**EMULATOR_CREDENTIALS, "AWS_ENDPOINT_URL": emulator_url})
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = HOST


def _api_server(stage: str, port: int) -> LocalDevServer:
    """The app as `chalice local --stage <stage> --no-autoreload` builds it, on our server."""
    from chalice.cli import validate_routes
    from chalice.cli.factory import CLIFactory

    from local.gateway import emulate_api_gateway

    emulate_api_gateway()
    # Chalice applies only the stage-wide variables; this one process runs every function.
    for name, value in stage_environment(stage).items():
        os.environ.setdefault(name, value)
    factory = CLIFactory(project_dir=str(PROJECT_DIR), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    validate_routes(config.chalice_app.routes)
    return LocalDevServer(
        config.chalice_app,
        config,
        HOST,
        port,
        handler_cls=DocsRequestHandler,  # the app, and Swagger UI at /docs (local/docs.py)
        server_cls=FastLocalServer,
    )


def _die_with_parent() -> None:
    """In the emulator's process, before it starts: Linux ends it with SIGTERM when the
    stack's process dies, even by SIGKILL, so no emulator is left holding its port."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def use_stack_environment(state: dict[str, Any]) -> None:
    """Make this process see the running stack as its functions do: pointed at its emulator,
    with every function's names and settings (Chalice applies only the stage-wide ones; the
    app's decorators read the rest when it loads). For the commands that run the app's code
    against a stack (`make fire`, `make report`)."""
    point_at_emulator(state["emulator_url"])
    os.environ.update(state["environment"])


def running_state(state_dir: Path, quiet: bool = False) -> dict[str, Any] | None:
    """The stack.json of the stack running on `state_dir`, or None (after telling the user
    to start one, unless `quiet`): for the commands that talk to a running stack."""
    state_file = state_dir / "stack.json"
    if not state_file.exists() or not is_running(state_dir):
        if not quiet:
            print("No local stack is running: start one with `make run` first.", file=sys.stderr)
        return None
    return dict(json.loads(state_file.read_text()))


def is_running(state_dir: Path) -> bool:
    """Whether a stack holds `state_dir`'s lock (its stack.json is current, not stale)."""
    with (state_dir / "stack.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _event_runtime(server: LocalDevServer, stage: str) -> Any:
    """Deliver the app's events from the emulator to its handlers, in this process, as
    Lambda's event source mappings would: with the mappings' settings the deploy gives them."""
    import boto3

    from local.events import EventRuntime

    app = server.app_object
    events = EventRuntime(
        app,
        boto3.client,
        EMULATOR_CREDENTIALS["AWS_REGION"],
        report_batch_item_failures=partial_batch_handlers(app),
        stage=stage,
    )
    events.start()
    return events


def partial_batch_handlers(app: Any) -> set[str]:
    """The handlers whose event source mapping has ReportBatchItemFailures in AWS: Chalice
    never sets it; infra/functions.json does (both deploy paths apply that file)."""
    from chalice.utils import to_cfn_resource_name

    settings = json.loads((PROJECT_DIR / "infra" / "functions.json").read_text())["Resources"]
    reporting = {
        logical_id
        for logical_id, resource in settings.items()
        for source in resource.get("Properties", {}).get("Events", {}).values()
        if "ReportBatchItemFailures"
        in source.get("Properties", {}).get("FunctionResponseTypes", [])
    }
    return {s.name for s in app.event_sources if to_cfn_resource_name(s.name) in reporting}


def _single_instance_lock(lock_path: Path, state_file: Path) -> Any:
    handle = lock_path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        where = ""
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(state_file.read_text())
            where = f" (pid {state['pid']}, API {state['api_url']})"
        raise AlreadyRunning(
            f"A local stack is already running{where}. Use it, or stop it with Ctrl-C first."
        ) from None
    return handle


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the emulator did not answer at {url} within {timeout} s")


if __name__ == "__main__":
    sys.exit(main())
