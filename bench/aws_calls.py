"""AWS calls per request, per route: every botocore API call the app makes, by service and
operation.

A `before-call` handler is added to botocore's built-in handlers (as moto adds its own), so
every client created afterwards, whoever creates it, reports its calls. Each route is called
twice: the second call is the steady state; what only the first call made (per-process lookups
such as sts GetCallerIdentity and sqs GetQueueUrl) is reported as "first request only".
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from bench import Result
from bench.inprocess import InProcess, expect, in_process_app

SEED_USERS = 50
PAGE_LIMIT = 10


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.recording = False

    def __call__(self, model: Any = None, **_: Any) -> None:
        # A before-call handler that returns something short-circuits the call: return None.
        if self.recording and model is not None:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[CallCounter]:
        """On the app's boto3 session; clients copy the session's handlers when they are made,
        so the app's clients are made again from here on."""
        from chalicelib.core import aws

        events = aws.session().events
        events.register("before-call", self, unique_id="bench-call-counter")
        aws.reset_clients()
        try:
            yield self
        finally:
            events.unregister("before-call", unique_id="bench-call-counter")

    def during(self, request: Callable[[], Any]) -> tuple[Any, Counter[str]]:
        self.calls = Counter()
        self.recording = True
        try:
            value = request()
        finally:
            self.recording = False
        return value, self.calls


def _describe(calls: Counter[str]) -> str:
    if not calls:
        return "none"
    return ", ".join(f"{name} x{n}" for name, n in sorted(calls.items()))


def _only_dynamodb(calls: Counter[str]) -> int:
    return sum(n for name, n in calls.items() if name.startswith("dynamodb."))


def _json_body(value: Any) -> dict[str, Any]:
    return {"headers": {"Content-Type": "application/json"}, "body": json.dumps(value).encode()}


def run(quick: bool) -> Result:
    counter = CallCounter()
    routes: dict[str, dict[str, Any]] = {}
    # The counter goes on the session made inside moto's mock (a session made before moto is
    # imported would send its calls to the network).
    with in_process_app() as env, counter.installed():
        http = env.http

        def twice(label: str, first: Callable[[], Any], second: Callable[[], Any]) -> Any:
            _, first_calls = counter.during(first)
            value, steady = counter.during(second)
            routes[label] = {
                "steady": dict(steady),
                "first_request_only": dict(first_calls - steady),
                "steady_total": sum(steady.values()),
            }
            return value

        def register(n: int) -> Callable[[], dict[str, Any]]:
            return lambda: env.register(f"user{n:03d}@example.com")

        twice("POST /register", register(0), register(1))
        for n in range(2, SEED_USERS):
            env.register(f"user{n:03d}@example.com")
        target = env.register("target@example.com")["user_id"]
        victims = [env.register(f"victim{n}@example.com")["user_id"] for n in range(2)]

        def call(method: str, path: str, status: int, **kwargs: Any) -> Callable[[], Any]:
            def request() -> Any:
                response = getattr(http, method)(path, **kwargs)
                expect(response, status, f"{method.upper()} {path}")
                return json.loads(response.body) if response.body else None

            return request

        user_path = f"/users/{target}"
        twice("GET /users/{id}", call("get", user_path, 200), call("get", user_path, 200))
        page_path = f"/users?limit={PAGE_LIMIT}"
        page = twice(
            "GET /users (page 1)", call("get", page_path, 200), call("get", page_path, 200)
        )
        cursor_path = f"{page_path}&cursor={page['next_cursor']}"
        twice(
            "GET /users (cursor page)", call("get", cursor_path, 200), call("get", cursor_path, 200)
        )
        walk = _walk_pages(env, counter)
        twice(
            "PUT /users/{id} (name)",
            call("put", user_path, 200, **_json_body({"name": "Renamed One"})),
            call("put", user_path, 200, **_json_body({"name": "Renamed Two"})),
        )
        twice(
            "PUT /users/{id} (email)",
            call("put", user_path, 200, **_json_body({"email": "moved1@example.com"})),
            call("put", user_path, 200, **_json_body({"email": "moved2@example.com"})),
        )
        twice(
            "DELETE /users/{id}",
            call("delete", f"/users/{victims[0]}", 204),
            call("delete", f"/users/{victims[1]}", 204),
        )

    result = Result("aws_calls", "AWS calls per request (steady state; first request extras)")
    for label, info in routes.items():
        text = _describe(Counter(info["steady"]))
        if info["first_request_only"]:
            text += f"; first request only: {_describe(Counter(info['first_request_only']))}"
        result.row(label, text)
    result.row(
        f"all pages (limit={PAGE_LIMIT})",
        f"{walk['pages']} pages, {walk['users']} users, {_describe(walk['calls'])}",
    )
    result.metrics = {
        "routes": routes,
        "page_walk": {**walk, "calls": dict(walk["calls"])},
    }
    get_one = Counter(routes["GET /users/{id}"]["steady"])
    result.check(
        "GET /users/{id}: AWS calls",
        sum(get_one.values()),
        "1, DynamoDB only",
        _only_dynamodb(get_one) == 1 and sum(get_one.values()) == 1,
    )
    for label in ("GET /users (page 1)", "GET /users (cursor page)"):
        calls = Counter(routes[label]["steady"])
        result.check(
            f"{label}: DynamoDB calls",
            _only_dynamodb(calls),
            "1 per page",
            _only_dynamodb(calls) == 1,
        )
    per_page = _only_dynamodb(walk["calls"]) / walk["pages"]
    result.check(
        "GET /users, all pages: DynamoDB calls per page",
        round(per_page, 3),
        "1 per page",
        per_page == 1,
    )
    return result


def _walk_pages(env: InProcess, counter: CallCounter) -> dict[str, Any]:
    """Follow next_cursor from the first page to the last, counting pages and calls."""
    calls: Counter[str] = Counter()
    pages = users = 0
    cursor: str | None = None
    while pages < 1000:
        path = f"/users?limit={PAGE_LIMIT}" + (f"&cursor={cursor}" if cursor else "")
        response, made = counter.during(lambda path=path: env.http.get(path))
        expect(response, 200, f"GET {path}")
        calls += made
        body = json.loads(response.body)
        pages += 1
        users += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    return {"pages": pages, "users": users, "calls": calls}
