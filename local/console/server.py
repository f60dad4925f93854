"""The console's HTTP server: server-rendered pages (Jinja2, escaped), a little JavaScript
that refreshes each panel, and three actions. Bound to 127.0.0.1, in the stack's process
(it reads the invocations the app logs there), never deployed.

    GET  /                        the page: stack, functions, invocations, workflows,
                                  analytics, mail, alerts, actions
    GET  /panels/<name>           one panel's HTML (what the page refreshes)
    GET  /executions?arn=<arn>    one execution drawn on its state machine
    GET  /api/invocations         the invocations as JSON (handler=, correlation_id=, after=)
    POST /actions/<fire|redrive|test-event>   JSON in, JSON out

Actions take `Content-Type: application/json` only, from the console's own origin: a page
on another site cannot send that to 127.0.0.1 without the browser asking first (CORS
preflight), and the console never answers one, so no other site can fire a job or send an
event through a developer's browser.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.background_server import BackgroundServer
from local.console.actions import Refused

HERE = Path(__file__).parent
STATIC = HERE / "static"
MAX_ACTION_BYTES = 512 * 1024


class ConsoleServer:
    """The console for `console` (a `local.console.Console`) on host:port (0: any free)."""

    def __init__(
        self, console: Any, host: str, port: int = 0, on_stop: Callable[[], None] | None = None
    ) -> None:
        """`on_stop`: run once the server has stopped (the console's log tap detached)."""
        owner = self
        self._on_stop = on_stop

        class Handler(ConsoleRequestHandler):
            server_owner = owner

        self.console = console
        self._background = BackgroundServer(host, port, Handler, name="console")
        self.server = self._background.server
        self.url = self._background.url

    def start(self) -> ConsoleServer:
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()
        if self._on_stop is not None:
            self._on_stop()


class ConsoleRequestHandler(BaseHTTPRequestHandler):
    server_owner: ConsoleServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        console = self.server_owner.console
        try:
            if url.path == "/":
                return self._html(200, console.page(query))
            if url.path.startswith("/panels/"):
                return self._html(200, console.panel(url.path.removeprefix("/panels/"), query))
            if url.path == "/executions":
                return self._html(200, console.execution_page(query.get("arn", "")))
            if url.path == "/api/invocations":
                return self._json(200, console.invocations_json(query))
            if url.path.startswith("/static/"):
                return self._static(url.path.removeprefix("/static/"))
        except LookupError as missing:
            return self._html(404, console.not_found(str(missing)))
        except ValueError as bad:
            return self._json(400, {"error": {"code": "bad_request", "message": str(bad)}})
        self._html(404, console.not_found(f"nothing at {url.path}"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not url.path.startswith("/actions/"):
            return self._json(404, {"error": {"code": "not_found", "message": url.path}})
        problem = self._refusal()
        if problem:
            return self._json(problem[0], {"error": {"code": problem[1], "message": problem[2]}})
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise Refused("the body must be a JSON object")
            answer = self.server_owner.console.act(url.path.removeprefix("/actions/"), body)
        except (Refused, ValueError) as refused:
            return self._json(400, {"error": {"code": "bad_request", "message": str(refused)}})
        except LookupError as missing:
            return self._json(404, {"error": {"code": "not_found", "message": str(missing)}})
        except Exception as failed:  # the emulator refused: said, as a 502 from here
            message = f"{type(failed).__name__}: {failed}"
            return self._json(502, {"error": {"code": "upstream_error", "message": message}})
        self._json(200, answer)

    def _refusal(self) -> tuple[int, str, str] | None:
        """Why an action request is not taken, or None: not JSON, another origin, no length,
        too long."""
        kind = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            return 415, "unsupported_media_type", "actions take Content-Type: application/json"
        origin = self.headers.get("Origin")
        if origin is not None and origin != self.server_owner.url:
            return 403, "forbidden", f"actions are taken from {self.server_owner.url} only"
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return 411, "length_required", "a Content-Length is needed"
        if int(length) > MAX_ACTION_BYTES:
            self.close_connection = True
            return 413, "payload_too_large", f"at most {MAX_ACTION_BYTES} bytes"
        return None

    def _static(self, name: str) -> None:
        files = {f.name for f in STATIC.iterdir() if f.is_file()}
        if name not in files:  # no ../ tricks: only the folder's own files
            return self._html(404, self.server_owner.console.not_found(name))
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(200, kind, (STATIC / name).read_bytes())

    def _html(self, status: int, text: str) -> None:
        self._send(status, "text/html; charset=utf-8", text.encode())

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self._send(status, "application/json", data)

    def _send(self, status: int, kind: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; style-src 'self'; img-src 'self' data:")  # fmt: skip
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the page polls: no log line each
        pass
