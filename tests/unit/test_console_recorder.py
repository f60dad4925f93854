"""The console's invocation log: the app's own access lines, read by a logging handler, as
rows with their handler, source, batch, duration, outcome and correlation ids."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.core import correlation
from chalicelib.core.observability import access_logger, logger
from local.console.recorder import InvocationLog, LogTap, install_tap, source_names

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


class Context:
    function_name = "onboard_users"
    aws_request_id = "req-1"


@pytest.fixture
def log() -> Iterator[InvocationLog]:
    log = InvocationLog(capacity=50)
    detach = install_tap(LogTap(log, lambda: NOW, {"onboard_users": "sqs: onboarding"}))
    try:
        yield log
    finally:
        detach()
        correlation.end_invocation()


def test_an_http_request_line_is_an_api_row_with_the_requests_correlation_id(
    log: InvocationLog,
) -> None:
    correlation.bind("corr-http")
    access_logger.info(
        "request", method="POST", route="/users/{id}", path="/users/7", status=201, duration_ms=12.5
    )
    [row] = log.newest()
    assert (row.handler, row.source, row.outcome, row.ok) == (
        "api_handler",
        "POST /users/7",
        "201",
        True,
    )
    assert (row.correlation_id, row.duration_ms, row.at) == (
        "corr-http",
        12.5,
        "2030-01-02T03:04:05.678+00:00",
    )
    access_logger.info("request", method="GET", path="/x", status=503, duration_ms=1)
    assert log.newest()[0].ok is False  # a 5xx is a failed invocation; a 4xx is the caller's


def test_an_event_invocation_takes_its_function_source_batch_and_all_its_ids(
    log: InvocationLog,
) -> None:
    correlation.start_invocation(Context(), ["c-1", "c-2"])
    access_logger.info("invocation", records=2, outcome="ok", duration_ms=3.0)
    [row] = log.newest()
    assert (row.handler, row.source, row.batch_size) == ("onboard_users", "sqs: onboarding", 2)
    assert row.correlation_ids == ("c-1", "c-2") and row.correlation_id not in (None, "c-1")
    assert row.concerns("c-2") and not row.concerns("c-3")


def test_a_failed_invocation_names_the_error_it_logged(log: InvocationLog) -> None:
    correlation.start_invocation(Context(), ["c-9"])
    try:
        raise KeyError("x")
    except KeyError:
        logger.exception("invocation failed", error_type="KeyError")
    access_logger.info("invocation", records=1, outcome="error", duration_ms=1.0)
    [row] = log.newest()
    assert (row.ok, row.outcome, row.correlation_id) == (False, "error: KeyError", "c-9")
    correlation.start_invocation(Context(), ["c-10"])
    access_logger.info("invocation", records=1, outcome="ok", duration_ms=1.0)
    assert log.newest()[0].outcome == "ok"  # the error went with its own invocation only


def test_other_lines_are_not_rows(log: InvocationLog) -> None:
    logger.info("search index updated", records=3)
    logger.warning("something")
    assert len(log) == 0


def test_the_log_filters_newest_first_pages_after_a_sequence_and_keeps_its_capacity() -> None:
    log = InvocationLog(capacity=5)
    fields: dict[str, Any] = {
        "at": "t",
        "source": "s",
        "batch_size": 1,
        "duration_ms": 1.0,
        "outcome": "ok",
        "ok": True,
    }
    for i in range(8):
        log.add(handler="a" if i % 2 else "b", correlation_id=f"c{i % 3}", **fields)
    assert [r.seq for r in log.newest()] == [8, 7, 6, 5, 4]
    assert [r.seq for r in log.newest(handler="a")] == [8, 6, 4]
    assert [r.seq for r in log.newest(correlation_id="c1")] == [8, 5]
    assert [r.seq for r in log.newest(after=6)] == [8, 7]
    assert [r.seq for r in log.newest(limit=2)] == [8, 7]
    assert log.handlers() == ["a", "b"]


def test_threads_adding_at_once_lose_no_row() -> None:
    log = InvocationLog(capacity=10_000)

    def add() -> None:
        for _ in range(500):
            log.add(
                at="t",
                handler="h",
                source="s",
                batch_size=1,
                duration_ms=1.0,
                outcome="ok",
                ok=True,
                correlation_id=None,
            )

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = log.newest(limit=10_000)
    assert len(rows) == 4_000 and len({r.seq for r in rows}) == 4_000


def test_every_event_handler_of_the_app_has_a_source_named_without_the_stage() -> None:
    from app import app

    names = source_names(app, "serverless-app-dev-")
    assert set(names) >= {s.name for s in app.event_sources}
    assert names["onboard_users"] == "sqs: onboarding"
    # (the stream's ARN exists once the stack has made the table: a placeholder here; the
    # browser test sees "dynamodb stream: users")
    assert names["index_users_for_search"].startswith("dynamodb stream: ")
    assert names["welcome_new_user"] == "sns: user-created"
    assert names["process_telemetry"] == "kinesis: telemetry"
    assert names["run_daily_analytics"].startswith("schedule: cron(")
    assert names["charge_payment"] == "invoke"


def test_the_runtimes_own_verdicts_are_rows_with_the_ids_of_the_handlers_row(
    log: InvocationLog,
) -> None:
    from local.console.recorder import RUNTIME_VERDICTS
    from local.events.core import Invocation as RuntimeInvocation

    [tap] = [h for h in logger.handlers if isinstance(h, LogTap)]
    correlation.start_invocation(Context(), ["c-7"])
    access_logger.info("invocation", records=1, outcome="error", duration_ms=2.0)
    assert len(log) == 1
    for plain in ("ok", "error: KeyError: 'user (42)'"):  # the handler's row says it all
        tap.runtime_verdict(RuntimeInvocation("onboard_users", "aws:sqs", 1, 2.0, plain))
    assert len(log) == 1
    retried = "error: KeyError: 'x' (attempt 1 of 3; retried in 11 s)"
    tap.runtime_verdict(RuntimeInvocation("onboard_users", "aws:sns", 1, 2.0, retried))
    row = log.newest()[0]
    assert (row.source, row.outcome, row.ok) == ("local runtime (aws:sns)", retried, False)
    assert row.correlation_id == "c-7"
    ignored = "ok, but batchItemFailures ignored: 1 message would be lost in AWS"
    tap.runtime_verdict(RuntimeInvocation("other", "aws:sqs", 3, 1.0, ignored))
    newest = log.newest()[0]
    assert (newest.ok, newest.correlation_id) == (False, None)  # not that thread's last row
    assert any(marker in retried for marker in RUNTIME_VERDICTS)
