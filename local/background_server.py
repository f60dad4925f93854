"""A threaded HTTP server of the local stack's own (the console, the Lambda Invoke endpoint),
bound at once and served on a daemon thread: 127.0.0.1 only, stopped with the stack."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundServer:
    """`handler` on host:port (0: any free port), bound when made; `start()` serves it on a
    daemon thread called `name`, `stop()` ends it (also when it never started)."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str):
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
