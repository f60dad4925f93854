"""EventBridge schedule expressions, `rate(...)` and `cron(...)`, as AWS reads them.

cron has six fields: minutes, hours, day-of-month, month, day-of-week, year (all UTC); one
of day-of-month and day-of-week must be `?`. Supported: `*`, `?`, numbers, names (JAN-DEC,
SUN-SAT), ranges, lists and `/` steps. `L`, `W` and `#` are refused with a clear message
rather than read wrongly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}
#: (name, lowest, highest, names) of each cron field.
_FIELDS = [
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
]


class ScheduleError(ValueError):
    """The expression is not one EventBridge would accept (or one not supported here)."""


@dataclass(frozen=True)
class Schedule:
    expression: str
    every: timedelta | None = None  # rate(...)
    fields: tuple[frozenset[int] | None, ...] = ()  # cron(...); None stands for `?`

    def next_after(self, moment: datetime, started: datetime | None = None) -> datetime:
        """The first firing strictly after `moment` (rates count from `started`)."""
        if self.every is not None:
            origin = started or moment
            periods = int((moment - origin) / self.every) + 1
            return origin + periods * self.every
        return _next_cron(self.fields, moment)


def parse(expression: str) -> Schedule:
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if count < 1 or (count == 1) != (not rate.group(2).endswith("s")):
            raise ScheduleError(f"{expression!r}: use 'rate(1 {unit})' or 'rate(N {unit}s)'")
        return Schedule(text, every=timedelta(seconds=count * _UNITS[unit]))
    cron = _CRON.match(text)
    if not cron:
        raise ScheduleError(f"{expression!r} is neither rate(...) nor cron(...)")
    parts = cron.group(1).split()
    if len(parts) != 6:
        raise ScheduleError(f"{expression!r}: cron takes 6 fields, got {len(parts)}")
    if (parts[2] == "?") == (parts[4] == "?"):
        raise ScheduleError(f"{expression!r}: exactly one of day-of-month, day-of-week is '?'")
    fields = tuple(_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True))
    return Schedule(text, fields=fields)


def _field(
    text: str, name: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int] | None:
    if text == "?":
        return None
    if any(mark in text.upper() for mark in ("L", "W", "#")) and not names:
        raise ScheduleError(f"{name} {text!r}: L, W and # are not supported locally")
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = _value(first, name, low, high, names), _value(last, name, low, high, names)
        else:
            start = _value(base, name, low, high, names)
            end = high if step_text else start
        if step < 1 or start > end:
            raise ScheduleError(f"{name} {item!r} is not a valid range or step")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise ScheduleError(f"{name} {text!r}: expected a number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{name} {text!r}: out of range {low}-{high}")
    return value


def _next_cron(fields: tuple[frozenset[int] | None, ...], moment: datetime) -> datetime:
    minutes, hours, days, months, weekdays, years = fields
    assert minutes is not None and hours is not None and months is not None and years is not None
    after = moment.astimezone(UTC).replace(second=0, microsecond=0)
    day = after.date()
    for _ in range(366 * 8):
        if day.year in years and day.month in months and _day_matches(day, days, weekdays):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if candidate > moment:
                        return candidate
        day += timedelta(days=1)
    raise ScheduleError("the expression never fires in the next 8 years")


def _day_matches(day: date, days: frozenset[int] | None, weekdays: frozenset[int] | None) -> bool:
    if days is not None:
        return day.day in days
    assert weekdays is not None
    return (day.isoweekday() % 7) + 1 in weekdays  # AWS: 1 = Sunday ... 7 = Saturday
