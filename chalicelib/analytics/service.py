"""The daily report: start its queries, complete its jobs as Athena says they ended, serve it.

    schedule (00:30 UTC) ─► run_daily(yesterday) ─► one job record + StartQueryExecution per
      query (no function waits on a query)
    Athena Query State Change (EventBridge) ─► query_changed(id) ─► GetQueryExecution, page
      GetQueryResults, record the job's end ─► once every job has ended, the report
    GET /analytics/daily[/{date}] ─► the reports

At least once, everywhere: a retried schedule resumes the run it began (same request id) and
Athena's ClientRequestToken makes a restarted query the same execution; a redelivered state
change finds the job already ended and changes nothing; the report is written once, by
whichever completion sees the last job end (the write is conditional on the run still
running). A run whose completion events were lost, or whose start broke half way, is
settled by the next scheduled run, which asks Athena about every job still open
(`settle_open_runs`), or by an admin's re-run of that day.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from chalicelib.analytics import model, queries
from chalicelib.analytics.ports import JobStore, QueryEngine, RunExists
from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable
from chalicelib.core.pagination import BAD_CURSOR

logger = Logger(child=True)

#: Rows kept of one query's result (the report stays far below DynamoDB's 400 KB item).
MAX_ROWS = 200
#: A run still open after this long is asked about (its completion events may be lost).
SETTLE_AFTER = timedelta(minutes=30)
SCHEDULE = "schedule"


class AnalyticsService:
    def __init__(
        self,
        store: JobStore,
        engine: QueryEngine,
        database: str | None,
        table: str,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._store = store
        self._engine = engine
        self._database = database
        self._table = table
        self._now = now

    # --- starting ------------------------------------------------------------------------

    def run_scheduled(self, fired_at: datetime, request_id: str) -> dict[str, Any] | None:
        """The schedule's run: yesterday's report (UTC), unless the day already has one; then
        runs left open (lost completion events) are settled."""
        day = (fired_at - timedelta(days=1)).date()
        try:
            started = self.run_daily(day, requested_by=SCHEDULE, request_id=request_id)
        except RunExists as exists:
            logger.info("day already reported", day=day.isoformat(), state=exists.report["state"])
            started = None
        self.settle_open_runs()
        return started

    def rerun(self, principal: Principal, day_text: str, request_id: str) -> dict[str, Any]:
        """An admin's run of one day (again, if it has a report); 409 while one runs, 503 if
        Athena or DynamoDB refuse its start (the run is then over: try again)."""
        if not principal.is_admin:
            raise Forbidden("Only admins may run analytics.")
        day = model.parse_day(day_text, self._now().date())
        by = principal.user_id
        for attempt in (1, 2):
            try:
                return self.run_daily(
                    day, requested_by=by, request_id=request_id, force=True, fail_fast=True
                )
            except RunExists as exists:
                # a run left open for long (lost events, a start that broke) is settled first
                if attempt == 2 or not self._settled(exists.report):
                    message = f"The report of {day.isoformat()} is being computed."
                    raise Conflict(message) from exists
            except Exception as error:
                message = "The report's queries could not be started; try again in a minute."
                raise ServiceUnavailable(message) from error
        raise AssertionError("unreachable")

    def run_daily(
        self,
        day: date,
        *,
        requested_by: str,
        request_id: str,
        force: bool = False,
        fail_fast: bool = False,
    ) -> dict[str, Any]:
        """Start `day`'s report queries. If a start fails, the error is raised: a retry of the
        same request resumes the run (the schedule's, by Lambda's retries). With `fail_fast`
        (an admin's request, whose retry is a new request) the jobs not started fail and the
        run ends now, so that the day can be run again at once."""
        now = clock.timestamp(self._now())
        names = list(queries.QUERY_NAMES)
        if not self._database:
            raise RuntimeError("this service was made to complete runs, not to start them")
        run = self._store.begin_run(day, names, requested_by, request_id, force, now)
        started: list[str] = []
        try:
            for name, sql in queries.report_queries(self._database, self._table, day, run).items():
                self._store.add_job(day, run, name, now)
                execution_id = self._engine.start(sql, _token(day, run, name))
                self._store.set_execution(day, run, name, execution_id)
                started.append(name)
        except Exception as error:
            logger.exception("report queries failed to start", day=day.isoformat(), run=run)
            if fail_fast:
                for name in names[len(started) :]:
                    self._fail_unstarted(day, run, name, f"not started: {error}")
                self._finish_run_if_done(day, run)
            raise
        logger.info("report queries started", day=day.isoformat(), run=run, queries=len(names))
        return self.report_of(day)

    # --- completing ----------------------------------------------------------------------

    def query_changed(self, execution_id: str) -> str:
        """Athena says a query changed state: record the end of a report's job. Returns what
        was done (for the log)."""
        execution = self._engine.describe(execution_id)
        tag = queries.job_tag(execution.query)
        if tag is None:  # the rule delivers this workgroup's queries: an ad-hoc one
            logger.warning("a query of the workgroup that is no report's", execution=execution_id)
            return "not a report query"
        if execution.state not in model.FINAL_STATES:
            return f"still {execution.state}"
        day = date.fromisoformat(tag.day)
        outcome: dict[str, Any] = {
            "state": execution.state,
            "query_execution_id": execution.id,
            "bytes_scanned": execution.bytes_scanned,
            "engine_ms": execution.engine_ms,
            "queue_ms": execution.queue_ms,
            "total_ms": execution.total_ms,
            "submitted_at": execution.submitted_at,
            "completed_at": execution.completed_at,
        }
        if execution.state == model.SUCCEEDED:
            result = self._engine.results(execution.id, MAX_ROWS)
            outcome |= {"rows": result.rows, "truncated": result.truncated}
        else:
            outcome["error"] = execution.reason or execution.state.lower()
        recorded = self._store.finish_job(day, tag.run, tag.name, outcome)
        self._finish_run_if_done(day, tag.run)
        return f"{tag.name} {execution.state.lower()}" if recorded else "already recorded"

    def settle_open_runs(self) -> int:
        """Settle the runs open for over 30 minutes among the recent reports; returns how
        many were settled. One that cannot be settled now is logged and left for later."""
        reports, _ = self._store.recent(30, None)
        return sum(self._settled(report) for report in reports)

    def _settled(self, report: dict[str, Any]) -> bool:
        """`_settle`, a failure logged and taken as "not settled" (it is tried again later)."""
        try:
            return self._settle(report)
        except Exception:
            logger.exception("an open run could not be settled", day=report["report_date"])
            return False

    def _settle(self, report: dict[str, Any]) -> bool:
        """Ask Athena about each job of `report`'s run if it has been open for over 30 minutes
        (a job never started fails); True if it was such a run."""
        cutoff = clock.timestamp(self._now() - SETTLE_AFTER)
        if report["state"] != model.RUNNING or report["requested_at"] > cutoff:
            return False
        day, run = date.fromisoformat(report["report_date"]), report["run"]
        jobs = {job["query"]: job for job in self._store.jobs(day, run)}
        for name in report["queries"]:
            job = jobs.get(name, {})
            if job.get("state") in model.FINAL_STATES:
                continue
            if job.get("query_execution_id"):
                self.query_changed(job["query_execution_id"])
            else:
                self._fail_unstarted(day, run, name, "the query was never started")
        self._finish_run_if_done(day, run)
        return True

    def _fail_unstarted(self, day: date, run: int, name: str, reason: str) -> None:
        self._store.add_job(day, run, name, clock.timestamp(self._now()))
        self._store.finish_job(day, run, name, {"state": model.FAILED, "error": reason})

    def _finish_run_if_done(self, day: date, run: int) -> None:
        report = self._store.report(day)
        if report is None or report["run"] != run or report["state"] != model.RUNNING:
            return
        jobs = self._store.jobs(day, run)
        state = model.run_state(jobs, report["queries"])
        if state == model.RUNNING:
            return
        parts = {job["query"]: job.get("rows", []) for job in jobs if job["state"] == "SUCCEEDED"}
        errors = {job["query"]: job.get("error", "") for job in jobs if job["state"] != "SUCCEEDED"}
        self._store.finish_run(day, run, {
            "state": state,
            "parts": parts,
            "errors": errors,
            "bytes_scanned": sum(job.get("bytes_scanned", 0) for job in jobs),
            "events": sum(row.get("events", 0) for row in parts.get("by_kind", [])),
            "completed_at": clock.timestamp(self._now()),
        })  # fmt: skip
        logger.info("report finished", day=day.isoformat(), run=run, state=state)

    # --- reading -------------------------------------------------------------------------

    def get(self, principal: Principal, day_text: str) -> dict[str, Any]:
        if not principal.is_admin:
            raise Forbidden("Only admins may read analytics.")
        day = model.parse_day(day_text, self._now().date(), to_run=False)
        return self.report_of(day)

    def report_of(self, day: date) -> dict[str, Any]:
        report = self._store.report(day)
        if report is None:
            raise NotFound(
                f"No report for {day.isoformat()} yet: the daily job makes it after midnight "
                f"UTC, or an admin can POST /analytics/daily/{day.isoformat()}/run."
            )
        return _shown(report, self._store.jobs(day, report["run"]))

    def recent(self, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        if not principal.is_admin:
            raise Forbidden("Only admins may read analytics.")
        if cursor is not None:
            try:
                model.parse_day(cursor, self._now().date(), to_run=False)
            except BadRequest:  # a cursor is a day here, but the client sent a cursor
                raise BadRequest(BAD_CURSOR) from None
        reports, next_before = self._store.recent(limit, cursor)
        return {
            "reports": [_summary(report) for report in reports],
            "next_cursor": next_before,
        }


def _token(day: date, run: int, name: str) -> str:
    """Athena's ClientRequestToken for one job (32 to 128 characters): a retried start of
    the same job is the same query execution."""
    return hashlib.sha256(f"{day.isoformat()}/{run}/{name}".encode()).hexdigest()


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a list shows of a report (the `recent` index holds these attributes only)."""
    shown = {k: report.get(k) for k in ("state", "run", "requested_at", "requested_by",
             "completed_at", "bytes_scanned", "events")}  # fmt: skip
    shown["failed_queries"] = sorted(report.get("errors", {}))
    return {"date": report["report_date"], **shown}


def _shown(report: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    parts = report.get("parts", {})
    shown = _summary(report)
    shown |= {name: parts.get(name, []) for name in queries.QUERY_NAMES}
    shown["errors"] = report.get("errors", {})
    shown["jobs"] = [
        {
            k: job.get(k)
            for k in (
                "query",
                "state",
                "query_execution_id",
                "bytes_scanned",
                "engine_ms",
                "queue_ms",
                "total_ms",
                "submitted_at",
                "completed_at",
                "error",
                "truncated",
            )
            if job.get(k) is not None
        }
        for job in sorted(jobs, key=lambda j: queries.QUERY_NAMES.index(j["query"]))
    ]
    return shown
