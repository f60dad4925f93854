"""Unit tests read the time from the app's clock, set here to run from a fixed instant.

The app asks `chalicelib.core.clock.now()` whenever it needs the time; every unit test gets
a clock that starts at `TEST_NOW` and moves at real speed (so what is written later still
sorts later). Test data is built relative to `TEST_NOW`, so nothing depends on the date the
suite runs on. Tokens and the emulator's own stamps (S3, Kinesis arrival) keep the machine's
time: they are checked against it, never against a fixed date.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.core.observability import logger
from tests.clock import TEST_NOW, RunningClock


@pytest.fixture(autouse=True)
def app_clock() -> Iterator[RunningClock]:
    """The clock the app reads in this test; `app_clock.advance(minutes=6)` moves it."""
    running = RunningClock(TEST_NOW)
    with clock.use(running):
        yield running


#: What `log_lines` gives: a call that returns the JSON lines logged so far.
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def info_logs() -> Iterator[None]:
    """The app's logger at INFO for the test, whatever level the process's first import of
    the app read from POWERTOOLS_LOG_LEVEL (a test that asserts info lines must not depend on
    which test imported it first); restored after."""
    before = logger.log_level
    logger.setLevel("INFO")
    try:
        yield
    finally:
        logger.setLevel(before)


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch, info_logs: None) -> Lines:
    """The JSON lines the app's logger (and its access child) writes from now on, at INFO."""
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
