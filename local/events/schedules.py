"""Scheduled jobs (`@app.schedule`): each fires by its `rate(...)` or `cron(...)` expression
(UTC; parsed by schedule_expressions.py), with the event EventBridge sends; a failing run is
tried 3 times in all, as EventBridge's asynchronous invocation does. `make fire JOB=<name>`
fires any scheduled job now (`local/fire.py`, through `EventRuntime.fire`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.core import clock
from local.events.async_delivery import send_async_failure
from local.events.core import EventRuntime, Invocation
from local.events.schedule_expressions import parse

log = logging.getLogger(__name__)


class ScheduledJob:
    """Fires a scheduled job by its expression until the runtime stops."""

    ATTEMPTS = 3  # EventBridge invokes asynchronously: the first try and two retries

    def __init__(
        self,
        runtime: EventRuntime,
        source: Any,
        clock: Callable[[], datetime] = clock.now,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        expression = source.schedule_expression
        text = expression if isinstance(expression, str) else expression.to_string()
        self._runtime = runtime
        self._source = source
        self._schedule = parse(text)
        self._clock = clock
        self._wait = wait or runtime.stopping.wait

    def run(self) -> None:
        started = self._clock()
        due = self._schedule.next_after(started, started)
        while not self._runtime.stopping.is_set():
            remaining = (due - self._clock()).total_seconds()
            if remaining > 0:
                if self._wait(min(remaining, 60.0)):
                    return
                continue
            try:
                self._runtime.fire(self._source.name, at=due)
            except Exception:
                log.exception("scheduled job %s could not be fired", self._source.name)
            due = self._schedule.next_after(due, started)


def scheduled_jobs(app: Any) -> dict[str, Any]:
    """The app's scheduled jobs, by name."""
    from chalice.app import ScheduledEventConfig

    return {s.name: s for s in app.event_sources if isinstance(s, ScheduledEventConfig)}


def fire(
    runtime: EventRuntime, name: str, at: datetime | None = None, retry_delay: float = 1.0
) -> Invocation:
    """Run scheduled job `name` once, as EventBridge would at `at` (default: now): up to
    3 attempts if it fails, `retry_delay` seconds apart. Returns the last attempt's
    invocation."""
    jobs = runtime.scheduled_jobs()
    if name not in jobs:
        listed = ", ".join(sorted(jobs)) or "none"
        raise KeyError(f"no scheduled job {name!r}; the app has: {listed}")
    event = scheduled_event(runtime, name, at or clock.now())
    for attempt in range(1, ScheduledJob.ATTEMPTS + 1):
        result, invocation = runtime.invoke(name, "aws.events", event)
        failed = isinstance(result, Exception)
        if failed and attempt < ScheduledJob.ATTEMPTS:
            invocation.outcome += f" (attempt {attempt} of {ScheduledJob.ATTEMPTS}; retried)"
        elif failed:
            invocation.outcome += f" (attempt {attempt}; {_give_up(runtime, name, event, result)})"
        runtime.report(invocation)
        wait = retry_delay if attempt < ScheduledJob.ATTEMPTS else 0
        if not failed or runtime.stopping.wait(wait):
            break
    return invocation


def _give_up(runtime: EventRuntime, name: str, event: dict[str, Any], error: Exception) -> str:
    """Lambda's on-failure record of the event to the function's destination
    (functions.json's EventInvokeConfig), as for any asynchronous invocation; says where."""
    if send_async_failure(runtime, name, event, error, ScheduledJob.ATTEMPTS):
        return "on-failure record sent to its destination"
    return "given up, as EventBridge would"


def scheduled_event(runtime: EventRuntime, name: str, at: datetime) -> dict[str, Any]:
    """The event EventBridge sends job `name` when its rule fires at `at`."""
    account = runtime.account()
    rule = f"{getattr(runtime.app, 'app_name', 'app')}-{name}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": runtime.region,
        "resources": [f"arn:aws:events:{runtime.region}:{account}:rule/{rule}"],
        "detail": {},
    }
