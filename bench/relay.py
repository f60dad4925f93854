"""The ceiling of bench.http_load's keep-alive goal: a do-nothing API in its own process.

`python -m bench.relay PORT EMULATOR_URL TABLE PK` answers every GET with the JSON of one
GetItem made through the app's own DynamoDB client (`chalicelib.core.aws`, the local
profile the stack's API uses), on the standard library's threaded HTTP server with
TCP_NODELAY, keep-alive and one write per answer. No routing, no authorizer, no events, no
logs: what any API process pays to put the same boto3 call behind a second hop. The
route's rate over the emulator's can be no better than this one's.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


class RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def handler(get_item: Any) -> type[BaseHTTPRequestHandler]:
    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 64 * 1024  # status line, headers and body leave in one write

        def do_GET(self) -> None:
            body = json.dumps(get_item()["Item"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the point is to do nothing but the call."""

    return Relay


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m bench.relay PORT EMULATOR_URL TABLE PK", file=sys.stderr)
        return 2
    port, emulator_url, table, pk = int(argv[0]), argv[1], argv[2], argv[3]
    from local.stack import point_at_emulator

    point_at_emulator(emulator_url)
    from chalicelib.core import aws

    client = aws.client("dynamodb")
    key = {"pk": {"S": pk}}

    def get_item() -> Any:
        return client.get_item(TableName=table, Key=key)

    get_item()  # the item exists, and the client is built before the first request
    server = RelayServer((HOST, port), handler(get_item))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@contextlib.contextmanager
def running_relay(
    emulator_url: str, table: str, pk: str, timeout: float = 60
) -> Iterator[tuple[int, int]]:
    """A relay in a child process: (its port, its pid); stopped (SIGINT, then killed if it
    lingers) at the end."""
    from infra.paths import PROJECT_DIR
    from local.stack import free_port

    port = free_port()
    command = [sys.executable, "-m", "bench.relay", str(port), emulator_url, table, pk]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_ready(process, port, timeout)
        yield port, process.pid
    finally:
        from local.stack import interrupt

        interrupt(process, grace_s=10, group=False)
        if process.stderr is not None:
            process.stderr.close()


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    from bench.stack import answers_200

    if answers_200(port, "/", time.monotonic() + timeout, process):
        return
    if process.poll() is not None:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise RuntimeError(f"bench.relay exited with {process.returncode}:\n{error[-2000:]}")
    raise RuntimeError(f"bench.relay did not answer on port {port} within {timeout} s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
