"""The local API's HTTP server: `chalice local`'s, made fast and safe against bad framing.

`chalice local`'s request handler trusts whatever framing a client sends: it allocates the
bytes `Content-Length` announces (99999999999 is a MemoryError), drops the connection on a
non-numeric one, waits as long as the client likes for a body that never comes, reads a
chunked body as empty, and answers a malformed request with the standard library's HTML
page (or, for a line without an HTTP version, with no status line at all). In AWS, API
Gateway answers all of these itself before the app runs. Here, before the app sees a request:

- `Content-Length` must be one non-negative integer (else 400) no larger than the app's
  largest per-route body limit (else 413, sent before any of the body is read, and before a
  `100 Continue`); the app still enforces each route's own limit (`chalicelib.core.http`);
- `Transfer-Encoding: chunked` bodies are decoded, under the same limit, and reach the app
  whole with a `Content-Length`; another transfer coding is a 501, chunked together with
  `Content-Length` or in HTTP/1.0 a 400;
- the request line, headers and body must keep arriving: a read that waits longer than
  `read_timeout` seconds is a 408. A keep-alive connection waiting for its next request may
  idle for `idle_timeout` seconds and is then closed without an answer;
- every refusal, including those `BaseHTTPRequestHandler` produces itself (bad request line,
  HTTP/2+ or 0.9, header lines too long or too many, unknown method), is JSON in the API's
  error shape with `Connection: close`, like the errors API Gateway answers itself
  (`local/gateway.py`): its `request_id` is a gateway request id, also sent as
  `x-amzn-RequestId`, since the app never saw the request.

The server also sets TCP_NODELAY (`chalice local` stalls keep-alive clients on Nagle's
algorithm and delayed ACKs) and a 128-connection listen backlog (instead of 5).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from http import HTTPStatus
from typing import Any

from chalice.local import ChaliceRequestHandler, ThreadedHTTPServer

from chalicelib.core.errors import (
    CHALICE_CODES,
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    error_body,
)

#: The longest request line, header line, chunk-size line or trailer line read, as
#: `BaseHTTPRequestHandler` does for the request line.
MAX_LINE_BYTES = 65536
MAX_TRAILER_FIELDS = 100
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

#: The error codes of the statuses the server answers itself; any other 4xx is
#: `bad_request` and any other 5xx `internal_error`, as API Gateway's DEFAULT_4XX and
#: DEFAULT_5XX responses say (infra/api-responses.json).
ERROR_CODES: dict[int, str] = {
    400: BadRequest.code,
    404: NotFound.code,
    408: CHALICE_CODES["RequestTimeoutError"],
    411: "length_required",
    413: PayloadTooLarge.code,
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    500: ApiError.code,
    501: "not_implemented",
    505: "http_version_not_supported",
}


def code_for_status(status: int) -> str:
    """The API error code for a status the server answers with itself (`ERROR_CODES`)."""
    return ERROR_CODES.get(status) or (BadRequest.code if status < 500 else ApiError.code)


def app_body_limit() -> int:
    """The largest body any route of the app takes. Imported on use: the app's modules read
    the stage's environment when they load, which the stack sets only after it starts."""
    from chalicelib.core.http import MAX_BODY_BYTES, MAX_BODY_BYTES_BY_ROUTE

    return max(MAX_BODY_BYTES, *MAX_BODY_BYTES_BY_ROUTE.values())


class FramingError(Exception):
    """The request's framing cannot be trusted; answered with `status` and the connection
    closed."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FastLocalServer(ThreadedHTTPServer):
    """chalice local's threaded server with TCP_NODELAY, a realistic listen backlog and the
    limits `FramingRequestHandler` enforces (keyword arguments override the class's)."""

    request_queue_size = 128
    allow_reuse_address = True
    #: Seconds one read of a request (line, headers, body) may wait before it is a 408.
    read_timeout: float = 5.0
    #: Seconds a connection may wait for its next request before it is closed quietly.
    idle_timeout: float | None = 60.0
    #: Seconds a refused request's connection keeps reading (and discarding) what the client
    #: still sends, so that closing does not reset the connection before it read the answer.
    linger_seconds: float = 1.0

    def __init__(
        self,
        server_address: tuple[str, int],
        handler: Any,
        bind_and_activate: bool = True,
        *,
        max_body_bytes: int | None = None,
        read_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        #: The largest body accepted (413 beyond); by default the app's largest route limit.
        self.max_body_bytes = max_body_bytes if max_body_bytes is not None else app_body_limit()
        if read_timeout is not None:
            self.read_timeout = read_timeout
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
        super().__init__(server_address, handler, bind_and_activate)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class FramingRequestHandler(ChaliceRequestHandler):
    """chalice local's handler, reading each request's framing strictly (module docstring)."""

    server: FastLocalServer
    #: A request line without a version is refused, and errors before it is parsed still
    #: get a status line (HTTP/0.9 answers would have none).
    default_request_version = "HTTP/1.0"
    #: Buffer what is written and send it once per answer (flushed after each request, after
    #: a `100 Continue` and when the connection ends): unbuffered, status line + headers and
    #: the body leave as two packets, and the client wakes up twice.
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        self._linger = False
        self._timeout: float | str | None = "unset"
        self._reset()

    def _set_timeout(self, seconds: float | None) -> None:
        """`settimeout` only when it changes: each call is a system call."""
        if seconds != self._timeout:
            self.connection.settimeout(seconds)
            self._timeout = seconds

    def _reset(self) -> None:
        self.requestline, self.command = "", None
        self.request_version = self.default_request_version
        self._reading = False
        self._framing: int | None = None  # body length, or -1 for chunked; None: unchecked
        self._body: bytes | None = None

    def handle_one_request(self) -> None:
        self._reset()
        try:
            self._handle_one_request()
        except FramingError as exc:
            self._refuse(exc.status, exc.message)
        except TimeoutError:
            if self._reading:  # else idle, or the client does not read the answer: just close
                self._refuse(HTTPStatus.REQUEST_TIMEOUT, "The request did not arrive in time.")
            self.close_connection = True
        except ConnectionError:
            self.close_connection = True

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.send_error(status, message)

    def _handle_one_request(self) -> None:
        line = self._next_request_line()
        if line is None:
            self.close_connection = True
            return
        self.raw_requestline = line
        if len(line) > MAX_LINE_BYTES:
            self.requestline = self.command = ""
            self.request_version = self.default_request_version
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "The request line is too long.")
            return
        if not self.parse_request():
            return
        self._body = self._read_body()
        self._reading = False
        method = getattr(self, f"do_{self.command}", None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method {self.command!r}.")
            return
        # The app's answer is written with the idle timeout: it is not the client's request.
        self._set_timeout(self.server.idle_timeout)
        method()
        self.wfile.flush()

    def _next_request_line(self) -> bytes | None:
        """The next request line; None when the connection ended or stayed idle. One empty
        line before it is ignored (RFC 9112 2.2)."""
        for attempt in range(2):
            self._set_timeout(self.server.idle_timeout)
            try:
                if not self.rfile.peek(1):
                    return None
            except TimeoutError:
                return None  # an idle keep-alive connection: closed without an answer
            self._reading = True
            self._set_timeout(self.server.read_timeout)
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            if attempt or line not in (b"\r\n", b"\n"):
                return line
            self._reading = False
        return None

    def parse_request(self) -> bool:
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        if len(requestline.split()) != 3:
            self.requestline, self.command = requestline, None
            self.request_version = self.default_request_version
            self.send_error(
                HTTPStatus.BAD_REQUEST,
                f"The request line must be 'METHOD target HTTP/1.x', not {requestline[:100]!r}.",
            )
            return False
        if not super().parse_request():
            return False
        if self._framing is None:  # not checked yet by handle_expect_100
            self._framing = self._check_framing()
        return True

    def handle_expect_100(self) -> bool:
        """Refuse a bad or too large body before the client sends it."""
        self._framing = self._check_framing()
        accepted = bool(super().handle_expect_100())
        self.wfile.flush()  # the client waits for the `100 Continue` before it sends the body
        return accepted

    def _check_framing(self) -> int:
        """The body's length from the headers, or -1 when it is chunked."""
        lengths = self.headers.get_all("Content-Length") or []
        codings = self.headers.get_all("Transfer-Encoding") or []
        if codings:
            if lengths:
                raise FramingError(
                    HTTPStatus.BAD_REQUEST,
                    "A request must not have both Content-Length and Transfer-Encoding.",
                )
            if self.request_version == "HTTP/1.0":
                raise FramingError(
                    HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not allowed in HTTP/1.0."
                )
            names = [name.strip().lower() for value in codings for name in value.split(",")]
            if names[-1] != "chunked":
                raise FramingError(
                    HTTPStatus.BAD_REQUEST, "Transfer-Encoding must end with 'chunked'."
                )
            if len(names) > 1:
                raise FramingError(
                    HTTPStatus.NOT_IMPLEMENTED, "Only the 'chunked' transfer coding is supported."
                )
            return -1
        values = {value.strip() for field in lengths for value in field.split(",")}
        if not values:
            return 0
        if len(values) > 1:
            raise FramingError(HTTPStatus.BAD_REQUEST, "Content-Length has conflicting values.")
        value = values.pop()
        if not _DIGITS.fullmatch(value):
            raise FramingError(
                HTTPStatus.BAD_REQUEST, "Content-Length must be a non-negative integer."
            )
        if len(value) > 18 or int(value) > self.server.max_body_bytes:
            raise self._too_large()
        return int(value)

    def _too_large(self) -> FramingError:
        limit = self.server.max_body_bytes
        return FramingError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body is larger than {limit} bytes."
        )

    def _read_body(self) -> bytes | None:
        length = self._framing or 0
        if length == -1:
            return self._read_chunked() or None
        if length == 0:
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            raise FramingError(
                HTTPStatus.BAD_REQUEST, "The body ended before Content-Length bytes arrived."
            )
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _HEX.fullmatch(size_text):
                raise FramingError(HTTPStatus.BAD_REQUEST, "Malformed chunked body: chunk size.")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(body) + size > self.server.max_body_bytes:
                raise self._too_large()
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise FramingError(HTTPStatus.BAD_REQUEST, "Malformed chunked body: chunk data.")
            body += chunk
        for _ in range(MAX_TRAILER_FIELDS):  # trailer fields are read and dropped
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n"):
                return bytes(body)
            if not line.endswith(b"\n"):
                raise FramingError(HTTPStatus.BAD_REQUEST, "Malformed chunked body: trailer.")
        raise FramingError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many trailer fields.")

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        """The headers and body for the app, as read by `_read_body`: a chunked body reaches
        the app as if it had been sent with a Content-Length."""
        headers = dict(self.headers)
        if self._framing == -1:
            for name in [n for n in headers if n.lower() == "transfer-encoding"]:
                del headers[name]
            headers["Content-Length"] = str(len(self._body or b""))
        return headers, self._body

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Any refusal of the server's own, in the API's error shape (not an HTML page)."""
        status = HTTPStatus(code)
        text = f"{message}: {explain}" if message and explain else message or status.phrase
        request_id = str(uuid.uuid4())
        body = json.dumps(error_body(code_for_status(status), text[:300], request_id)).encode()
        self.log_error("code %d, message %s", status.value, text[:300])
        self._reading = False
        self._linger = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Connection", "close")  # also ends this connection's loop
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def finish(self) -> None:
        super().finish()
        if self._linger:
            self._drain()

    def _drain(self) -> None:
        """After a refusal: stop sending, then read what the client still sends for a moment,
        so that closing with unread data (a TCP reset) cannot destroy the answer in flight."""
        deadline = time.monotonic() + self.server.linger_seconds
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break
