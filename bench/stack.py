"""A local stack (`python -m local.stack`: emulator + API, 127.0.0.1) in a child process, for
the benchmarks: free ports, waited for until `GET /health` answers, stopped with SIGINT (and
both of its processes checked to be gone). CPU seconds of a process from /proc."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import STAGE
from local.stack import free_ports, interrupt, spawn

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 90


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    api_port: int
    emulator_port: int
    emulator_pid: int | None = None
    stopped_cleanly: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "stack.json").read_text()))

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def cpu_seconds(pid: int | None) -> float:
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
        api_port, emulator_port = free_ports(2)
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
        stack = Stack(process, state_dir, log_path, api_port, emulator_port)
        try:
            _wait_ready(stack)
            yield stack
        finally:
            stack.stopped_cleanly = _stop(stack)


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
                stack.emulator_pid = int(stack.state()["emulator_pid"])
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"no {state_file} after {STARTUP_TIMEOUT_S} s:\n{stack.log_tail()}")
    if not answers_200(stack.api_port, "/health", deadline, stack.process):
        raise RuntimeError(f"the API did not answer 200 at {stack.url}:\n{stack.log_tail()}")


def answers_200(
    port: int, path: str, deadline: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """Poll `GET path` on 127.0.0.1:`port` until it answers 200 (True), `process` exits or
    the monotonic `deadline` passes (False)."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return True
            finally:
                connection.close()
        time.sleep(0.05)
    return False


def _stop(stack: Stack) -> bool:
    """SIGINT, as Ctrl-C would; escalate only if the stack does not stop. True if both
    processes went away on SIGINT alone."""
    process = stack.process
    clean = interrupt(process, grace_s=20)  # the stack's process group, if it lingers
    if stack.emulator_pid is not None:
        deadline = time.monotonic() + 10
        while _alive(stack.emulator_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(stack.emulator_pid):
            clean = False
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created for the stack
    return clean and process.returncode == 0 and not _alive(stack.emulator_pid or process.pid)


def settle(
    pids: dict[str, int | None],
    max_seconds: float = 25.0,
    window: float = 1.0,
    idle_share: float = 0.05,
    quiet_windows: int = 6,
) -> dict[str, Any]:
    """Wait until each process of `pids` uses less than `idle_share` of a core in
    `quiet_windows` windows of `window` seconds in a row (the stack's event runtime done with
    what the set-up caused: a registration's stream records and welcome mail, then, after the
    onboarding queue's 5 s batching window, its batch), at most `max_seconds`. Then what they
    use idle, in CPU milliseconds per second (the runtime's polling), over two more windows."""
    started = time.monotonic()
    quiet = 0
    while quiet < quiet_windows and time.monotonic() - started < max_seconds:
        used = _cpu_over(pids, window)
        quiet = quiet + 1 if all(v < idle_share * window for v in used.values()) else 0
    idle = _cpu_over(pids, 2 * window)
    return {
        "settled": quiet >= quiet_windows,
        "waited_s": round(time.monotonic() - started, 1),
        "background_cpu_ms_per_s": {k: v * 1000 / (2 * window) for k, v in idle.items()},
    }


def _cpu_over(pids: dict[str, int | None], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
