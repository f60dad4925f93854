"""What the analytics service needs from the outside: a query engine (Athena) and a store of
runs and jobs (DynamoDB). The in-memory versions in the tests implement the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol


@dataclass(frozen=True)
class QueryExecution:
    """What GetQueryExecution says about one query."""

    id: str
    query: str
    state: str
    reason: str | None = None
    bytes_scanned: int = 0
    engine_ms: int = 0
    queue_ms: int = 0
    total_ms: int = 0
    submitted_at: str | None = None
    completed_at: str | None = None


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, Any]]
    truncated: bool = False
    columns: list[dict[str, str]] = field(default_factory=list)


class QueryEngine(Protocol):
    def start(self, sql: str, token: str) -> str:
        """Start `sql` in the workgroup; the same `token` gives the same execution id."""

    def describe(self, execution_id: str) -> QueryExecution: ...

    def results(self, execution_id: str, max_rows: int) -> QueryResult:
        """The typed rows of a succeeded query (at most `max_rows`)."""


class RunExists(Exception):
    """The day already has a report (or a run under way): `state` says which."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(f"the report of {report['report_date']} is {report['state']}")
        self.report = report


class JobStore(Protocol):
    def begin_run(
        self,
        day: date,
        queries: list[str],
        requested_by: str,
        request_id: str,
        force: bool,
        now: str,
    ) -> int:
        """A new run for `day` (or the run this very request began, when it is retried);
        RunExists if the day has a report and `force` is false, or a run is under way."""

    def report(self, day: date) -> dict[str, Any] | None: ...

    def jobs(self, day: date, run: int) -> list[dict[str, Any]]: ...

    def add_job(self, day: date, run: int, query: str, now: str) -> None:
        """The job's record, before its query starts (kept if it exists)."""

    def set_execution(self, day: date, run: int, query: str, execution_id: str) -> None: ...

    def finish_job(self, day: date, run: int, query: str, outcome: dict[str, Any]) -> bool:
        """Record a job's end once: False if it had already ended."""

    def finish_run(self, day: date, run: int, outcome: dict[str, Any]) -> bool:
        """Record the run's end and its report, if `run` is still the day's running run."""

    def recent(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Reports newest day first, from the day before `before`; and the next `before`."""
