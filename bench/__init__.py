"""Benchmarks for serverless-app: `make bench` (`python -m bench [--quick] [--only NAME]`).

Each benchmark module has `run(quick: bool) -> Result`. A Result carries the measured
numbers (`metrics`) and the checks against the issue's targets (`checks`); a missed target is
reported, while an exception in a benchmark is an error (and a non-zero exit).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

PASS, FAIL, INFO = "pass", "FAIL", "info"


@dataclass
class Check:
    """One measured value against its target (`passed` None: informational, no target).

    A target on a ratio says in `note` what the floor is (measured in the same run) and what
    the old absolute target was; `absolute` holds the figures the ratio was made of."""

    name: str
    value: Any
    target: str
    passed: bool | None
    note: str = ""
    absolute: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return INFO if self.passed is None else PASS if self.passed else FAIL


@dataclass
class Row:
    """One line of the table: a label, a formatted value and, optionally, a unit."""

    label: str
    value: str


@dataclass
class Result:
    name: str
    title: str
    metrics: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def row(self, label: str, value: str) -> None:
        self.rows.append(Row(label, value))

    def check(
        self,
        name: str,
        value: Any,
        target: str,
        passed: bool | None,
        note: str = "",
        absolute: dict[str, Any] | None = None,
    ) -> None:
        self.checks.append(Check(name, value, target, passed, note, absolute))


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: the app logs a JSON line and an EMF document per
    request to stdout (Powertools holds on to the sys.stdout object, so redirecting the
    object is not enough)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def patched_environ(values: dict[str, str], drop_prefixes: Sequence[str] = ()) -> Iterator[None]:
    """Set `values` (and remove variables starting with any of `drop_prefixes`) for the
    duration; restore the environment afterwards."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if any(name.startswith(prefix) for prefix in drop_prefixes):
                del os.environ[name]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"


STAGE = "dev"
#: Variables that would point the app somewhere else than where a benchmark wants it.
AWS_OVERRIDES = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CRED")


def stage_env() -> dict[str, str]:
    """The dev stage's environment (.chalice/config.json) and fake credentials, as in
    tests/conftest.py."""
    from local.provision import FAKE_CREDENTIALS, stage_environment

    return {**stage_environment(STAGE), **FAKE_CREDENTIALS}
