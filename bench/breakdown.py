"""Where one warm `GET /users/{id}` spends its time, in process, with AWS stubbed, phase by
phase in microseconds: the function (what Lambda bills) apart from the local server (never
deployed).

It runs in a fresh interpreter (`python -m bench.breakdown --child OUT`), so nothing another
benchmark loaded or warmed counts. The app runs against moto in process (bench.inprocess)
for set-up only; then the GetItem is answered by a botocore `before-send` stub (the item moto
returned), so botocore still serializes, signs and parses, but no emulator runs. Paths, timed
in interleaved blocks:

- function: the authorizer's handler (a cached token) plus the API handler, each called with
  the event API Gateway would send (captured once from the local gateway);
- authorizer, first sight of a token: its handler with the token cache emptied first (the
  RS256 check and the claims);
- test client: `chalice.test.Client` (Chalice's LocalGateway building the events, plus the
  function);
- local server: `local/server.py` on a free port in this process, one keep-alive
  http.client.

The app's own overhead is a path's time less the stubbed GetItem alone. Phases come from a
second pass with timers on each stage (each costs about a microsecond): wall time on the
function's thread, CPU time of the server's thread for the local server (its waits for the
next request are not its cost).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import Result, median
from bench.stack import HOST

#: The issue's goal: the app's own work per warm request, authorizer included.
TARGET_OVERHEAD_S = 0.001


class StageTimer:
    """Wraps callables to add up their time per stage name (`clock`: perf_counter for wall
    time, thread_time for the calling thread's CPU)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = clock
        self._undo: list[Callable[[], None]] = []

    def timed(self, original: Callable[..., Any], stage: str) -> Callable[..., Any]:
        clock, seconds = self._clock, self.seconds
        seconds.setdefault(stage, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[stage] += clock() - started

        return timed

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)
        had_own = attribute in vars(owner) if hasattr(owner, "__dict__") else True
        setattr(owner, attribute, self.timed(original, stage))

        def undo() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        self._undo.append(undo)

    def wrap_middleware(self, app: Any, name: str, stage: str) -> None:
        """The app's middleware function called `name` (Chalice keeps them in a list)."""
        handlers = app.middleware_handlers
        index = next(i for i, (f, _) in enumerate(handlers) if f.__name__ == name)
        original = handlers[index]
        handlers[index] = (self.timed(original[0], stage), original[1])
        self._undo.append(lambda: handlers.__setitem__(index, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


@contextmanager
def stubbed_get_item(dynamodb: Any, table: str, key: dict[str, Any]) -> Iterator[None]:
    """Answer GetItem from this process (the item moto returned) instead of moto."""
    from botocore.awsrequest import AWSResponse
    from moto.core.models import botocore_stubber

    body = json.dumps({"Item": dynamodb.get_item(TableName=table, Key=key)["Item"]}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "stub"}

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body

    def answer(request: Any, **_: Any) -> Any:
        return AWSResponse(request.url, 200, headers, Raw())

    event = "before-send.dynamodb.GetItem"
    dynamodb.meta.events.register_first(event, answer)
    botocore_stubber.enabled = False  # else moto still runs (every handler is called)
    try:
        yield
    finally:
        botocore_stubber.enabled = True
        dynamodb.meta.events.unregister(event, answer)


def _capture_events(app: Any, get: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The authorizer's and the API handler's events for one request through LocalGateway."""
    from chalice.app import Chalice, ChaliceAuthorizer

    captured: dict[str, Any] = {}
    app_call, auth_call = Chalice.__call__, ChaliceAuthorizer.__call__

    def on_app(self: Any, event: Any, context: Any) -> Any:
        captured["api"] = copy.deepcopy(event)
        return app_call(self, event, context)

    def on_auth(self: Any, event: Any, context: Any) -> Any:
        captured["auth"] = copy.deepcopy(event)
        return auth_call(self, event, context)

    Chalice.__call__, ChaliceAuthorizer.__call__ = on_app, on_auth  # type: ignore[method-assign]
    try:
        get()
    finally:
        Chalice.__call__, ChaliceAuthorizer.__call__ = app_call, auth_call  # type: ignore[method-assign]
    return captured["auth"], captured["api"]


@contextmanager
def local_server(app: Any, config: Any) -> Iterator[int]:
    """local/server.py serving the app on a free port, in a thread of this process."""
    from chalice.local import LocalDevServer

    from local.server import FastLocalServer, FramingRequestHandler
    from local.stack import free_port

    port = free_port()
    server = LocalDevServer(
        app, config, HOST, port, handler_cls=FramingRequestHandler, server_cls=FastLocalServer
    )
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(5)


def _keep_alive_client(port: int, path: str, headers: dict[str, str]) -> Callable[[], None]:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=10)

    def get() -> None:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"local server: HTTP {response.status}")

    return get


def _time_blocks(paths: dict[str, Callable[[], Any]], rounds: int, block: int) -> dict[str, float]:
    """Median seconds per call of each path, measured in interleaved blocks."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    perf = time.perf_counter
    for r in range(rounds):
        names = list(paths)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = paths[name]
            for _ in range(block):
                started = perf()
                fn()
                times[name].append(perf() - started)
    return {name: median(values) for name, values in times.items()}


def measure(quick: bool) -> dict[str, Any]:
    """The measurement itself (in the child process); figures in seconds."""
    from bench.breakdown_stages import function_stages, server_stages
    from bench.inprocess import expect, in_process_app

    rounds, block, warmup = (6, 50, 100) if quick else (20, 100, 300)
    with in_process_app() as env:
        from chalice.local import LambdaContext

        import app as app_module
        from chalicelib.auth import authorizer as auth_module
        from chalicelib.core import aws
        from chalicelib.users import USERS_TABLE
        from chalicelib.users.repository import user_key

        app = app_module.app
        user_id = env.register("breakdown@example.com")["user_id"]
        path = f"/users/{user_id}"
        token = env.http._auth["Authorization"]
        dynamodb = aws.client("dynamodb")
        table, key = USERS_TABLE.name, {"pk": {"S": user_key(user_id)}}

        def via_test_client() -> None:
            response = env.http.get(path)
            if response.status_code != 200:
                expect(response, 200, f"GET {path}")

        auth_event, api_event = _capture_events(app, via_test_client)
        lambda_context = LambdaContext("api_handler", 128)
        tokens = auth_module.verifier()

        def authorizer() -> None:
            app_module.cognito_jwt(auth_event, lambda_context)

        def authorizer_new_token() -> None:
            tokens.clear()
            app_module.cognito_jwt(auth_event, lambda_context)

        def function() -> None:
            authorizer()
            response = app(api_event, lambda_context)
            if response["statusCode"] != 200:
                raise RuntimeError(f"function: {response['statusCode']} {response['body']}")

        def get_item() -> None:
            dynamodb.get_item(TableName=table, Key=key)

        config = env.client._chalice_config
        with stubbed_get_item(dynamodb, table, key), local_server(app, config) as port:
            over_http = _keep_alive_client(port, path, {"Authorization": token})
            paths = {
                "get_item": get_item,
                "authorizer": authorizer,
                "authorizer_new_token": authorizer_new_token,
                "function": function,
                "test_client": via_test_client,
                "local_server": over_http,
            }
            for fn in paths.values():
                for _ in range(warmup):
                    fn()
            medians = _time_blocks(paths, rounds, block)
            n = rounds * block
            function_s = function_stages(app, dynamodb, function, n)
            server_s = server_stages(app, over_http, n)
    return {"medians_s": medians, "function_stages_s": function_s, "server_stages_s": server_s}


def run(quick: bool) -> Result:
    """Measure in a fresh interpreter, then report."""
    from infra.paths import PROJECT_DIR

    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "stderr.log"
        command = [sys.executable, "-m", "bench.breakdown", "--child", str(out)]
        with log.open("wb") as stderr:  # the local server's request lines, among others
            done = subprocess.run(
                command + (["--quick"] if quick else []),
                cwd=PROJECT_DIR,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=600,
                check=False,
            )
        if done.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"bench.breakdown child exited with {done.returncode}:\n{tail}")
        figures = json.loads(out.read_text())
    from bench.breakdown_stages import report

    return report(figures, quick, TARGET_OVERHEAD_S)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--child":
        print("usage: python -m bench.breakdown --child OUT [--quick]", file=sys.stderr)
        return 2
    figures = measure(quick="--quick" in argv)
    Path(argv[1]).write_text(json.dumps({**figures, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
