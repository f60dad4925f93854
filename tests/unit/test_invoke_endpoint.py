"""The local runtime's Lambda Invoke endpoint (`local/events/invoke.py`) on its own, over HTTP:
the fixture app's plain functions answer as Lambda's Invoke API does (result, a raised
error's body, a timeout), unknown functions and unreadable bodies are refused as Lambda
refuses them, and every invocation is reported through the runtime. Also which functions it
serves and the timeouts it gives them (`.chalice/config.json`)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.wiring import function_name
from local.events import invoke
from local.events.core import EventRuntime, Invocation
from local.events.invoke import InvokeEndpoint, app_functions, function_settings
from tests.fixtures import event_app
from tests.unit.runtime_helpers import REGION

STAGE = "dev"
#: The timeout the `slow` function gets here instead of its configured one.
SHORT_TIMEOUT_S = 1


def no_aws(service: str) -> Any:
    raise AssertionError(f"the fixture's plain functions make no AWS calls ({service})")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls a condition: the deadline bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


class Served:
    """An endpoint serving the fixture app, and what its runtime reported."""

    def __init__(self, endpoint: InvokeEndpoint, seen: list[Invocation]) -> None:
        self.endpoint = endpoint
        self.seen = seen

    def url(self, function: str) -> str:
        return f"{self.endpoint.url}/2015-03-31/functions/{function}/invocations"

    def post(self, function: str, body: Any = None, **kwargs: Any) -> requests.Response:
        """POSTs `body` (JSON-encoded unless bytes) to the Invoke path of deployed `function`."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url(function), data=data, timeout=30, **kwargs)

    def reported(self, handler: str) -> list[Invocation]:
        return [i for i in list(self.seen) if i.handler == handler]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[InvokeEndpoint]:
    """One endpoint for the module (stopping one takes half a second): `served` resets what
    a test may change."""
    runtime = EventRuntime(event_app.app, no_aws, REGION, handlers=())
    serving = InvokeEndpoint("127.0.0.1").serve(runtime, STAGE)
    yield serving
    serving.stop()


@pytest.fixture
def served(endpoint: InvokeEndpoint) -> Served:
    """The module's endpoint serving the fixture app, `slow` with a short timeout; what its
    runtime reports from now on."""
    event_app.reset()
    seen: list[Invocation] = []
    assert endpoint.runtime is not None
    endpoint.runtime._on_invocation = seen.append
    endpoint.functions[function_name(STAGE, "slow")] = ("slow", SHORT_TIMEOUT_S, 128)
    return Served(endpoint, seen)


def deployed(name: str) -> str:
    return function_name(STAGE, name)


# --- Lambda's Invoke API ------------------------------------------------------------------


def test_a_function_answers_with_its_result(served: Served) -> None:
    event = {"order": "o-1", "lines": [{"sku": "A", "quantity": 2}], "note": "héllo"}
    answer = served.post(deployed("echo"), event)
    assert answer.status_code == 200
    assert answer.json() == event
    assert "X-Amz-Function-Error" not in answer.headers
    assert answer.headers["X-Amz-Executed-Version"] == "$LATEST"
    assert answer.headers["X-Amzn-RequestId"]
    assert answer.headers["Content-Type"] == "application/json"
    assert event_app.lambda_calls == [("echo", event)]


def test_an_empty_body_is_an_empty_event(served: Served) -> None:
    answer = served.post(deployed("echo"), b"")
    assert answer.status_code == 200
    assert answer.json() == {}


def test_a_raised_exception_answers_with_the_python_runtimes_error_body(served: Served) -> None:
    answer = served.post(deployed("fail"), {"why": "out of stock"})
    assert answer.status_code == 200  # Lambda's: the invocation worked, the function did not
    assert answer.headers["X-Amz-Function-Error"] == "Unhandled"
    body = answer.json()
    assert set(body) == {"errorMessage", "errorType", "stackTrace"}
    assert body["errorType"] == "FixtureError"  # the class name: what Retry and Catch match
    assert body["errorMessage"] == "fixture failure: out of stock"
    assert isinstance(body["stackTrace"], list)
    assert all(isinstance(frame, str) for frame in body["stackTrace"])
    assert "event_app.py" in body["stackTrace"][-1]
    assert "raise FixtureError" in body["stackTrace"][-1]


def test_a_function_still_running_at_its_timeout_answers_sandbox_timedout(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger=invoke.__name__)
    started = time.monotonic()
    answer = served.post(deployed("slow"), {"seconds": 60})
    assert time.monotonic() - started >= SHORT_TIMEOUT_S
    assert answer.status_code == 200
    assert answer.headers["X-Amz-Function-Error"] == "Unhandled"
    body = answer.json()
    assert body["errorType"] == "Sandbox.Timedout"
    assert f"Task timed out after {SHORT_TIMEOUT_S:.2f} seconds" in body["errorMessage"]
    assert answer.headers["X-Amzn-RequestId"] in body["errorMessage"]
    [timed_out] = served.reported("slow")
    assert timed_out.source == invoke.SOURCE
    assert timed_out.outcome == f"error: timed out after {SHORT_TIMEOUT_S} s"
    # It answered at the timeout, the handler still running; that runs on to its end, and
    # its late result is dropped, never reported.
    assert [name for name, _ in event_app.lambda_calls] == ["slow"]
    assert "still runs in the background" in caplog.text  # said, since nothing stops it
    event_app.release_slow.set()
    wait_for(lambda: len(event_app.lambda_calls) == 2)
    assert event_app.lambda_calls[-1][0] == "slow returned"
    wait_for(lambda: not any(t.name == "lambda:slow" for t in threading.enumerate()))
    assert served.seen == [timed_out]
    assert "ran on to its end" in caplog.text and "its result is dropped" in caplog.text


def test_a_function_within_its_timeout_answers_its_result(served: Served) -> None:
    answer = served.post(deployed("slow"), {"seconds": 0.1})
    assert answer.status_code == 200
    assert "X-Amz-Function-Error" not in answer.headers
    assert answer.json() == {"seconds": 0.1, "released": False}


def test_invocations_run_concurrently(served: Served) -> None:
    """A slow invocation holds no other: the server answers each on a thread of its own."""
    served.endpoint.functions[deployed("slow")] = ("slow", 60, 128)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(served.post, deployed("slow"), {"seconds": 60})
        wait_for(lambda: ("slow", {"seconds": 60}) in event_app.lambda_calls)
        answer = served.post(deployed("echo"), {"quick": True})
        assert answer.json() == {"quick": True}
        assert not slow.done()
        event_app.release_slow.set()
        assert slow.result(timeout=30).json() == {"seconds": 60, "released": True}


def test_an_unknown_function_is_resource_not_found(served: Served) -> None:
    answer = served.post(deployed("no_such_function"), {})
    assert answer.status_code == 404
    assert answer.headers["X-Amzn-ErrorType"] == "ResourceNotFoundException"
    assert answer.json() == {
        "Type": "User",
        "Message": f"Function not found: {deployed('no_such_function')}",
    }
    # The Chalice name is not the deployed one.
    assert served.post("echo", {}).status_code == 404
    assert served.seen == []


def test_a_body_that_is_not_json_is_refused(served: Served) -> None:
    answer = served.post(deployed("echo"), b"{not json")
    assert answer.status_code == 400
    assert answer.headers["X-Amzn-ErrorType"] == "InvalidRequestContentException"
    assert answer.json()["Message"] == "Could not parse request body into json"
    assert event_app.lambda_calls == []
    assert served.seen == []


def test_a_path_that_is_not_invoke_is_not_found(served: Served) -> None:
    answer = requests.post(
        f"{served.endpoint.url}/2015-03-31/functions/{deployed('echo')}", data=b"{}", timeout=10
    )
    assert answer.status_code == 404
    assert event_app.lambda_calls == []


def test_a_payload_over_lambdas_limit_is_refused_unread(served: Served) -> None:
    """Lambda takes 6 MB synchronously: a larger Content-Length is refused before its body
    is read."""
    host, port = served.endpoint.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(
            f"POST /2015-03-31/functions/{deployed('echo')}/invocations HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Length: {invoke.MAX_EVENT_BYTES + 1}\r\n\r\n".encode()
        )
        answer = connection.makefile("rb")
        status_line = answer.readline().decode()
        headers = dict(
            line.decode().strip().split(": ", 1) for line in iter(answer.readline, b"\r\n")
        )
        body = json.loads(answer.read(int(headers["Content-Length"])))
    assert status_line.split()[1] == "413"
    assert "too large" in body["Message"]
    assert event_app.lambda_calls == []


def test_every_invocation_is_reported_through_the_runtime(served: Served) -> None:
    served.post(deployed("echo"), {"Records": [{"n": 1}, {"n": 2}]})
    served.post(deployed("fail"), {"why": "told to"})
    served.post(deployed("nothing_here"), {})
    served.post(deployed("echo"), b"not json")
    assert [(i.handler, i.source, i.batch_size, i.outcome) for i in served.seen] == [
        ("echo", "lambda:invoke", 2, "ok"),
        ("fail", "lambda:invoke", 1, "error: FixtureError: fixture failure: told to"),
    ]
    assert all(i.duration_ms >= 0 for i in served.seen)


def test_the_handler_gets_the_functions_timeout_and_memory_in_its_context(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`EventRuntime.invoke` is given the function's own settings (what its context reports)."""
    given: list[dict[str, Any]] = []
    runtime = served.endpoint.runtime
    assert runtime is not None
    original = runtime.invoke

    def recording_invoke(name: str, source: str, event: Any, **options: Any) -> Any:
        given.append({"name": name, **options})
        return original(name, source, event, **options)

    monkeypatch.setattr(runtime, "invoke", recording_invoke)
    served.post(deployed("echo"), {})
    served.post(deployed("slow"), {"seconds": 0})
    timeout_s, memory_mb = function_settings(STAGE, "echo")
    assert given == [
        {"name": "echo", "timeout_ms": timeout_s * 1000, "memory_mb": memory_mb},
        {"name": "slow", "timeout_ms": SHORT_TIMEOUT_S * 1000, "memory_mb": 128},
    ]


# --- Binding, serving, stopping ------------------------------------------------------------


def test_the_endpoint_is_bound_at_once_and_answers_what_waited_once_it_serves() -> None:
    event_app.reset()
    endpoint = InvokeEndpoint("127.0.0.1")
    try:
        host, port = endpoint.server.server_address[:2]
        assert port != 0
        assert endpoint.url == f"http://127.0.0.1:{port}"
        socket.create_connection((host, port), timeout=5).close()  # bound and listening
        with ThreadPoolExecutor(1) as pool:
            early = pool.submit(
                requests.post,
                f"{endpoint.url}/2015-03-31/functions/{deployed('echo')}/invocations",
                data=b'{"early": true}',
                timeout=30,
            )
            seen: list[Invocation] = []
            runtime = EventRuntime(event_app.app, no_aws, REGION, on_invocation=seen.append)
            endpoint.serve(runtime, STAGE)
            answer = early.result(timeout=30)
        assert answer.status_code == 200
        assert answer.json() == {"early": True}
        assert [i.handler for i in seen] == ["echo"]
    finally:
        endpoint.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{endpoint.url}/2015-03-31/functions/x/invocations", timeout=5)


def test_an_endpoint_that_never_served_stops_at_once() -> None:
    endpoint = InvokeEndpoint("127.0.0.1")
    started = time.monotonic()
    endpoint.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(OSError):
        socket.create_connection(endpoint.server.server_address[:2], timeout=5)


def test_an_endpoint_serves_every_function_of_the_app_by_its_deployed_name(
    served: Served,
) -> None:
    names = app_functions(event_app.app)
    expected = {
        deployed(name): (name, *function_settings(STAGE, name)) for name in names if name != "slow"
    }
    assert {k: v for k, v in served.endpoint.functions.items() if v[0] != "slow"} == expected
    assert served.endpoint.functions[deployed("api_handler")][0] == "api_handler"
    assert deployed("api_handler") == "serverless-app-dev"  # the API's function: the app's name


# --- Which functions, with which settings --------------------------------------------------


def test_app_functions_are_the_api_handler_and_every_handler_of_the_app() -> None:
    names = app_functions(event_app.app)
    assert len(names) == len(set(names))
    assert names[0] == "api_handler"
    assert set(names) == {"api_handler", *event_app.app.handler_map}
    assert {"echo", "fail", "slow", "handle_tasks", "hourly", "happened"} <= set(names)


def test_app_functions_of_the_app_are_the_functions_its_config_configures() -> None:
    """Every function the app deploys (its authorizer included) has its settings in
    `.chalice/config.json`, and nothing there is missing from the app."""
    from app import app
    from infra.paths import PROJECT_DIR

    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    names = app_functions(app)
    assert "cognito_jwt" in names  # a built-in authorizer is a function of its own
    for stage, settings in config["stages"].items():
        assert set(names) == set(settings["lambda_functions"]), stage


def test_function_settings_take_the_functions_then_the_stages_then_the_top_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".chalice").mkdir()
    config = {
        "lambda_timeout": 7,
        "lambda_memory_size": 256,
        "stages": {
            "dev": {
                "lambda_timeout": 20,
                "lambda_functions": {
                    "own": {"lambda_timeout": 3, "lambda_memory_size": 1024},
                    "memory_only": {"lambda_memory_size": 2048},
                },
            },
            "bare": {},
        },
    }
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(invoke, "PROJECT_DIR", tmp_path)
    assert function_settings("dev", "own") == (3, 1024)
    assert function_settings("dev", "memory_only") == (20, 2048)
    assert function_settings("dev", "other") == (20, 256)
    assert function_settings("bare", "own") == (7, 256)
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps({"stages": {"dev": {}}}))
    assert function_settings("dev", "own") == (60, 128)  # Chalice's defaults


def test_function_settings_of_the_projects_config() -> None:
    assert function_settings("dev", "sweep_stuck_orders") == (300, 512)
    assert function_settings("dev", "analyze_image") == (60, 1024)
    assert function_settings("dev", "validate_order") == (10, 512)
    assert function_settings("dev", "echo") == (10, 512)  # not configured: the stage's
