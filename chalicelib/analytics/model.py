"""Athena's answers made into typed report rows, and the states of runs and jobs (pure).

GetQueryResults gives every value as text (`VarCharValue`) with the column types beside
them; a report stores numbers as numbers, dates as ISO dates and NULL as null, so that
clients never parse strings.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from chalicelib.core.errors import BadRequest

#: Athena's final query states, and the job's own first state (before the query starts).
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
STARTING, QUEUED = "STARTING", "QUEUED"
#: A run's states.
RUNNING, COMPLETE, INCOMPLETE = "running", "complete", "failed"

_INTEGERS = {"tinyint", "smallint", "integer", "int", "bigint"}
_FLOATS = {"double", "real", "float"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: The oldest day a report may be asked for, relative to today: the lake keeps objects
#: queryable (not yet in Glacier) for 90 days.
MAX_REPORT_AGE = timedelta(days=90)


def typed_value(text: str | None, kind: str) -> Any:
    """One result value of Athena type `kind`, as Python: int, float, Decimal, bool, str
    (dates and timestamps stay ISO text) or None."""
    if text is None:
        return None
    kind = kind.lower()
    if kind in _INTEGERS:
        return int(text)
    if kind in _FLOATS:
        value = float(text)  # "NaN" and "Infinity" are JSON-less: report them as null
        return None if value != value or value in (float("inf"), float("-inf")) else value
    if kind == "decimal":
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a decimal: {text!r}") from None
    if kind == "boolean":
        return text == "true"
    return text


def typed_rows(page_rows: list[dict[str, Any]], columns: list[dict[str, Any]]) -> list[dict]:
    """Rows of GetQueryResults pages (header row already dropped) as dicts of typed values."""
    names = [c["Name"] for c in columns]
    kinds = [c["Type"] for c in columns]
    rows = []
    for row in page_rows:
        values = [cell.get("VarCharValue") for cell in row["Data"]]
        rows.append({n: typed_value(v, k) for n, v, k in zip(names, values, kinds, strict=True)})
    return rows


def parse_day(text: str | None, today: date, to_run: bool = True) -> date:
    """A report day from a path or a request (YYYY-MM-DD), or BadRequest. A day `to_run`
    must be over and at most 90 days back; any real day may be read."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise BadRequest("date must be a day as YYYY-MM-DD.")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest("date must be a real day as YYYY-MM-DD.") from None
    if not to_run:
        return day
    if day >= today:
        raise BadRequest("A report covers a day that is over: ask for yesterday or earlier.")
    if day < today - MAX_REPORT_AGE:
        raise BadRequest("Reports go back 90 days at most (older data is archived).")
    return day


def run_state(jobs: list[dict[str, Any]], expected: list[str]) -> str:
    """A run's state from its jobs: running until every query has ended, then complete if
    all succeeded, else failed."""
    ended = {job["query"]: job["state"] for job in jobs if job.get("state") in FINAL_STATES}
    if any(name not in ended for name in expected):
        return RUNNING
    return COMPLETE if all(ended[n] == SUCCEEDED for n in expected) else INCOMPLETE
