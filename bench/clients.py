"""Load generators for bench.http_load: one keep-alive client (requests.Session or a bare
http.client connection) and N keep-alive clients at once (asyncio streams, one connection
each, closed loop). Each takes a `Call` (method, path, headers, body), so the same client
code measures the API and, as a floor, the emulator itself.

Every loop is bounded in time and in count; every response must be a 200 (anything else, or a
broken connection, is counted as an error).
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import median, percentile

HOST = "127.0.0.1"
MAX_REQUESTS_PER_LOOP = 100_000
WARMUP_REQUESTS = 20


@dataclass(frozen=True)
class Call:
    """One HTTP request, sent again and again."""

    port: int
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def raw(self) -> bytes:
        headers = {"Host": f"{HOST}:{self.port}", **self.headers}
        if self.body or self.method != "GET":
            headers["Content-Length"] = str(len(self.body))
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"{self.method} {self.path} HTTP/1.1\r\n{head}\r\n".encode() + self.body


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    #: Requests sent before timing began (not in `latencies`, but in the CPU spent).
    warmups: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    def add(self, other: Sample) -> None:
        """Merge another block of the same measurement (interleaved runs)."""
        self.latencies.extend(other.latencies)
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.elapsed += other.elapsed
        self.warmups += other.warmups

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "requests": len(lat),
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": self.elapsed,
            "req_per_s": len(lat) / self.elapsed if self.elapsed else 0.0,
            "p50_s": median(lat),
            "p99_s": percentile(lat, 99),
            "max_s": max(lat) if lat else float("nan"),
            "warmup_requests": self.warmups,
        }


def _sequential(send: Callable[[], int], seconds: float, failures: tuple[type, ...]) -> Sample:
    """Call `send` (one request, answering its status) back to back for `seconds`, after a
    warm-up (connection, first-request paths); 200s are timed, anything else counted."""
    sample = Sample(warmups=WARMUP_REQUESTS)
    for _ in range(WARMUP_REQUESTS):
        send()
    perf = time.perf_counter
    started = perf()
    deadline = started + seconds
    for _ in range(MAX_REQUESTS_PER_LOOP):
        t0 = perf()
        if t0 >= deadline:
            break
        try:
            status = send()
        except failures as exc:
            sample.error(repr(exc))
            continue
        if status == 200:
            sample.latencies.append(perf() - t0)
        else:
            sample.error(f"HTTP {status}")
    sample.elapsed = perf() - started
    return sample


def sequential_calls(send: Callable[[], int], seconds: float, failures: tuple[type, ...]) -> Sample:
    """`send` (one request, answering its HTTP status) back to back, for a client that is
    not plain HTTP (a boto3 call); `failures` are counted as errors."""
    return _sequential(send, seconds, failures)


def sequential_session(call: Call, seconds: float) -> Sample:
    """One requests.Session (keep-alive), one request at a time."""
    import requests

    with requests.Session() as session:
        session.headers.update(call.headers)

        def send() -> int:
            response = session.request(call.method, call.url, data=call.body or None, timeout=10)
            response.content  # noqa: B018  (read the body, as a client does)
            return int(response.status_code)

        return _sequential(send, seconds, (requests.RequestException,))


def sequential_http_client(call: Call, seconds: float) -> Sample:
    """One bare http.client.HTTPConnection (keep-alive), one request at a time; a broken
    connection is replaced and counted as an error."""
    body = call.body or None
    connection = http.client.HTTPConnection(HOST, call.port, timeout=10)

    def send() -> int:
        nonlocal connection
        try:
            connection.request(call.method, call.path, body=body, headers=call.headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(HOST, call.port, timeout=10)
            raise
        return response.status

    try:
        return _sequential(send, seconds, (OSError, http.client.HTTPException))
    finally:
        connection.close()


async def _one_client(
    port: int, request: bytes, measure_from: float, stop_at: float, sample: Sample
) -> None:
    perf = time.perf_counter
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        for _ in range(MAX_REQUESTS_PER_LOOP):
            t0 = perf()
            if t0 >= stop_at:
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                status, length, closing = _parse_head(head)
                await asyncio.wait_for(reader.readexactly(length), timeout=10)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ValueError) as exc:  # fmt: skip
                if t0 >= measure_from:
                    sample.error(repr(exc))
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            if closing:
                writer.close()
                reader = writer = None
            if t0 < measure_from:
                continue
            if status == 200:
                sample.latencies.append(perf() - t0)
            else:
                sample.error(f"HTTP {status}")
    finally:
        if writer is not None:
            writer.close()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, closing = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            closing = True
        elif name == "transfer-encoding":
            raise ValueError(f"unexpected Transfer-Encoding: {value.strip()}")
    return status, length, closing


def concurrent(call: Call, clients: int, warmup: float, seconds: float) -> Sample:
    """`clients` keep-alive connections at once, each sending `call` as soon as the previous
    answer is in; latencies from `warmup` seconds on, for `seconds`."""
    request = call.raw()
    sample = Sample()

    async def main() -> None:
        measure_from = time.perf_counter() + warmup
        stop_at = measure_from + seconds
        await asyncio.gather(
            *(
                _one_client(call.port, request, measure_from, stop_at, sample)
                for _ in range(clients)
            )
        )
        sample.elapsed = seconds

    asyncio.run(main())
    return sample


def signed_get_item(client: Any, port: int, table: str, key: dict[str, Any]) -> Call:
    """The GetItem request `client` (a boto3 DynamoDB client for the emulator) sends, signed
    once and replayed as it is (moto does not check signatures or their age). The call is made
    once for real, and must find the item."""
    captured: dict[str, Any] = {}

    def capture(request: Any, **_: Any) -> None:
        captured["headers"] = {k: v.decode() if isinstance(v, bytes) else v
                               for k, v in request.headers.items()}  # fmt: skip
        captured["body"] = (
            request.body if isinstance(request.body, bytes) else request.body.encode()
        )
        captured["url"] = request.url

    client.meta.events.register("before-send.dynamodb.GetItem", capture)
    try:
        if "Item" not in client.get_item(TableName=table, Key=key):
            raise RuntimeError(f"GetItem in the emulator found no item {key} in {table}")
    finally:
        client.meta.events.unregister("before-send.dynamodb.GetItem", capture)
    skip = {"content-length", "host"}
    headers = {k: v for k, v in captured["headers"].items() if k.lower() not in skip}
    path = captured["url"].split(str(port), 1)[1] or "/"
    return Call(port, path, "POST", headers, captured["body"])
