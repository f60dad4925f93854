"""EventBridge schedule expressions: when they fire, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from local.events.schedule_expressions import ScheduleError, parse

T0 = datetime(2026, 11, 26, 1, 30, 15, tzinfo=UTC)  # a Thursday


def fires(expression: str, after: datetime = T0, count: int = 3) -> list[str]:
    schedule, moment, out = parse(expression), after, []
    for _ in range(count):
        moment = schedule.next_after(moment, started=after)
        out.append(moment.strftime("%a %Y-%m-%d %H:%M"))
    return out


def test_rates_count_from_the_start() -> None:
    assert fires("rate(5 minutes)") == [
        "Thu 2026-11-26 01:35", "Thu 2026-11-26 01:40", "Thu 2026-11-26 01:45",
    ]  # fmt: skip
    assert parse("rate(1 day)").every == timedelta(days=1)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "cron(0 2 * * ? *)",
            ["Thu 2026-11-26 02:00", "Fri 2026-11-27 02:00", "Sat 2026-11-28 02:00"],
        ),
        (
            "cron(0/15 * * * ? *)",
            ["Thu 2026-11-26 01:45", "Thu 2026-11-26 02:00", "Thu 2026-11-26 02:15"],
        ),
        (
            "cron(0 12 ? * MON-FRI *)",
            ["Thu 2026-11-26 12:00", "Fri 2026-11-27 12:00", "Mon 2026-11-30 12:00"],
        ),
        (
            "cron(30 9 1 JAN,JUL ? 2027-2028)",
            ["Fri 2027-01-01 09:30", "Thu 2027-07-01 09:30", "Sat 2028-01-01 09:30"],
        ),
        (
            "cron(0 0 ? * 1 *)",
            ["Sun 2026-11-29 00:00", "Sun 2026-12-06 00:00", "Sun 2026-12-13 00:00"],
        ),
        ("cron(31 1 26 11 ? 2026)", ["Thu 2026-11-26 01:31"]),
    ],
)
def test_cron(expression: str, expected: list[str]) -> None:
    assert fires(expression, count=len(expected)) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(5 weeks)",
        "every 5 minutes",
        "cron(0 2 * * *)",
        "cron(0 2 * * * *)",
        "cron(0 2 ? * ? *)",
        "cron(0 25 * * ? *)",
        "cron(0 2 L * ? *)",
        "cron(0 2 ? * 6#3 *)",
        "cron(0 2 15W * ? *)",
        "cron(0 2 * FOO ? *)",
        "cron(5-1 2 * * ? *)",
        "cron(0 2 * * ? 1900)",
    ],
)
def test_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        parse(expression)


def test_a_schedule_that_never_comes_again_says_so() -> None:
    with pytest.raises(ScheduleError, match="never fires"):
        parse("cron(0 0 1 1 ? 2026)").next_after(T0)
