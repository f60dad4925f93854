"""The one clock the app reads the time from, so tests can set it.

Every "what time is it now" in the app goes through `now()`: timestamps stored on records,
how far in the future an event may be, when an upload link expires, when a reservation is
stale. Tests replace it for a block (`with clock.use(test_clock):`) and get the same answer
wherever the app asks, so no test depends on the date it runs on. Code that waits or
measures durations uses `time.monotonic()` instead: that is not a date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_time() -> datetime:
    """The machine's time, in UTC (Lambda's clock is kept in sync by AWS)."""
    return datetime.now(UTC)


_current: Clock = system_time


def now() -> datetime:
    """The current time, timezone-aware UTC, from the clock in use."""
    return _current()


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 in UTC with microseconds and a `Z` (`2026-11-26T12:00:00.000000Z`): sorts
    as text in time order, which the tables' sort keys rely on."""
    moment = (moment or now()).astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Read the time from `clock` inside the block (tests, benchmarks, replays)."""
    global _current
    previous, _current = _current, clock
    try:
        yield clock
    finally:
        _current = previous
