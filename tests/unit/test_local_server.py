"""The local API server against bad HTTP framing: raw bytes over a socket, JSON answers.

A tiny Chalice app is served by `local.server`'s server and handler on a free port, with a
short read timeout so that a stalled request is a 408 in well under a second.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chalice import Chalice
from chalice.config import Config
from chalice.local import LocalDevServer

from local.server import FastLocalServer, FramingRequestHandler, app_body_limit

READ_TIMEOUT = 0.4
IDLE_TIMEOUT = 1.0
LIMIT = 4 * 1024 * 1024


def tiny_app() -> Chalice:
    app = Chalice(app_name="framing-test")

    @app.route("/health", methods=["GET"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.route("/echo", methods=["POST"])
    def echo() -> dict[str, Any]:
        raw = app.current_request.raw_body or b""
        headers = app.current_request.headers
        return {
            "length": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "content_length": headers.get("content-length"),
            "transfer_encoding": headers.get("transfer-encoding"),
        }

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    app = tiny_app()
    server_cls = functools.partial(
        FastLocalServer, read_timeout=READ_TIMEOUT, idle_timeout=IDLE_TIMEOUT
    )
    local = LocalDevServer(
        app,
        Config.create(chalice_app=app, app_name="framing-test"),
        "127.0.0.1",
        0,
        handler_cls=FramingRequestHandler,
        server_cls=server_cls,
    )
    thread = threading.Thread(target=local.server.serve_forever, daemon=True)
    thread.start()
    yield local.server.server_address[:2]
    local.shutdown()
    local.server.server_close()
    thread.join(timeout=5)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(reader: Any) -> Response:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1."), status_line
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return Response(int(status_line.split()[1]), headers, body)


def exchange(address: tuple[str, int], raw: bytes, pause: float = 0.0) -> tuple[Response, bool]:
    """Send `raw`, read one answer; also whether the server then closed the connection."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(raw)
        if pause:
            time.sleep(pause)
        reader = sock.makefile("rb")
        response = read_response(reader)
        sock.settimeout(IDLE_TIMEOUT / 2)  # a refusal closes at once; keep-alive idles longer
        try:
            closed = reader.read(1) == b""
        except TimeoutError:
            closed = False
        return response, closed


def assert_refused(response: Response, closed: bool, status: int, code: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert closed
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-amzn-requestid"]


def post(length: str | int, body: bytes = b"", extra: str = "") -> bytes:
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {length}\r\n\r\n".encode() + body


def chunked(*chunks: bytes, extra: str = "", trailer: bytes = b"") -> bytes:
    head = (
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{extra}Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + encoded + b"0\r\n" + trailer + b"\r\n"


def chunked_head() -> bytes:
    return chunked().split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def test_the_server_limit_is_the_largest_route_limit() -> None:
    assert app_body_limit() == LIMIT  # POST /events; the app refuses 64 KiB elsewhere


@pytest.mark.parametrize("length", ["99999999999", str(LIMIT + 1), "9" * 5000])
def test_an_oversized_declared_length_is_413_before_any_body_is_read(
    server: tuple[str, int], length: str
) -> None:
    started = time.monotonic()
    response, closed = exchange(server, post(length))
    assert_refused(response, closed, 413, "payload_too_large")
    assert time.monotonic() - started < READ_TIMEOUT  # not waiting for the body


def test_an_oversized_length_with_expect_100_is_413_without_100_continue(
    server: tuple[str, int],
) -> None:
    response, closed = exchange(server, post("99999999999", extra="Expect: 100-continue\r\n"))
    assert_refused(response, closed, 413, "payload_too_large")


@pytest.mark.parametrize("length", ["abc", "-1", "", "1.5", "+5", "0x10", "²", "5, 6"])
def test_a_content_length_that_is_not_one_non_negative_integer_is_400(
    server: tuple[str, int], length: str
) -> None:
    response, closed = exchange(server, post(length, b"{}"))
    assert_refused(response, closed, 400, "bad_request")


def test_two_content_lengths_that_disagree_are_400(server: tuple[str, int]) -> None:
    response, closed = exchange(server, post(2, b"{}", extra="Content-Length: 3\r\n"))
    assert_refused(response, closed, 400, "bad_request")


def test_a_body_shorter_than_declared_is_408_after_the_read_timeout(
    server: tuple[str, int],
) -> None:
    started = time.monotonic()
    response, closed = exchange(server, post(100, b'{"a": 1'))
    assert_refused(response, closed, 408, "request_timeout")
    assert READ_TIMEOUT * 0.9 <= time.monotonic() - started < READ_TIMEOUT + 1.5


def test_headers_that_stop_arriving_are_408(server: tuple[str, int]) -> None:
    response, closed = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert_refused(response, closed, 408, "request_timeout")


def test_a_chunked_body_reaches_the_app_whole(server: tuple[str, int]) -> None:
    parts = [b'{"items": [', b'"' + b"x" * 70000 + b'"', b"]}"]
    raw = chunked(*parts, trailer=b"X-Checksum: whatever\r\n")
    raw = raw.replace(b"\r\n2\r\n", b"\r\n2;name=value\r\n")  # a chunk extension, ignored
    response, closed = exchange(server, raw)
    whole = b"".join(parts)
    assert response.status == 200, response.body
    assert response.json() == {
        "length": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
        "content_length": str(len(whole)),
        "transfer_encoding": None,
    }
    assert not closed  # the connection stays usable after a chunked request


def test_an_empty_chunked_body_reaches_the_app_as_empty(server: tuple[str, int]) -> None:
    response, _ = exchange(server, chunked())
    assert response.status == 200, response.body
    assert response.json()["length"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"2\r\nabc\r\n0\r\n\r\n",  # more data than the size says
        b"-2\r\nab\r\n0\r\n\r\n",
        b"\r\n",
    ],
)
def test_a_malformed_chunked_body_is_400(server: tuple[str, int], body: bytes) -> None:
    response, closed = exchange(server, chunked_head() + body)
    assert_refused(response, closed, 400, "bad_request")


def test_a_chunk_larger_than_the_limit_is_413_before_it_is_read(
    server: tuple[str, int],
) -> None:
    response, closed = exchange(server, chunked_head() + b"%x\r\n" % (LIMIT + 1))
    assert_refused(response, closed, 413, "payload_too_large")


def test_a_chunked_body_that_stops_arriving_is_408(server: tuple[str, int]) -> None:
    response, closed = exchange(server, chunked_head() + b"10\r\nonly a few")
    assert_refused(response, closed, 408, "request_timeout")


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        ("Transfer-Encoding: gzip, chunked\r\n", 501, "not_implemented"),
        ("Transfer-Encoding: gzip\r\n", 400, "bad_request"),
        ("Content-Length: 5\r\n", 400, "bad_request"),  # with chunked: smuggling
    ],
)
def test_other_transfer_codings_are_refused(
    server: tuple[str, int], extra: str, status: int, code: str
) -> None:
    raw = (
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{extra}{'' if 'Transfer' in extra else 'Transfer-Encoding: chunked' + chr(13) + chr(10)}"
        "\r\n2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    response, closed = exchange(server, raw)
    assert_refused(response, closed, status, code)


def test_chunked_in_http_1_0_is_400(server: tuple[str, int]) -> None:
    raw = chunked(b"{}").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    response, closed = exchange(server, raw)
    assert_refused(response, closed, 400, "bad_request")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request"),
        (b"GET /\r\n\r\n", 400, "bad_request"),  # HTTP/0.9
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400, "bad_request"),
        (b"   \r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET / HTTP/1.x\r\n\r\n", 400, "bad_request"),
        (b"GET / FTP/1.1\r\n\r\n", 400, "bad_request"),
        (b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
    ],
)
def test_malformed_requests_get_the_json_error_shape(
    server: tuple[str, int], raw: bytes, status: int, code: str
) -> None:
    response, closed = exchange(server, raw)
    assert_refused(response, closed, status, code)


def test_a_valid_request_with_a_body_reaches_the_app(server: tuple[str, int]) -> None:
    body = b'{"hello": "world"}'
    response, _ = exchange(server, post(len(body), body, extra="Connection: close\r\n"))
    assert response.status == 200, response.body
    assert response.json()["length"] == len(body)


def test_keep_alive_serves_several_requests_on_one_connection(server: tuple[str, int]) -> None:
    body = b'{"n": 1}'
    with socket.create_connection(server, timeout=5) as sock:
        reader = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response = read_response(reader)
            assert (response.status, response.json()) == (200, {"status": "ok"})
            assert response.headers.get("connection") != "close"
            sock.sendall(post(len(body), body))
            assert read_response(reader).json()["length"] == len(body)
        # pipelined, with an empty line before the second request (RFC 9112 2.2)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        assert read_response(reader).status == 200
        assert read_response(reader).status == 200


def test_without_keep_alive_the_server_closes_after_the_answer(server: tuple[str, int]) -> None:
    for raw in (
        b"GET /health HTTP/1.0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        response, closed = exchange(server, raw)
        assert (response.status, response.json()) == (200, {"status": "ok"})
        assert closed


def test_an_idle_keep_alive_connection_is_closed_quietly(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(reader).status == 200
        started = time.monotonic()
        assert reader.read(1) == b""  # closed, with no 408 sent to a client that sent nothing
        assert IDLE_TIMEOUT * 0.9 <= time.monotonic() - started < IDLE_TIMEOUT + 1.5


def test_the_server_keeps_serving_after_every_kind_of_refusal(server: tuple[str, int]) -> None:
    for raw in (post("99999999999"), post("abc"), b"GARBAGE\r\n\r\n"):
        exchange(server, raw)
    response, _ = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.status == 200


def test_expect_100_continue_with_an_acceptable_body_gets_100_then_the_answer(
    server: tuple[str, int],
) -> None:
    body = b'{"n": 2}'
    with socket.create_connection(server, timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(post(len(body), extra="Expect: 100-continue\r\n"))
        assert read_response(reader).status == 100
        sock.sendall(body)
        response = read_response(reader)
        assert (response.status, response.json()["length"]) == (200, len(body))


def test_concurrent_requests_each_see_their_own_request() -> None:
    """Chalice keeps the request in one attribute of the app; the local server handles
    requests on threads. Two requests in flight at once must not swap bodies (or callers)."""
    from chalice.local import LocalGateway

    from local.gateway import emulate_api_gateway

    emulate_api_gateway()
    app = Chalice(app_name="per-thread")
    arrived = threading.Barrier(8, timeout=5)

    @app.route("/mine", methods=["POST"])
    def mine() -> dict[str, Any]:
        before = app.current_request.json_body
        arrived.wait()  # every request has been taken in before any reads its body again
        return {"before": before, "after": app.current_request.json_body}

    gateway = LocalGateway(app, Config.create(chalice_app=app, app_name="per-thread"))
    answers: dict[int, Any] = {}

    def send(n: int) -> None:
        body = json.dumps({"n": n}).encode()
        headers = {"content-type": "application/json", "host": "localhost"}
        answers[n] = json.loads(gateway.handle_request("POST", "/mine", headers, body)["body"])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {n: {"before": {"n": n}, "after": {"n": n}} for n in range(8)}
