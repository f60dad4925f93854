"""One shard of a stream event source mapping, read for one handler (streams.py starts a
`ShardReader` per shard): batches in order, checkpoints, retries and giving up, as the
module docstring of streams.py describes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from chalicelib.core.aws import error_code
from local.events.core import reported_identifiers
from local.events.stream_failures import RECORD_AGE_EXCEEDED, RETRIES_EXHAUSTED, FailedBatch

if TYPE_CHECKING:
    from local.events.streams import StreamPoller

log = logging.getLogger(__name__)

#: An idle shard's reads slow down by doubling, this many times (0.25 s -> 1 s by default).
IDLE_BACKOFF_STEPS = 2


class ShardReader:
    """One shard for one handler: batches in order, each retried until it succeeds."""

    def __init__(
        self, poller: StreamPoller, shard_id: str, start: str, iterator: str | None
    ) -> None:
        self._poller = poller
        self._runtime = poller._runtime
        self._source = poller._source
        self.shard_id = shard_id
        self._start = start  # where to begin again while nothing is read yet
        self._iterator = iterator
        self._last_read: str | None = None
        self._buffer: list[dict[str, Any]] = []  # read, not handled yet, in shard order
        self._idle_reads = 0  # empty reads in a row: they space out (IDLE_BACKOFF_STEPS)
        # After a failure: the sizes of the parts of the buffer's head still to retry, each
        # as a batch of its own (the halves of a failed batch, and their halves).
        self._spans: list[int] = []
        #: Failed invocations of the batch at the buffer's head: its first and its retries
        #: (MaximumRetryAttempts bounds them); none after a split (a new batch).
        self._failures = 0
        self._last_raised = False  # whether the last of them raised (or answered partly)
        self._ended = False
        self._delay = self._runtime.retry_backoff[0]

    def run(self) -> None:
        stopping = self._runtime.stopping
        while not stopping.is_set():
            try:
                batch = self._buffer[: self._spans[0]] if self._spans else self._collect()
                if stopping.is_set():
                    break
                if batch:
                    self._deliver(batch)
                elif self._ended:
                    self._poller.shard_finished(self.shard_id)
                    return
            except Exception:
                log.exception("%s: shard %s failed; trying again", self._poller.name, self.shard_id)
                stopping.wait(1)

    def _collect(self) -> list[dict[str, Any]]:
        """One batch: wait for a first record, then fill the batch for up to the window."""
        size = self._source.batch_size
        window = self._source.maximum_batching_window_in_seconds
        poll = self._runtime.stream_poll_seconds
        stopping = self._runtime.stopping
        deadline: float | None = None
        while len(self._buffer) < size and not self._ended and not stopping.is_set():
            fetched, behind = self._fetch(size - len(self._buffer))
            if self._buffer and deadline is None:
                deadline = time.monotonic() + window
            if deadline is not None and time.monotonic() >= deadline:
                break
            if fetched or behind:
                self._idle_reads = 0
            else:
                # An idle shard is read less often (up to 4 x `poll`): every read costs the
                # API's process and the emulator CPU that requests then wait for.
                idle = poll * 2 ** min(self._idle_reads, IDLE_BACKOFF_STEPS)
                self._idle_reads += 1
                wait = idle if deadline is None else min(poll, deadline - time.monotonic())
                stopping.wait(max(0.0, wait))
        return self._buffer[:size]

    def _fetch(self, limit: int) -> tuple[int, bool]:
        poller = self._poller
        try:
            if self._iterator is None:
                self._iterator = poller.iterator_from(self.shard_id, self._start, self._last_read)
            records, following, behind = poller._read(
                self._iterator, min(limit, poller.MAX_RECORDS)
            )
        except Exception as exc:
            code = error_code(exc)
            if code == "TrimmedDataAccessException":
                log.warning("%s: records of shard %s after %s were trimmed; reading from the "
                            "oldest left", poller.name, self.shard_id, self._last_read)  # fmt: skip
                self._last_read, self._start = None, "TRIM_HORIZON"
            elif code != "ExpiredIteratorException":
                log.warning("%s: reading shard %s failed (%s); trying again",
                            poller.name, self.shard_id, exc)  # fmt: skip
                self._runtime.stopping.wait(max(1.0, self._runtime.stream_poll_seconds))
            self._iterator = None  # taken again, after the last record read
            return 0, False
        self._buffer.extend(records)
        if records:
            self._last_read = poller.sequence_number(records[-1])
        self._iterator = following
        if following is None:
            self._ended = True
        elif not records and not behind:
            self._ended = poller.read_to_its_end(self.shard_id, self._last_read)
        return len(records), behind > 0

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        poller = self._poller
        expired = poller.expired(batch)
        if expired:  # given up on before they are invoked (again)
            self._give_up(batch[:expired], RECORD_AGE_EXCEEDED, self._last_raised)
            return
        numbers = [poller.sequence_number(record) for record in batch]
        event = {"Records": [poller.lambda_record(record, self.shard_id) for record in batch]}
        result, invocation = self._runtime.invoke(self._source.name, poller.SOURCE, event)
        if isinstance(result, Exception):
            invocation.failed_ids = numbers
            invocation.outcome += self._raised(batch)
            self._runtime.report(invocation)
            return
        first_failed, reported = stream_batch_failures(result, numbers)
        if reported and not self._runtime.reports_item_failures(self._source.name):
            # A success, whatever the answer: the checkpoint moves past the whole batch.
            self._runtime.item_failures_ignored(invocation, reported, "record")
            first_failed = None
        done = len(batch) if first_failed is None else first_failed
        if done:
            self._advance(batch[:done])
        if first_failed is None:
            self._runtime.report(invocation)
            return
        # A failed invocation of the batch that starts at the lowest failed record.
        self._failures += 1
        self._last_raised = False
        invocation.failed_ids = reported
        invocation.outcome = f"partial: {len(reported)} of {len(batch)} failed "
        if poller.mapping.exhausted(self._failures):
            given_up = self._give_up(batch[first_failed:], RETRIES_EXHAUSTED, False)
            invocation.outcome += f"({given_up})"
            self._runtime.report(invocation)
            return
        invocation.outcome += (
            f"({poller.mapping.retry_note(self._failures)} from sequence number "
            f"{numbers[first_failed]} in {self._delay:g} s)"
        )
        self._runtime.report(invocation)
        self._back_off()

    def _raised(self, batch: list[dict[str, Any]]) -> str:
        """After `batch` raised: splits it (BisectBatchOnFunctionError), retries it, or gives
        up on it; and backs off before a retry. What became of it, for the outcome."""
        mapping = self._poller.mapping
        if self._spans:
            self._spans.pop(0)
        if mapping.bisect and len(batch) > 1:
            # The halves, each retried as a batch, first one first: new batches, with the
            # whole retry quota each (splitting does not use it).
            halves = [len(batch) // 2, len(batch) - len(batch) // 2]
            self._spans[:0] = halves
            self._failures = 0
            note = f" (retried in {self._delay:g} s, split into {halves[0]} + {halves[1]})"
            self._back_off()
            return note
        self._spans.insert(0, len(batch))  # the same records again, as one batch
        self._failures += 1
        self._last_raised = True
        if mapping.exhausted(self._failures):
            return f" ({self._give_up(batch, RETRIES_EXHAUSTED, True)})"
        note = f" ({mapping.retry_note(self._failures)} in {self._delay:g} s)"
        self._back_off()
        return note

    def _give_up(self, records: list[dict[str, Any]], condition: str, function_error: bool) -> str:
        """Sends the on-failure record of `records` (the buffer's first ones), then moves the
        checkpoint past them; says what became of them."""
        poller = self._poller
        failed = FailedBatch(
            condition,
            self.shard_id,
            poller.arn,
            [poller.sequence_number(record) for record in records],
            (poller.arrival(records[0]), poller.arrival(records[-1])),
            self._failures,
            function_error,
        )
        given_up = poller.give_up(failed)
        self._advance(records)
        return given_up

    def _advance(self, records: list[dict[str, Any]]) -> None:
        """The buffer's first `records` are done with: the checkpoint moves past them, and
        the next batch starts afresh (no failure yet, the first backoff)."""
        del self._buffer[: len(records)]
        key = (self._source.name, self._poller.arn, self.shard_id)
        self._runtime.checkpoints[key] = self._poller.sequence_number(records[-1])
        self._delay = self._runtime.retry_backoff[0]
        self._failures = 0
        if self._spans:
            self._spans[0] -= len(records)
            if self._spans[0] <= 0:
                self._spans.pop(0)

    def _back_off(self) -> None:
        self._runtime.stopping.wait(self._delay)
        self._delay = min(self._delay * 2, self._runtime.retry_backoff[1])


def stream_batch_failures(result: Any, sequence_numbers: list[str]) -> tuple[int | None, list[str]]:
    """A stream handler's `batchItemFailures`, as Lambda reads them with ReportBatchItemFailures:
    where in the batch to resume (the lowest failed sequence number) and the identifiers
    reported; `(None, [])` if the whole batch succeeded. As Lambda does, an identifier that is
    missing, empty or not a record of the batch fails the whole batch."""
    reported = reported_identifiers(result)
    if not reported:
        return None, []
    position = {number: index for index, number in enumerate(sequence_numbers)}
    return min(position.get(identifier, 0) for identifier in reported), reported
