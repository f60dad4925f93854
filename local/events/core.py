"""What every event source shares: `EventRuntime`, which starts one delivery per event source
of the app and calls its handlers as Lambda does, and `Invocation`, the record of one call.

Each delivery (SqsPoller, SnsSubscription, ...; `sources.py` says which handles which kind of
source) runs on a daemon thread of its own until `EventRuntime.stop()`. For each event it
builds the event Lambda would, calls `EventRuntime.invoke()` (which never raises) and reports
the outcome through `EventRuntime.report()`: by default one JSON line per invocation.

Partial batch responses. Lambda reads a handler's `{"batchItemFailures": [...]}` only on an
event source mapping with `FunctionResponseTypes: ["ReportBatchItemFailures"]`. Chalice
never sets it (neither `chalice deploy` nor `chalice package`), so by default no mapping here
has it either: a returned `batchItemFailures` is a success, as in AWS. The SQS batch is
deleted whole, a stream's checkpoint moves past the whole batch, and the messages or records
the handler said failed are gone. As that is data loss a developer must see, the invocation's
outcome says so (`ok, but batchItemFailures ignored: ...`) and a warning names the handler
and the identifiers. `EventRuntime(report_batch_item_failures=...)` turns it on for every
mapping (True) or for the named handlers' mappings (as a deploy could, through a
CloudFormation merge).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger("local.events")

#: The function that serves the REST API (Chalice's name for it).
API_HANDLER = "api_handler"


@dataclass
class Invocation:
    handler: str
    source: str
    batch_size: int
    duration_ms: float
    outcome: str
    failed_ids: list[str] = field(default_factory=list)

    def as_log_line(self) -> str:
        return json.dumps({"event_runtime": "invocation", **self.__dict__}, sort_keys=True)


class Delivery(Protocol):
    """What delivers one event source to its handler, made with `(runtime, source)`: the
    runtime calls `run()` on a thread of its own, and it returns once `runtime.stopping` is
    set. A delivery that needs time to connect to its source (a queue subscribed to a topic,
    a stream's starting positions) also has a `ready` threading.Event, set once no event can
    be missed; `EventRuntime.wait_until_ready()` waits for it. A delivery whose handler's
    `batchItemFailures` answer can count (SQS, streams) has READS_BATCH_ITEM_FAILURES = True,
    so that `report_batch_item_failures` may name it."""

    def run(self) -> None: ...


class EventRuntime:
    """Deliveries for every event source of `app`, run on daemon threads until `stop()`."""

    def __init__(
        self,
        app: Any,
        client: Callable[[str], Any],
        region: str,
        on_invocation: Callable[[Invocation], None] | None = None,
        idle_wait_seconds: int = 1,
        *,
        handlers: Collection[str] | None = None,
        retry_backoff_seconds: float = 0.5,
        max_retry_backoff_seconds: float = 5.0,
        stream_poll_seconds: float = 0.25,
        async_retry_seconds: int = 2,
        report_batch_item_failures: bool | Collection[str] = False,
        stage: str = "dev",
        function_settings: Callable[[str], tuple[int, int]] | None = None,
    ) -> None:
        """`client(service)` makes the boto3 client of a service; a queue with nothing to
        read is long-polled for `idle_wait_seconds`.

        `handlers`: the names of the handlers to deliver to (default: all of them).
        A stream batch that fails is retried after `retry_backoff_seconds`, doubling up to
        `max_retry_backoff_seconds`; a shard is read every `stream_poll_seconds` while records
        come, and up to 4 times less often while it is idle. A failed SNS, S3 or EventBridge
        event is tried again after `async_retry_delay(handler)`: at least
        `async_retry_seconds`, and past the function's timeout (Lambda waits a minute or two;
        locally, seconds keep the loop short).

        `function_settings(name)`: (timeout s, memory MB) of a function, what its context
        reports; default: `stage`'s, from `.chalice/config.json`.

        `report_batch_item_failures`: which SQS and stream mappings have
        `FunctionResponseTypes: ["ReportBatchItemFailures"]`, so that a handler's
        `batchItemFailures` answer counts. False (the default, as Chalice deploys them): none;
        True: all; a collection of handler names (or one name): those handlers' mappings."""
        self.app = app
        self.client = client
        self.region = region
        self._on_invocation = on_invocation or (lambda inv: print(inv.as_log_line(), flush=True))
        self._listeners: list[Callable[[Invocation], None]] = []
        self.idle_wait_seconds = idle_wait_seconds
        self._handlers = None if handlers is None else set(handlers)
        self.retry_backoff = (retry_backoff_seconds, max_retry_backoff_seconds)
        self.stream_poll_seconds = stream_poll_seconds
        self.async_retry_seconds = async_retry_seconds
        self.stage = stage
        self._function_settings = function_settings
        self._settings: dict[str, tuple[int, int]] = {}
        self._report_item_failures: bool | frozenset[str]
        if isinstance(report_batch_item_failures, bool):
            self._report_item_failures = report_batch_item_failures
        elif isinstance(report_batch_item_failures, str):  # one name, not its letters
            self._report_item_failures = frozenset([report_batch_item_failures])
        else:
            self._report_item_failures = frozenset(report_batch_item_failures)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pollers: list[Delivery] = []
        self.unsupported: list[str] = []
        self._account_id: str | None = None
        #: (handler, stream ARN, shard id) -> the sequence number of the last record handled.
        self.checkpoints: dict[tuple[str, str, str], str] = {}

    def start(self) -> None:
        for source in self.app.event_sources:
            if self._handlers is not None and source.name not in self._handlers:
                continue
            delivery = delivery_of(source)
            if delivery is None:
                self.unsupported.append(f"{source.name} ({type(source).__name__})")
                continue
            poller = delivery(self, source)
            thread = threading.Thread(target=poller.run, name=f"events:{source.name}", daemon=True)
            self._pollers.append(poller)
            self._threads.append(thread)
            thread.start()
        if self.unsupported:
            log.warning("not delivered locally yet: %s", ", ".join(self.unsupported))
        if isinstance(self._report_item_failures, frozenset):
            batched = {
                source.name
                for source in self.app.event_sources
                if getattr(delivery_of(source), "READS_BATCH_ITEM_FAILURES", False)
            }
            unknown = sorted(self._report_item_failures - batched)
            if unknown:
                log.warning("report_batch_item_failures names no SQS or stream handler: %s",
                            ", ".join(unknown))  # fmt: skip

    def wait_until_ready(self, timeout: float = 10.0) -> bool:
        """Wait until every stream poller has found its stream and taken its starting
        positions (from then on, `LATEST` means "written after now"), and every SNS, S3 and
        EventBridge source sends to the runtime's queue (from then on, no event is missed).
        False on timeout."""
        deadline = time.monotonic() + timeout
        for poller in self._pollers:
            ready = getattr(poller, "ready", None)
            if ready is not None and not ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self, timeout: float = 25.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def settings(self, name: str) -> tuple[int, int]:
        """(timeout s, memory MB) of function `name`, read once."""
        if name not in self._settings:
            if self._function_settings is not None:
                self._settings[name] = self._function_settings(name)
            else:
                from local.events.invoke import function_settings  # it builds on this module

                self._settings[name] = function_settings(self.stage, name)
        return self._settings[name]

    def async_retry_delay(self, name: str) -> int:
        """Seconds before an asynchronous invocation of `name` is tried again: past the
        function's timeout (plus a second), so that whatever the failed attempt left in
        progress for its lifetime (Powertools' idempotency record expires with the context's
        remaining time) has expired, as it has after Lambda's minute-long wait; never less
        than `async_retry_seconds`. `async_retry_seconds=0` (unit tests) retries at once."""
        if self.async_retry_seconds <= 0:
            return 0
        return max(self.async_retry_seconds, self.settings(name)[0] + 1)

    def invoke(
        self,
        name: str,
        source: str,
        event: Any,
        *,
        timeout_ms: int | None = None,
        memory_mb: int | None = None,
    ) -> tuple[Any, Invocation]:
        """Run handler `name` on `event` as Lambda would; never raises (a handler's exception
        is returned as the result). `api_handler` is the REST API's function: the app itself,
        given API Gateway's event. The context reports `timeout_ms` (default: the function's
        configured timeout) as remaining at the start, counting down, as Lambda's does.
        Nothing stops a handler at its timeout here: one that runs past it is logged as a
        warning, and its outcome says so."""
        from chalice.local import LambdaContext

        timeout_s, memory = self.settings(name)
        timeout_ms = timeout_s * 1000 if timeout_ms is None else timeout_ms
        context = LambdaContext(
            function_name=name,
            memory_size=memory if memory_mb is None else memory_mb,
            max_runtime_ms=timeout_ms,
        )
        started = time.perf_counter()
        # A batch's size; one for EventBridge, a state machine's task or a direct invoke.
        records = event.get("Records") if isinstance(event, dict) else None
        batch = len(records) if isinstance(records, list) else 1
        try:
            handler = self.app if name == API_HANDLER else self.app.handler_map[name]
            result = handler(event, context)
            outcome = "ok"
        except Exception as exc:
            result = exc
            outcome = f"error: {exc.__class__.__name__}: {exc}"
            log.debug("handler %s raised:\n%s", name, traceback.format_exc())
        duration_ms = (time.perf_counter() - started) * 1000
        if duration_ms > timeout_ms:
            ran, limit = duration_ms / 1000, timeout_ms / 1000
            outcome += f" (ran {ran:.1f} s, past its {limit:g} s timeout)"
            log.warning("%s ran %.1f s, past its %g s timeout: Lambda would have stopped it "
                        "(Task timed out) and counted the invocation as failed",
                        name, ran, limit)  # fmt: skip
        invocation = Invocation(name, source, batch, duration_ms, outcome)
        return result, invocation

    def report(self, invocation: Invocation) -> None:
        self._on_invocation(invocation)
        for listener in self._listeners:
            listener(invocation)

    def listen(self, listener: Callable[[Invocation], None]) -> None:
        """Call `listener` with every invocation reported from now on, after the runtime's
        own report (the local console's)."""
        self._listeners.append(listener)

    def reports_item_failures(self, name: str) -> bool:
        """Whether handler `name`'s mapping has ReportBatchItemFailures, so that Lambda reads
        its `batchItemFailures` answer."""
        if isinstance(self._report_item_failures, bool):
            return self._report_item_failures
        return name in self._report_item_failures

    def item_failures_ignored(self, invocation: Invocation, reported: list[str], noun: str) -> None:
        """A handler whose mapping has no ReportBatchItemFailures answered with
        `batchItemFailures` (identifiers `reported`): Lambda takes that for a success, and
        the `noun`s (messages, records) it names are lost. Says so, in the outcome and in a
        warning."""
        count = len(reported)
        lost = f"{count} {noun if count == 1 else noun + 's'}"
        invocation.failed_ids = reported
        invocation.outcome = (
            f"ok, but batchItemFailures ignored: {lost} would be lost in AWS "
            "(the mapping has no ReportBatchItemFailures)"
        )
        log.warning("%s returned batchItemFailures %s, which Lambda ignores on a mapping "
                    "without ReportBatchItemFailures (Chalice never sets it): the whole batch "
                    "counts as handled, and in AWS %s would be lost",
                    invocation.handler, reported, lost)  # fmt: skip

    def scheduled_jobs(self) -> dict[str, Any]:
        """The app's scheduled jobs (`@app.schedule`), by name."""
        from local.events import schedules  # it builds on this module

        return schedules.scheduled_jobs(self.app)

    def fire(self, name: str, at: datetime | None = None, retry_delay: float = 1.0) -> Invocation:
        """Run scheduled job `name` once, as EventBridge would at `at` (default: now): up to
        3 attempts if it fails. Returns the last attempt's invocation."""
        from local.events import schedules  # it builds on this module

        return schedules.fire(self, name, at, retry_delay)

    def account(self) -> str:
        """The emulator's account id (asked once; 000000000000 while it cannot be asked)."""
        if self._account_id is None:
            try:
                self._account_id = str(self.client("sts").get_caller_identity()["Account"])
            except Exception:
                return "000000000000"
        return self._account_id


def retry_until_done(
    runtime: EventRuntime, attempt: Callable[[], None], problem: str, every_seconds: float
) -> bool:
    """Run `attempt` until it raises nothing (True) or the runtime stops (False): a source
    whose queue or stream the emulator does not have yet keeps trying. The first failure is a
    warning naming `problem`, the next ones debug lines, so a slow start fills no log."""
    warned = False
    while not runtime.stopping.is_set():
        try:
            attempt()
        except Exception as exc:
            report = log.debug if warned else log.warning
            report("%s (%s); trying again every %g s", problem, exc, every_seconds)
            warned = True
            runtime.stopping.wait(every_seconds)
            continue
        return True
    return False


def delivery_of(source: Any) -> Callable[[EventRuntime, Any], Delivery] | None:
    """The delivery of a Chalice event source (one of `app.event_sources`), by its kind, as
    sources.py registers them; None for a kind not delivered locally."""
    from local.events.sources import DELIVERIES  # they build on this module

    for config, delivery in DELIVERIES.items():
        if isinstance(source, config):
            return delivery
    return None


def reported_identifiers(result: Any) -> list[str]:
    """Every entry of a handler's `batchItemFailures` answer, as its identifier ("" where it
    has none); [] if it reports no failure."""
    items = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not items:
        return []
    identifiers: list[str] = []
    for item in items if isinstance(items, list) else [items]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        identifiers.append("" if identifier is None else str(identifier))
    return identifiers
