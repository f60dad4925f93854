"""Where one warm `GET /users/{id}` spends its time, in process, with AWS stubbed.

The app runs against moto in process (bench.inprocess) for set-up only; then the GetItem is
answered by a botocore `before-send` stub (the same JSON moto returned), so botocore still
serializes, signs and parses, but no emulator runs. Three paths, interleaved in blocks:

- function: what Lambda would bill, the authorizer's handler (a cached token) plus the API
  handler, each called with the event API Gateway would send (captured once from the local
  gateway);
- test client: `chalice.test.Client` (Chalice's LocalGateway building the events, plus the
  function);
- local server: `local/server.py` on a free port in this process, one keep-alive
  http.client (its socket I/O, HTTP parsing and the client's share included).

The app's own overhead is the function's time less the stubbed GetItem alone. Stages inside
them are timed with perf_counter wrappers in a separate pass (the wrappers cost a little).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench import Result, median, ms
from bench.inprocess import expect, in_process_app
from bench.stack import HOST

#: The issue's goals, as ratios or budgets measured in this run.
TARGET_OVERHEAD_S = 0.001


class StageTimer:
    """Wraps callables to add up their wall time per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)
        perf = time.perf_counter
        seconds = self.seconds
        seconds.setdefault(stage, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = perf()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[stage] += perf() - started

        had_own = attribute in vars(owner) if hasattr(owner, "__dict__") else True
        setattr(owner, attribute, timed)

        def undo() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        self._undo.append(undo)

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


def run(quick: bool) -> Result:
    rounds, block, warmup = (6, 50, 100) if quick else (20, 100, 300)
    result = Result("breakdown", "One warm GET /users/{id}, AWS stubbed: function vs local server")
    with in_process_app() as env:
        from chalice.app import Chalice, ChaliceAuthorizer, RestAPIEventHandler
        from chalice.local import LambdaContext, LocalGateway, LocalGatewayAuthorizer

        import app as app_module
        from chalicelib.auth import authorizer as auth_module
        from chalicelib.core import aws
        from chalicelib.core import http as http_module
        from chalicelib.users import USERS_TABLE
        from chalicelib.users.repository import user_key
        from local.server import FramingRequestHandler

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

        def function() -> None:
            app_module.cognito_jwt(auth_event, lambda_context)
            response = app(api_event, lambda_context)
            if response["statusCode"] != 200:
                raise RuntimeError(f"function: {response['statusCode']} {response['body']}")

        def get_item() -> None:
            dynamodb.get_item(TableName=table, Key=key)

        def authorizer() -> None:
            app_module.cognito_jwt(auth_event, lambda_context)

        config = env.client._chalice_config
        with stubbed_get_item(dynamodb, table, key), local_server(app, config) as port:
            over_http = _keep_alive_client(port, path, {"Authorization": token})
            paths = {
                "get_item": get_item,
                "authorizer": authorizer,
                "function": function,
                "test_client": via_test_client,
                "local_server": over_http,
            }
            for fn in paths.values():
                for _ in range(warmup):
                    fn()
            medians = _time_blocks(paths, rounds, block)

            # Stages, in one pass each over the function and the local server (wrappers on).
            timer = StageTimer()
            route = app.routes["/users/{user_id}"]["GET"]
            timer.wrap(route, "view_function", "view")
            timer.wrap(dynamodb, "get_item", "get_item")
            timer.wrap(http_module, "_record", "log_and_metrics")
            timer.wrap(auth_module, "authorize", "authorize")
            timer.wrap(ChaliceAuthorizer, "__call__", "authorizer_handler")
            timer.wrap(Chalice, "__call__", "api_handler")
            timer.wrap(RestAPIEventHandler, "__call__", "rest_handler")
            timer.wrap(LocalGateway, "handle_request", "gateway")
            timer.wrap(LocalGatewayAuthorizer, "authorize", "gateway_authorizer")
            timer.wrap(FramingRequestHandler, "parse_request", "http_parse")
            timer.wrap(FramingRequestHandler, "_generic_handle", "server_handle")
            timer.wrap(FramingRequestHandler, "_handle_one_request", "server_request")
            n = rounds * block
            try:
                for _ in range(n):
                    over_http()
            finally:
                timer.restore()
            staged = {k: v / n for k, v in timer.seconds.items()}

    return _report(result, medians, staged, quick)


def _report(result: Result, medians: dict[str, float], s: dict[str, float], quick: bool) -> Result:
    overhead = medians["function"] - medians["get_item"]
    server_cost = medians["local_server"] - medians["function"]
    app_handler = s["api_handler"]
    stages = {
        "function: authorizer handler (cached token)": s["authorizer_handler"],
        "function: Chalice event handling, routing, middleware": app_handler
        - s["view"]
        - s["log_and_metrics"],
        "function: log line + EMF metrics": s["log_and_metrics"],
        "function: view (service, principal, validation)": s["view"] - s["get_item"],
        "function: boto3 GetItem (stubbed: serialize, sign, parse)": s["get_item"],
        "local: LocalGateway (events, context, route match)": s["gateway"]
        - app_handler
        - s["gateway_authorizer"],
        "local: LocalGateway authorizer wrapper": s["gateway_authorizer"] - s["authorizer_handler"],
        "local: HTTP request parsing": s["http_parse"],
        "local: server, request line, response writing": s["server_request"]
        - s["http_parse"]
        - s["gateway"],
    }
    for label, seconds in stages.items():
        result.row(label, ms(seconds))
    result.row(
        "medians per request",
        f"function {ms(medians['function'])} (authorizer {ms(medians['authorizer'])}), "
        f"stubbed get_item {ms(medians['get_item'])}, chalice.test.Client "
        f"{ms(medians['test_client'])}, local server + http.client {ms(medians['local_server'])}",
    )
    result.check(
        "app overhead per warm request (ms)",
        round(overhead * 1000, 3),
        f"<= {TARGET_OVERHEAD_S * 1000:.0f} ms",
        overhead <= TARGET_OVERHEAD_S,
        note="function (authorizer handler + API handler) less the stubbed GetItem alone",
        absolute={"function_s": medians["function"], "get_item_s": medians["get_item"]},
    )
    result.check(
        "local server's own cost per request (ms)",
        round(server_cost * 1000, 3),
        "info (not deployed)",
        None,
        note="local server + keep-alive http.client less the function",
    )
    result.check(
        "function / stubbed GetItem (median ratio)",
        round(medians["function"] / medians["get_item"], 2),
        "info",
        None,
    )
    result.metrics = {
        "medians_s": medians,
        "stages_s": stages,
        "raw_stage_totals_s": s,
        "app_overhead_s": overhead,
        "local_server_cost_s": server_cost,
        "target_overhead_s": TARGET_OVERHEAD_S,
        "quick": quick,
    }
    return result
