"""The phases of bench.breakdown: timers on each stage of one warm `GET /users/{id}`, and the
report that turns them into microseconds per request, the function apart from the local
server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import Result

ROUTE = "/users/{user_id}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def function_stages(app: Any, dynamodb: Any, function: Callable[[], None], n: int) -> dict:
    """Wall seconds per request of each stage of the function (authorizer handler + API
    handler), over `n` calls with timers on."""
    from chalice.app import Chalice, ChaliceAuthorizer, RestAPIEventHandler

    from bench.breakdown import StageTimer
    from chalicelib.core import correlation
    from chalicelib.core import http as http_module

    timer = StageTimer(time.perf_counter)
    timer.wrap(ChaliceAuthorizer, "__call__", "authorizer_handler")
    timer.wrap(Chalice, "__call__", "api_handler")
    timer.wrap_middleware(app, "http_boundary", "boundary")
    timer.wrap(http_module, "_handle", "handle")
    timer.wrap(RestAPIEventHandler, "_main_rest_api_handler", "dispatch")
    timer.wrap(app.routes[ROUTE]["GET"], "view_function", "view")
    timer.wrap(dynamodb, "get_item", "get_item")
    timer.wrap(http_module, "_record", "record")
    timer.wrap(http_module.access_logger, "info", "access_log")
    timer.wrap(http_module, "emit_metrics", "emf")
    timer.wrap(correlation, "start_invocation", "correlation")
    timer.wrap(correlation, "end_invocation", "correlation")
    total = timer.timed(function, "total")
    try:
        for _ in range(n):
            total()
    finally:
        timer.restore()
    return {stage: seconds / n for stage, seconds in timer.seconds.items()}


def server_stages(app: Any, over_http: Callable[[], None], n: int) -> dict:
    """CPU seconds per request of the local server's thread, by stage, over `n` requests
    with timers on."""
    from chalice.app import Chalice, ChaliceAuthorizer
    from chalice.local import LocalGateway, LocalGatewayAuthorizer

    from bench.breakdown import StageTimer
    from local.server import FramingRequestHandler

    timer = StageTimer(time.thread_time)
    timer.wrap(FramingRequestHandler, "handle_one_request", "request")
    timer.wrap(FramingRequestHandler, "parse_request", "parse")
    timer.wrap(LocalGateway, "handle_request", "gateway")
    timer.wrap(LocalGatewayAuthorizer, "authorize", "gateway_authorizer")
    timer.wrap(ChaliceAuthorizer, "__call__", "authorizer_handler")
    timer.wrap(Chalice, "__call__", "api_handler")
    timer.wrap(FramingRequestHandler, "_send_http_response", "respond")
    timer.wrap(FramingRequestHandler, "log_request", "request_log")
    try:
        for _ in range(n):
            over_http()
    finally:
        timer.restore()
    return {stage: seconds / n for stage, seconds in timer.seconds.items()}


def phases(f: dict[str, float], s: dict[str, float]) -> tuple[dict, dict]:
    """Named phases (seconds per request): the function's (wall) and the local server's
    (CPU of its thread)."""
    function = {
        "authorizer handler, token cached (Chalice's wrapper + verification look-up)": f[
            "authorizer_handler"
        ],
        "Chalice: event to Request, middleware chain, routing, response to dict": f["api_handler"]
        - f["boundary"]
        + f["handle"]
        - f["view"],
        "middleware: correlation id bound and released": f["correlation"],
        "middleware: CORS, error shape, answer headers": f["boundary"]
        - f["handle"]
        - f["record"]
        - f["correlation"],
        "access log line (JSON, Powertools Logger)": f["record"] - f["emf"],
        "EMF metrics (one JSON document written)": f["emf"],
        "view: caller, rules, item to dict (less its GetItem)": f["view"] - f["get_item"],
        "boto3 GetItem, stubbed (serialize, sign, parse)": f["get_item"],
    }
    server = {
        "HTTP request line and headers parsed": s["parse"],
        "LocalGateway: events, context, route match, request id": s["gateway"]
        - s["gateway_authorizer"]
        - s["api_handler"],
        "LocalGateway's authorizer wrapper (less the handler)": s["gateway_authorizer"]
        - s["authorizer_handler"],
        "answer written: status line, headers, body": s["respond"] - s["request_log"],
        "request log line (stderr)": s["request_log"],
        "rest: request line read, framing, flush": s["request"]
        - s["parse"]
        - s["gateway"]
        - s["respond"],
    }
    return function, server


def report(figures: dict[str, Any], quick: bool, target_s: float) -> Result:
    medians = figures["medians_s"]
    f, s = figures["function_stages_s"], figures["server_stages_s"]
    function_phases, server_phases = phases(f, s)
    result = Result("breakdown", "One warm GET /users/{id}, AWS stubbed: function vs local server")
    for label, seconds in function_phases.items():
        result.row(f"function: {label}", us(seconds))
    result.row(
        "function: total with timers on / without",
        f"{us(f['total'])} / {us(medians['function'])} (of which the stubbed GetItem "
        f"{us(medians['get_item'])} alone)",
    )
    new_token = medians["authorizer_new_token"] - medians["authorizer"]
    result.row(
        "function: a token seen for the first time",
        f"+{us(new_token)} (the authorizer's handler {us(medians['authorizer_new_token'])} "
        f"instead of {us(medians['authorizer'])}: RS256 and claims checked)",
    )
    result.row(
        "local: chalice.test.Client's LocalGateway",
        us(medians["test_client"] - medians["function"]),
    )
    for label, seconds in server_phases.items():
        result.row(f"local server (CPU): {label}", us(seconds))
    function_cpu = s["api_handler"] + s["authorizer_handler"]
    result.row(
        "local server thread, CPU per request",
        f"{us(s['request'])}, of which the function {us(function_cpu)}: the server's own "
        f"{us(s['request'] - function_cpu)}",
    )
    result.row(
        "medians per request (wall)",
        f"function {us(medians['function'])}, stubbed GetItem {us(medians['get_item'])}, "
        f"chalice.test.Client {us(medians['test_client'])}, local server + http.client "
        f"{us(medians['local_server'])}",
    )
    overhead = medians["function"] - medians["get_item"]
    via_client = medians["test_client"] - medians["get_item"]
    target = f"<= {target_s * 1000:.0f} ms"
    result.check(
        "app overhead per warm request (ms)",
        round(overhead * 1000, 3),
        target,
        overhead <= target_s,
        note="function (authorizer handler + API handler) less the stubbed GetItem alone",
        absolute={"function_s": medians["function"], "get_item_s": medians["get_item"]},
    )
    result.check(
        "same through chalice.test.Client (ms)",
        round(via_client * 1000, 3),
        target,
        via_client <= target_s,
        note="chalice.test.Client's GET less the stubbed GetItem alone (its LocalGateway "
        "included, which Lambda does not run)",
        absolute={"test_client_s": medians["test_client"], "get_item_s": medians["get_item"]},
    )
    result.check(
        "same, a token never seen before (ms)",
        round((overhead + new_token) * 1000, 3),
        "info",
        None,
        note="the first request of each token per process: its RS256 check and claims",
    )
    server_cost = medians["local_server"] - medians["function"]
    result.check(
        "local server's own cost per request (ms)",
        round(server_cost * 1000, 3),
        "info (not deployed)",
        None,
        note="local server + keep-alive http.client less the function (wall)",
    )
    result.check(
        "function / stubbed GetItem (median ratio)",
        round(medians["function"] / medians["get_item"], 2),
        "info",
        None,
    )
    result.metrics = {
        "medians_s": medians,
        "function_phases_us": {k: round(v * 1e6, 1) for k, v in function_phases.items()},
        "local_server_phases_cpu_us": {k: round(v * 1e6, 1) for k, v in server_phases.items()},
        "raw_function_stages_s": f,
        "raw_server_stages_cpu_s": s,
        "app_overhead_s": overhead,
        "app_overhead_test_client_s": via_client,
        "authorizer_new_token_extra_s": new_token,
        "local_server_cost_s": server_cost,
        "target_overhead_s": target_s,
        "measured_in_pid": figures.get("pid"),
        "quick": quick,
    }
    return result
