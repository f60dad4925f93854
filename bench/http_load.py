"""HTTP load on the real local stack (`python -m local.stack`: emulator + API, 127.0.0.1).

(a) one keep-alive client, sequential `GET /users/{id}`: with requests.Session and with a bare
    http.client.HTTPConnection;
(b) 50 keep-alive clients at once (asyncio streams, one connection each, closed loop);
(c) the same 50 clients on `GET /health`, which calls no AWS service: what the server alone
    does, so that (b) shows what the emulator round trip adds.

Every loop is bounded in time and in count; every response must be a 200 (anything else, or a
broken connection, is counted as an error). CPU seconds of the API and emulator processes (from
/proc) show where the time goes. The stack is stopped with SIGINT and both of its processes
are checked to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import STAGE, Result, median, ms, percentile
from local.stack import free_port, spawn

HOST = "127.0.0.1"
TARGET_SEQUENTIAL_RPS = 300
TARGET_CONCURRENT_P99_S = 0.100
CONCURRENCY = 50
STARTUP_TIMEOUT_S = 90
MAX_REQUESTS_PER_LOOP = 100_000


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    api_port: int
    emulator_pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

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
        }


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process, from /proc (0.0 if it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


@contextlib.contextmanager
def running_stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        state_dir = Path(tmp)
        log_path = state_dir / "stack.log"
        api_port = free_port()
        emulator_port = free_port()
        while emulator_port == api_port:
            emulator_port = free_port()
        with log_path.open("wb") as log:
            process = spawn(
                state_dir,
                api_port,
                emulator_port,
                STAGE,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own process group: a last-resort kill target
            )
        stack = Stack(process, state_dir, log_path, api_port)
        try:
            _wait_ready(stack)
            yield stack
        finally:
            stack.stopped_cleanly = _stop(stack)  # type: ignore[attr-defined]


def _wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    state_file = stack.state_dir / "stack.json"
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            raise RuntimeError(
                f"local.stack exited with {stack.process.returncode}:\n{stack.log_tail()}"
            )
        if state_file.exists():
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(state_file.read_text())
                stack.emulator_pid = int(state["emulator_pid"])
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"no {state_file} after {STARTUP_TIMEOUT_S} s:\n{stack.log_tail()}")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(HOST, stack.api_port, timeout=2)
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return
            finally:
                connection.close()
        time.sleep(0.05)
    raise RuntimeError(f"the API did not answer 200 at {stack.url}:\n{stack.log_tail()}")


def _stop(stack: Stack) -> bool:
    """SIGINT, as Ctrl-C would; escalate only if the stack does not stop. True if both
    processes went away on SIGINT alone."""
    clean = True
    process = stack.process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            clean = False
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    if stack.emulator_pid is not None:
        deadline = time.monotonic() + 10
        while _alive(stack.emulator_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(stack.emulator_pid):
            clean = False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created for the stack
    return clean and process.returncode == 0 and not _alive(stack.emulator_pid or process.pid)


# --- clients --------------------------------------------------------------------------------


def _sequential_requests(url: str, path: str, seconds: float, headers: dict[str, str]) -> Sample:
    import requests

    sample = Sample()
    with requests.Session() as session:
        session.headers.update(headers)
        for _ in range(20):  # warm-up: connection, first-request paths
            session.get(url + path, timeout=10).content  # noqa: B018
        perf = time.perf_counter
        started = perf()
        deadline = started + seconds
        for _ in range(MAX_REQUESTS_PER_LOOP):
            t0 = perf()
            if t0 >= deadline:
                break
            try:
                response = session.get(url + path, timeout=10)
                response.content  # noqa: B018
            except requests.RequestException as exc:
                sample.error(repr(exc))
                continue
            if response.status_code == 200:
                sample.latencies.append(perf() - t0)
            else:
                sample.error(f"HTTP {response.status_code}")
        sample.elapsed = perf() - started
    return sample


def _sequential_raw(port: int, path: str, seconds: float, headers: dict[str, str]) -> Sample:
    sample = Sample()
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for _ in range(20):
            connection.request("GET", path, headers=headers)
            connection.getresponse().read()
        perf = time.perf_counter
        started = perf()
        deadline = started + seconds
        for _ in range(MAX_REQUESTS_PER_LOOP):
            t0 = perf()
            if t0 >= deadline:
                break
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                sample.error(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=10)
                continue
            if response.status == 200:
                sample.latencies.append(perf() - t0)
            else:
                sample.error(f"HTTP {response.status}")
        sample.elapsed = perf() - started
    finally:
        connection.close()
    return sample


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


def _concurrent(
    port: int, path: str, warmup: float, seconds: float, headers: dict[str, str]
) -> Sample:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{extra}\r\n".encode()
    sample = Sample()

    async def main() -> None:
        now = time.perf_counter()
        measure_from = now + warmup
        stop_at = measure_from + seconds
        await asyncio.gather(
            *(_one_client(port, request, measure_from, stop_at, sample) for _ in range(CONCURRENCY))
        )
        sample.elapsed = seconds

    asyncio.run(main())
    return sample


def _user_id_of(state: dict[str, Any], email: str) -> str:
    from local.provision import emulator_client

    idp = emulator_client(state, "cognito-idp")
    user = idp.admin_get_user(UserPoolId=state["resources"]["UserPoolId"], Username=email)
    return str(next(a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub"))


# --- the benchmark --------------------------------------------------------------------------


def run(quick: bool) -> Result:
    sequential_s, warmup_s, concurrent_s = (1.5, 0.5, 3.0) if quick else (5.0, 1.0, 15.0)
    result = Result("http_load", f"HTTP load on python -m local.stack ({HOST})")
    phases: dict[str, dict[str, Any]] = {}
    with running_stack() as stack:
        import requests

        from local.token import issue_token

        state = json.loads((stack.state_dir / "stack.json").read_text())
        token = issue_token(state, "load@example.com", admin=False, id_token=False)
        auth = {"Authorization": f"Bearer {token}"}
        me = requests.get(f"{stack.url}/users?limit=1", headers=auth, timeout=10)
        if me.status_code != 403:  # a plain user may not list: the token works, the rules too
            raise RuntimeError(f"GET /users as a user: {me.status_code} {me.text[:300]}")
        idp_user = _user_id_of(state, "load@example.com")
        path = f"/users/{idp_user}"
        pids = {"api": stack.process.pid, "emulator": stack.emulator_pid}
        for name, measure in (
            ("sequential_requests_session", lambda: _sequential_requests(stack.url, path,
                                                                          sequential_s, auth)),
            ("sequential_http_client", lambda: _sequential_raw(stack.api_port, path,
                                                               sequential_s, auth)),
            (f"concurrent_{CONCURRENCY}", lambda: _concurrent(stack.api_port, path, warmup_s,
                                                              concurrent_s, auth)),
            (f"concurrent_{CONCURRENCY}_no_aws", lambda: _concurrent(stack.api_port, "/health",
                                                                     warmup_s, concurrent_s, {})),
        ):  # fmt: skip
            cpu_before = {k: _cpu_seconds(pid) for k, pid in pids.items()}
            client_before = time.process_time()
            sample = measure()
            summary = sample.summary()
            done = max(summary["requests"], 1)
            cpu = {k: _cpu_seconds(pid) - cpu_before[k] for k, pid in pids.items()}
            cpu["client"] = time.process_time() - client_before
            summary["cpu_ms_per_request"] = {k: v * 1000 / done for k, v in cpu.items()}
            phases[name] = summary
        stack_log = stack.log_tail(1500)
    stopped_cleanly = bool(getattr(stack, "stopped_cleanly", False))

    labels = {
        "sequential_requests_session": "(a) keep-alive, requests.Session",
        "sequential_http_client": "(a) keep-alive, http.client",
        f"concurrent_{CONCURRENCY}": f"(b) {CONCURRENCY} keep-alive clients (asyncio)",
        f"concurrent_{CONCURRENCY}_no_aws": f"(c) {CONCURRENCY} clients, GET /health (no AWS call)",
    }
    for name, label in labels.items():
        s = phases[name]
        cpu = s["cpu_ms_per_request"]
        result.row(
            label,
            f"{s['req_per_s']:.0f} req/s, p50 {ms(s['p50_s'])}, p99 {ms(s['p99_s'])}, "
            f"max {ms(s['max_s'])}, {s['requests']} ok, {s['errors']} errors",
        )
        result.row(
            "    CPU per request",
            f"API {cpu['api']:.2f} ms, emulator {cpu['emulator']:.2f} ms, "
            f"client {cpu['client']:.2f} ms",
        )
    result.row("stack stopped by SIGINT, both processes gone", "yes" if stopped_cleanly else "NO")
    result.metrics = {
        "phases": phases,
        "stopped_cleanly": stopped_cleanly,
        "durations_s": {"sequential": sequential_s, "concurrent": concurrent_s},
        "load_average": os.getloadavg(),
    }
    for name in ("sequential_requests_session", "sequential_http_client"):
        rps = phases[name]["req_per_s"]
        result.check(
            f"{labels[name]}: req/s",
            round(rps),
            f">= {TARGET_SEQUENTIAL_RPS}",
            rps >= TARGET_SEQUENTIAL_RPS,
        )
    conc = phases[f"concurrent_{CONCURRENCY}"]
    result.check(
        f"(b) {CONCURRENCY} clients: p99 (ms)",
        round(conc["p99_s"] * 1000, 1),
        f"< {TARGET_CONCURRENT_P99_S * 1000:.0f}",
        conc["p99_s"] < TARGET_CONCURRENT_P99_S,
    )
    errors = sum(p["errors"] for p in phases.values())
    first = next((p["first_error"] for p in phases.values() if p["first_error"]), None)
    result.check(
        "non-200 responses and connection errors",
        errors if not first else f"{errors} (first: {first[:80]})",
        "0",
        errors == 0,
    )
    result.check("stack stopped by SIGINT, both processes gone", stopped_cleanly, "yes",
                 stopped_cleanly)  # fmt: skip
    if errors or not stopped_cleanly:
        result.metrics["stack_log_tail"] = stack_log
    return result
