"""`make lake`, `make query` and `make report`: what they say without a stack or with bad
arguments, and the lake generator's events (valid, deterministic, in their hours)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.telemetry.model import validate_event
from local import lake, query, report


def test_without_a_running_stack_each_tool_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report.main(["2026-12-05", "--state-dir", str(tmp_path)]) == 1
    assert "make run" in capsys.readouterr().err


def test_a_bad_day_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["yesterday"]) == 2
    assert "not a day" in capsys.readouterr().err


def test_the_query_table_aligns_its_columns() -> None:
    shown = query.table([["event_type", "n"], ["transaction", "12"], ["x", "3"]])
    assert shown.splitlines() == [
        "event_type  | n ", "------------+---", "transaction | 12", "x           | 3 "]  # fmt: skip


def test_the_lake_generator_is_valid_repeatable_and_within_its_days() -> None:
    end = datetime(2026, 11, 26, tzinfo=UTC)
    first = list(lake.generate(2_000, 3, end, seed=3))
    assert first == list(lake.generate(2_000, 3, end, seed=3))
    assert len({e["event_id"] for e in first}) == 2_000
    for event in first:
        assert validate_event(event, end) == event
        assert "2026-11-23" <= event["timestamp"][:10] <= "2026-11-25"
    kinds = {e["event_type"] for e in first}
    assert kinds == {"user_activity", "transaction", "system_metric"}
