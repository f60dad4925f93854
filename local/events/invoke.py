"""Lambda's Invoke API for the app's functions, served in the stack's process: what the
emulator calls whenever moto invokes a function (the Invoke API, so `aws lambda invoke`, and
every Lambda task of a state machine; `local/fidelity.py` forwards them here).

    POST /2015-03-31/functions/<function name>/invocations   body: the event (JSON)

The function name is the deployed one (`serverless-app-<stage>-<name>`, the API's handler
`serverless-app-<stage>`). The handler runs through `EventRuntime.invoke`, so each invocation
is logged like the event sources' ones, and answers as Lambda does: 200 with the result as
JSON; a handler that raises gives 200 with `X-Amz-Function-Error: Unhandled` and the Python
runtime's error body (`errorType` is the exception's class name: what Step Functions' Retry
and Catch match); a handler still running at the function's timeout (`.chalice/config.json`)
gives `Sandbox.Timedout`, as Lambda reports it. Unlike Lambda, nothing freezes the timed-out
handler: it runs on to its end in the background (its side effects happen), and its late
result is dropped with a warning that says so.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from infra.paths import PROJECT_DIR
from infra.wiring import function_name
from local.background_server import BackgroundServer
from local.events.core import API_HANDLER, EventRuntime, Invocation

log = logging.getLogger(__name__)

SOURCE = "lambda:invoke"
PATH_PREFIX = "/2015-03-31/functions/"
PATH_SUFFIX = "/invocations"
MAX_EVENT_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit


def app_functions(app: Any) -> list[str]:
    """Every function Chalice deploys for `app`, by Chalice name."""
    names = [API_HANDLER]
    names += [authorizer.name for authorizer in app.builtin_auth_handlers]
    names += [source.name for source in app.event_sources]
    names += [function.name for function in app.pure_lambda_functions]
    return names


def function_settings(stage: str, name: str) -> tuple[int, int]:
    """(timeout in seconds, memory in MB) of function `name` in `stage`, as Chalice reads
    them from `.chalice/config.json` (the function's, else the stage's, else the top level)."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    stage_config = config["stages"][stage]
    own = stage_config.get("lambda_functions", {}).get(name, {})

    def setting(key: str, default: int) -> int:
        return int(own.get(key, stage_config.get(key, config.get(key, default))))

    return setting("lambda_timeout", 60), setting("lambda_memory_size", 128)


class InvokeEndpoint:
    """The endpoint on `host:port` (0: any free port), bound at once so that the emulator can
    be told where it is before the app is loaded; `serve(runtime, stage)` starts answering,
    `stop()` ends it. Until it serves, invocations wait in the listen queue."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.runtime: EventRuntime | None = None
        #: deployed name -> (Chalice name, timeout s, memory MB)
        self.functions: dict[str, tuple[str, int, int]] = {}
        endpoint = self

        class Handler(InvokeRequestHandler):
            invoke_endpoint = endpoint

        self._background = BackgroundServer(host, port, Handler, name="lambda-invoke")
        self.server = self._background.server
        self.url = self._background.url

    def serve(self, runtime: EventRuntime, stage: str) -> InvokeEndpoint:
        self.runtime = runtime
        self.functions = {
            function_name(stage, name): (name, *function_settings(stage, name))
            for name in app_functions(runtime.app)
        }
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()

    def invoke(self, deployed_name: str, event: Any) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one invocation, as Lambda's Invoke API answers it."""
        found = self.functions.get(deployed_name)
        if found is None:
            error = {"Type": "User", "Message": f"Function not found: {deployed_name}"}
            headers = {"X-Amzn-ErrorType": "ResourceNotFoundException"}
            return 404, headers, json.dumps(error).encode()
        name, timeout_s, memory_mb = found
        runtime = self.runtime
        assert runtime is not None  # set before the server thread starts
        outcome: list[tuple[Any, Any]] = []
        finished = threading.Event()
        timed_out = threading.Event()

        def run() -> None:
            outcome.append(
                runtime.invoke(
                    name, SOURCE, event, timeout_ms=timeout_s * 1000, memory_mb=memory_mb
                )
            )
            finished.set()
            if timed_out.is_set():
                log.warning("%s, answered Sandbox.Timedout after %d s, ran on to its end "
                            "(%s); Lambda would have stopped it, so its late side effects "
                            "would not have happened; its result is dropped",
                            name, timeout_s, outcome[0][1].outcome)  # fmt: skip

        threading.Thread(target=run, name=f"lambda:{name}", daemon=True).start()
        request_id = str(uuid.uuid4())
        headers = {"X-Amz-Executed-Version": "$LATEST", "X-Amzn-RequestId": request_id}
        if not finished.wait(timeout_s):
            timed_out.set()
            runtime.report(_timed_out(name, timeout_s))
            log.warning("%s timed out after %d s: answered Sandbox.Timedout; the handler "
                        "still runs in the background (nothing stops it locally)",
                        name, timeout_s)  # fmt: skip
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                f"{timeout_s:.2f} seconds",
            }
            return 200, {**headers, "X-Amz-Function-Error": "Unhandled"}, json.dumps(error).encode()
        result, invocation = outcome[0]
        runtime.report(invocation)
        if isinstance(result, Exception):
            return 200, {**headers, "X-Amz-Function-Error": "Unhandled"}, _error_body(result)
        try:
            return 200, headers, json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            error = {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal "
                     f"response: {exc}"}  # fmt: skip
            return 200, {**headers, "X-Amz-Function-Error": "Unhandled"}, json.dumps(error).encode()


def _error_body(exc: Exception) -> bytes:
    """The Python runtime's answer for an exception the handler let out."""
    frames = traceback.format_tb(exc.__traceback__)
    body = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": frames}
    return json.dumps(body).encode()


def _timed_out(name: str, timeout_s: int) -> Invocation:
    return Invocation(name, SOURCE, 1, timeout_s * 1000.0, f"error: timed out after {timeout_s} s")


class InvokeRequestHandler(BaseHTTPRequestHandler):
    invoke_endpoint: InvokeEndpoint
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
            return self._answer(404, {}, b'{"Message": "not an Invoke path"}')
        name = unquote(path[len(PATH_PREFIX) : -len(PATH_SUFFIX)])
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_EVENT_BYTES:
            return self._answer(413, {}, b'{"Message": "payload too large or unframed"}')
        raw = self.rfile.read(int(length))
        try:
            event = json.loads(raw) if raw.strip() else {}
        except ValueError:
            error = b'{"Type": "User", "Message": "Could not parse request body into json"}'
            return self._answer(400, {"X-Amzn-ErrorType": "InvalidRequestContentException"}, error)
        self._answer(*self.invoke_endpoint.invoke(name, event))

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the runtime logs invocations
        pass
