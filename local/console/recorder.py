"""What the console shows as "invocations": every handler call the local stack makes,
recorded from the app's own access lines, as CloudWatch Logs Insights would read them.

The app writes one line per HTTP request (`request`, `core.http`) and one per event handler
invocation (`invocation`, `core.correlation`), each with its function, duration, outcome and
correlation id. `LogTap` is a logging handler on the app's logger, in the stack's process:
it turns those lines into `Invocation` rows in a bounded, thread-safe `InvocationLog`. An
error line written during an invocation (`invocation failed`, with its `error_type`) is
kept for that invocation's row. Nothing in the app knows the console exists.

The local event runtime's own verdicts (a retry scheduled, a partial batch, a timeout) are
rows too (`LogTap.runtime_verdict`, given every invocation the runtime reports).

Where a row's handler was fed from (the queue, stream, topic, bucket or schedule) comes from
the app's event sources (`source_names`), as Lambda's console lists a function's triggers.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

#: The function Chalice names for the REST API.
API_HANDLER = "api_handler"
#: What the local runtime adds to an invocation's outcome when it decides more than the
#: handler said (local/events: retries, partial batches, ignored answers, timeouts).
RUNTIME_VERDICTS = ("(attempt", "retried", "partial:", "batchItemFailures", "past its",
                    "timed out", "given up", "on-failure")  # fmt: skip
#: How many invocations the console keeps (the oldest are dropped first).
DEFAULT_CAPACITY = 5_000


@dataclass(frozen=True)
class Invocation:
    """One handler call, as the console lists it."""

    seq: int
    at: str  # ISO 8601, UTC, when it ended
    handler: str
    source: str
    batch_size: int
    duration_ms: float
    outcome: str  # "ok", "error: <type>", or an HTTP status for the API ("201")
    ok: bool
    correlation_id: str | None
    correlation_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def concerns(self, correlation_id: str) -> bool:
        """Whether this invocation did work for `correlation_id` (its own id, or one of its
        batch's records)."""
        return correlation_id == self.correlation_id or correlation_id in self.correlation_ids


class InvocationLog:
    """The newest `capacity` invocations, safe to add to from many threads at once."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._rows: deque[Invocation] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def add(self, **fields: Any) -> Invocation:
        with self._lock:
            row = Invocation(seq=next(self._seq), **fields)
            self._rows.append(row)
        return row

    def newest(
        self,
        limit: int = 200,
        handler: str | None = None,
        correlation_id: str | None = None,
        after: int = 0,
    ) -> list[Invocation]:
        """The newest rows first, at most `limit`, filtered by handler (exact name) and by
        correlation id; only those with `seq > after` (for polling)."""
        with self._lock:
            rows = list(self._rows)
        picked: list[Invocation] = []
        for row in reversed(rows):
            if row.seq <= after:
                break
            if handler and row.handler != handler:
                continue
            if correlation_id and not row.concerns(correlation_id):
                continue
            picked.append(row)
            if len(picked) >= limit:
                break
        return picked

    def handlers(self) -> list[str]:
        with self._lock:
            return sorted({row.handler for row in self._rows})

    def __len__(self) -> int:
        return len(self._rows)


class LogTap(logging.Handler):
    """Reads the app's access lines into `log` (see the module's docstring).

    `now()` gives the time each row is stamped with; `sources` maps a handler to where its
    events come from."""

    def __init__(
        self,
        log: InvocationLog,
        now: Callable[[], datetime],
        sources: dict[str, str] | None = None,
        current_correlation_id: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(level=logging.INFO)
        self.log = log
        self._now = now
        self._sources = sources or {}
        self._current_id = current_correlation_id or _app_correlation_id
        self._errors = threading.local()
        self._last = threading.local()  # the row this thread added last

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.msg if isinstance(record.msg, str) else record.getMessage()
            if message == "request":
                self._request(record)
            elif message == "invocation":
                self._invocation(record)
            elif message == "invocation failed":
                self._errors.last = getattr(record, "error_type", None) or "Exception"
        except Exception:  # a console must never break the app it watches
            self.handleError(record)

    def _request(self, record: logging.LogRecord) -> None:
        status = int(getattr(record, "status", 0) or 0)
        method = getattr(record, "method", "?")
        path = getattr(record, "path", None) or getattr(record, "route", "?")
        self._last.row = self.log.add(
            at=self._now().isoformat(timespec="milliseconds"),
            handler=API_HANDLER,
            source=f"{method} {path}",
            batch_size=1,
            duration_ms=float(getattr(record, "duration_ms", 0.0) or 0.0),
            outcome=str(status),
            ok=0 < status < 500,
            correlation_id=self._current_id() or _app_keys().get("correlation_id"),
        )

    def _invocation(self, record: logging.LogRecord) -> None:
        keys = _app_keys()
        handler = str(keys.get("function_name") or "?")
        ok = getattr(record, "outcome", "ok") == "ok"
        error = getattr(self._errors, "last", None)
        self._errors.last = None
        self._last.row = self.log.add(
            at=self._now().isoformat(timespec="milliseconds"),
            handler=handler,
            source=self._sources.get(handler, "invoke"),
            batch_size=int(getattr(record, "records", 1) or 1),
            duration_ms=float(getattr(record, "duration_ms", 0.0) or 0.0),
            outcome="ok" if ok else f"error: {error or 'Exception'}",
            ok=ok,
            correlation_id=self._current_id() or keys.get("correlation_id"),
            correlation_ids=tuple(keys.get("correlation_ids") or ()),
        )

    def runtime_verdict(self, invocation: Any) -> None:
        """A row for what the local runtime decided about an invocation beyond the handler's
        own outcome: a retry, a partial batch, a `batchItemFailures` answer Lambda ignores, a
        handler past its timeout, an event given up. With the ids of the handler's row on
        this thread, if it has one."""
        outcome = str(invocation.outcome)
        if not any(marker in outcome for marker in RUNTIME_VERDICTS):
            return
        row = getattr(self._last, "row", None)
        mine = row is not None and row.handler == invocation.handler
        self._last.row = None
        self.log.add(
            at=self._now().isoformat(timespec="milliseconds"),
            handler=invocation.handler,
            source=f"local runtime ({invocation.source})",
            batch_size=invocation.batch_size,
            duration_ms=float(invocation.duration_ms),
            outcome=outcome,
            ok=not outcome.startswith(("error", "partial")) and "ignored" not in outcome,
            correlation_id=row.correlation_id if mine else None,
            correlation_ids=row.correlation_ids if mine else (),
        )


def _app_correlation_id() -> str | None:
    from chalicelib.core import correlation

    return correlation.current()


def _app_keys() -> dict[str, Any]:
    from chalicelib.core.observability import logger

    return dict(logger.thread_safe_get_current_keys())


def install_tap(tap: LogTap) -> Callable[[], None]:
    """Attach `tap` to the app's logger (its access lines reach it through the child
    logger); returns what detaches it."""
    from chalicelib.core.observability import logger

    logger.addHandler(tap)
    return lambda: logger.removeHandler(tap)


def source_names(app: Any, prefix: str = "") -> dict[str, str]:
    """Where each of the app's event handlers gets its events, by handler name ("sqs:
    onboarding", "dynamodb stream: users", "schedule: cron(0 2 * * ? *)", ..., names without
    `prefix`); a function with no event source (a state machine's task) is "invoke"."""
    names: dict[str, str] = {}
    for source in app.event_sources:
        names[source.name] = (
            describe_source(source).replace(prefix, "") if prefix else (describe_source(source))
        )
    for function in getattr(app, "pure_lambda_functions", ()):
        names.setdefault(function.name, "invoke")
    return names


def describe_source(source: Any) -> str:
    kind = type(source).__name__
    for attribute, label in (
        ("queue", "sqs"),
        ("queue_arn", "sqs"),
        ("topic", "sns"),
        ("bucket", "s3"),
        ("stream", "kinesis"),
    ):
        value = getattr(source, attribute, None)
        if value:
            return f"{label}: {_short(str(value))}"
    if getattr(source, "stream_arn", None):
        return f"dynamodb stream: {_table_of(str(source.stream_arn))}"
    if getattr(source, "schedule_expression", None):
        return f"schedule: {_expression(source.schedule_expression)}"
    if getattr(source, "event_pattern", None):
        return "eventbridge rule"
    return kind


def _short(value: str) -> str:
    """A resource's name from its ARN or name."""
    return value.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _table_of(stream_arn: str) -> str:
    parts = stream_arn.split("/")
    return parts[1] if len(parts) > 2 else stream_arn


def _expression(expression: Any) -> str:
    to_string = getattr(expression, "to_string", None)
    return str(to_string() if callable(to_string) else expression)


def distinct(values: Iterable[str | None]) -> list[str]:
    return sorted({v for v in values if v})
