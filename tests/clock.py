"""The instant the unit tests' clock starts from, and a clock that runs from it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

#: Any fixed instant would do; a Thursday noon, far from a month's or a year's end.
TEST_NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


class RunningClock:
    """Starts at `start` and moves at the machine's pace (monotonic, so a change of the
    system's clock during a run cannot move it back); `advance()` jumps forward."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._origin = time.monotonic()
        self._offset = timedelta()

    def __call__(self) -> datetime:
        elapsed = timedelta(seconds=time.monotonic() - self._origin)
        return self._start + elapsed + self._offset

    def advance(self, **delta: float) -> datetime:
        self._offset += timedelta(**delta)
        return self()
