"""Unit tests read the time from the app's clock, set here to run from a fixed instant.

The app asks `chalicelib.core.clock.now()` whenever it needs the time; every unit test gets
a clock that starts at `TEST_NOW` and moves at real speed (so what is written later still
sorts later). Test data is built relative to `TEST_NOW`, so nothing depends on the date the
suite runs on. Tokens and the emulator's own stamps (S3, Kinesis arrival) keep the machine's
time: they are checked against it, never against a fixed date.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.core import clock
from tests.clock import TEST_NOW, RunningClock


@pytest.fixture(autouse=True)
def app_clock() -> Iterator[RunningClock]:
    """The clock the app reads in this test; `app_clock.advance(minutes=6)` moves it."""
    running = RunningClock(TEST_NOW)
    with clock.use(running):
        yield running
