"""The app's one clock: what tests set is what the app reads, and only inside the block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from chalicelib.core import clock
from tests.clock import TEST_NOW, RunningClock


def test_unit_tests_run_from_the_fixed_instant(app_clock: RunningClock) -> None:
    assert TEST_NOW <= clock.now() < TEST_NOW + timedelta(minutes=5)
    app_clock.advance(days=400)
    assert clock.now() > TEST_NOW + timedelta(days=400)


def test_use_sets_the_clock_for_a_block_only() -> None:
    before = clock.now()
    instant = datetime(2031, 2, 28, 23, 59, 59, tzinfo=UTC)
    with clock.use(lambda: instant):
        assert clock.now() == instant
        assert clock.timestamp() == "2031-02-28T23:59:59.000000Z"
    assert clock.now() >= before and clock.now() != instant


def test_timestamps_are_utc_and_sort_as_text() -> None:
    paris = timezone(timedelta(hours=1))
    assert clock.timestamp(datetime(2026, 1, 1, 0, 30, tzinfo=paris)) == (
        "2025-12-31T23:30:00.000000Z"
    )
    earlier, later = clock.timestamp(TEST_NOW), clock.timestamp(TEST_NOW + timedelta(seconds=1))
    assert earlier < later


def test_the_system_clock_is_utc() -> None:
    assert clock.system_time().tzinfo is UTC


def test_timestamps_to_the_second_are_utc_too() -> None:
    moment = datetime(2026, 1, 1, 0, 30, 5, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert clock.timestamp(moment, timespec="seconds") == "2025-12-31T23:30:05Z"


def test_only_the_apps_own_timestamps_are_timestamps() -> None:
    assert clock.is_timestamp(clock.timestamp(TEST_NOW))
    for other in (
        "2026-11-26T12:00:00Z",
        "2026-11-26T12:00:00.000000+00:00",
        "2026-11-26 12:00:00.000000Z",
        "٢٠٢٦-11-26T12:00:00.000000Z",  # digits, but not ASCII ones
        "2026-11-26T12:00:00.000000Z\n",
    ):
        assert not clock.is_timestamp(other), other


def test_timestamps_parse_back_and_convert_to_epoch_seconds() -> None:
    text = clock.timestamp(TEST_NOW + timedelta(microseconds=7))
    assert clock.parse(text) == TEST_NOW + timedelta(microseconds=7)
    assert clock.parse("2026-11-26T07:00:00-05:00") == TEST_NOW
    assert clock.epoch_seconds(text) == int(TEST_NOW.timestamp())
    assert clock.from_epoch(TEST_NOW.timestamp() + 0.5) == TEST_NOW + timedelta(seconds=0.5)
    assert clock.from_epoch(0).tzinfo is UTC
