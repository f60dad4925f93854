"""The one clock the app reads the time from, so tests can set it.

Every "what time is it now" in the app goes through `now()`: timestamps stored on records,
how far in the future an event may be, when an upload link expires, when a reservation is
stale. Tests replace it for a block (`with clock.use(test_clock):`) and get the same answer
wherever the app asks, so no test depends on the date it runs on. Code that waits or
measures durations uses `time.monotonic()` instead: that is not a date.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

Clock = Callable[[], datetime]

#: The form `timestamp` writes, for use inside larger patterns (sort keys, cursors).
TIMESTAMP_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def system_time() -> datetime:
    """The machine's time, in UTC (Lambda's clock is kept in sync by AWS)."""
    return datetime.now(UTC)


_current: Clock = system_time


def now() -> datetime:
    """The current time, timezone-aware UTC, from the clock in use."""
    return _current()


def timestamp(moment: datetime | None = None, timespec: str = "microseconds") -> str:
    """ISO 8601 in UTC with microseconds and a `Z` (`2026-11-26T12:00:00.000000Z`): sorts
    as text in time order, which the tables' sort keys rely on. `timespec="seconds"` gives
    the shorter form some records use (`2026-11-26T12:00:00Z`)."""
    moment = (moment or now()).astimezone(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def is_timestamp(text: str) -> bool:
    """`text` has exactly the form `timestamp` writes (with microseconds)."""
    return bool(_TIMESTAMP.fullmatch(text))


def parse(text: str) -> datetime:
    """The moment an ISO 8601 string names (a `timestamp`, or any form `fromisoformat`
    reads); ValueError if it is not one."""
    return datetime.fromisoformat(text)


def epoch_seconds(text: str) -> int:
    """A timestamp (with its time zone) as whole seconds since 1970, as TTL attributes want."""
    return int(parse(text).timestamp())


def from_epoch(seconds: float) -> datetime:
    """Seconds since 1970 (as AWS stamps events) as a timezone-aware UTC moment."""
    return datetime.fromtimestamp(seconds, UTC)


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Read the time from `clock` inside the block (tests, benchmarks, replays)."""
    global _current
    previous, _current = _current, clock
    try:
        yield clock
    finally:
        _current = previous
