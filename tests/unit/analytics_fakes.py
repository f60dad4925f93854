"""In-memory ports of the analytics domain (`chalicelib/analytics/ports.py`), for unit tests
of the service without AWS. They keep the adapters' contracts:

- MemoryJobs is DynamoAnalyticsJobs: `begin_run` is the conditional update (a new day or,
  with `force`, a day whose run is not running; a retry of the request that began the running
  run gets that run; anything else is RunExists with the stored report), `finish_job` sets the
  outcome only if the job exists and the outcome's first field (its state) is not final yet,
  `set_execution` makes a STARTING job QUEUED (and only sets the id otherwise),
  `finish_run` only for the day's current running run; values go through DynamoDB's number
  round trip (floats and Decimals come back as ints or floats, None is not stored);
- MemoryEngine is AthenaQueries: the same token gives the same execution (a different query
  with it is refused), `describe` of an unknown id fails, `results` is at most `max_rows`
  rows with the truncation flag. A test ends executions with `end()`.
"""

from __future__ import annotations

import copy
import itertools
from datetime import date
from typing import Any

from chalicelib.analytics import model, queries
from chalicelib.analytics.ports import QueryExecution, QueryResult, RunExists
from chalicelib.core.dynamo import plain, storable


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    """What DynamoDB gives back of `values` (to_item, then from_item)."""
    return {k: plain(storable(copy.deepcopy(v))) for k, v in values.items() if v is not None}


class MemoryJobs:
    def __init__(self) -> None:
        self.reports: dict[date, dict[str, Any]] = {}
        self.job_items: dict[tuple[date, int, str], dict[str, Any]] = {}
        self.writes = 0

    def begin_run(
        self,
        day: date,
        queries: list[str],
        requested_by: str,
        request_id: str,
        force: bool,
        now: str,
    ) -> int:
        existing = self.reports.get(day)
        if existing is not None and not (force and existing["state"] != model.RUNNING):
            if existing.get("request_id") == request_id and existing["state"] == model.RUNNING:
                return int(existing["run"])
            raise RunExists(copy.deepcopy(existing))
        report = dict(existing or {})
        for removed in ("parts", "errors", "completed_at", "bytes_scanned"):
            report.pop(removed, None)
        report |= _stored({
            "run": (existing or {}).get("run", 0) + 1,
            "state": model.RUNNING,
            "requested_at": now,
            "requested_by": requested_by,
            "request_id": request_id,
            "queries": list(queries),
            "kind": "daily",
            "report_date": day.isoformat(),
        })  # fmt: skip
        self.reports[day] = report
        self.writes += 1
        return int(report["run"])

    def report(self, day: date) -> dict[str, Any] | None:
        found = self.reports.get(day)
        return copy.deepcopy(found) if found is not None else None

    def jobs(self, day: date, run: int) -> list[dict[str, Any]]:
        mine = [(q, job) for (d, r, q), job in self.job_items.items() if (d, r) == (day, run)]
        return [copy.deepcopy(job) for _, job in sorted(mine, key=lambda pair: pair[0])]

    def add_job(self, day: date, run: int, query: str, now: str) -> None:
        key = (day, run, query)
        if key not in self.job_items:
            self.job_items[key] = _stored({"report_date": day.isoformat(), "run": run,
                                           "query": query, "state": model.STARTING,
                                           "created_at": now})  # fmt: skip
            self.writes += 1

    def set_execution(self, day: date, run: int, query: str, execution_id: str) -> None:
        # QUEUED only from STARTING; else an UpdateItem without a condition (which makes the
        # item if there is none).
        job = self.job_items.setdefault((day, run, query), {})
        if job.get("state") == model.STARTING:
            job["state"] = model.QUEUED
        job["query_execution_id"] = execution_id
        self.writes += 1

    def finish_job(self, day: date, run: int, query: str, outcome: dict[str, Any]) -> bool:
        job = self.job_items.get((day, run, query))
        values = _stored(outcome)
        first = next(iter(values))  # the adapter's condition names the outcome's first field
        if job is None or job.get(first) in model.FINAL_STATES:
            return False
        job |= values
        self.writes += 1
        return True

    def finish_run(self, day: date, run: int, outcome: dict[str, Any]) -> bool:
        report = self.reports.get(day)
        if report is None or report["run"] != run or report["state"] != model.RUNNING:
            return False
        report |= _stored(outcome)
        self.writes += 1
        return True

    def recent(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        ordered = sorted(self.reports.values(), key=lambda r: r["report_date"], reverse=True)
        items = [copy.deepcopy(r) for r in ordered if before is None or r["report_date"] < before]
        items = items[: limit + 1]
        if len(items) > limit:
            return items[:limit], items[limit - 1]["report_date"]
        return items, None


class UnknownExecution(LookupError):
    """Athena's InvalidRequestException for an id it does not know."""


class MemoryEngine:
    def __init__(self) -> None:
        self.executions: dict[str, QueryExecution] = {}
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.tokens: dict[str, str] = {}
        self.starts: list[tuple[str, str]] = []  # every start asked for: (sql, token)
        self._ids = (f"exec-{n:04d}" for n in itertools.count(1))
        self.failing_starts: set[str] = set()  # query names whose start fails

    def start(self, sql: str, token: str) -> str:
        self.starts.append((sql, token))
        tag = queries.job_tag(sql)
        if tag is not None and tag.name in self.failing_starts:
            raise ConnectionError("Athena could not be reached")
        if token in self.tokens:
            earlier = self.executions[self.tokens[token]]
            if earlier.query != sql:
                raise ValueError("IdempotentParameterMismatch")
            return earlier.id
        execution_id = next(self._ids)
        self.tokens[token] = execution_id
        self.executions[execution_id] = QueryExecution(execution_id, sql, "QUEUED")
        return execution_id

    def add(self, sql: str, state: str = "RUNNING") -> str:
        """A query started by someone else in the workgroup."""
        execution_id = next(self._ids)
        self.executions[execution_id] = QueryExecution(execution_id, sql, state)
        return execution_id

    def end(
        self,
        execution_id: str,
        state: str = model.SUCCEEDED,
        rows: list[dict[str, Any]] | None = None,
        reason: str | None = None,
        bytes_scanned: int = 1000,
    ) -> None:
        current = self.executions[execution_id]
        self.executions[execution_id] = QueryExecution(
            id=execution_id, query=current.query, state=state, reason=reason,
            bytes_scanned=bytes_scanned, engine_ms=12, queue_ms=3, total_ms=20,
            submitted_at="2026-11-26T00:15:00.000000Z",
            completed_at="2026-11-26T00:15:01.000000Z",
        )  # fmt: skip
        self.answers[execution_id] = copy.deepcopy(rows or [])

    def describe(self, execution_id: str) -> QueryExecution:
        if execution_id not in self.executions:
            raise UnknownExecution(f"QueryExecution {execution_id} was not found")
        return self.executions[execution_id]

    def results(self, execution_id: str, max_rows: int) -> QueryResult:
        execution = self.describe(execution_id)
        if execution.state != model.SUCCEEDED:
            raise UnknownExecution(f"Query did not finish successfully: {execution.state}")
        rows = copy.deepcopy(self.answers.get(execution_id, []))
        return QueryResult(rows[:max_rows], len(rows) > max_rows)
