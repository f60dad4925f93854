"""What Kinesis streams (kinesis.py) and DynamoDB streams (dynamodb_streams.py) share: they
are read as Lambda's stream event source mappings read them.

- each shard by a thread of its own, its records in order; a shard's children (after a split
  or a merge) only once the shard itself is read to its end. `TRIM_HORIZON` starts at the
  oldest record; `LATEST` at the records written after the runtime started the poller
  (`EventRuntime.wait_until_ready()` returns once every starting position is taken);
- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- a checkpoint per handler and shard, in memory: a batch that succeeds moves it past its last
  record. Two handlers on one stream are two consumers, each with its own checkpoints;
- a handler that raises gets the same records again, after a backoff (0.5 s, doubling up to
  5 s), never skipped and never reordered; as with BisectBatchOnFunctionError, the failed
  batch is split in halves, each retried as a batch of its own, first half first (and halved
  again while it fails, down to the one record that fails), then reading goes on. Nothing
  that raises is given up on;
- one that returns `batchItemFailures`, on a mapping that reports item failures, is
  checkpointed just before the lowest failed sequence number, and the next batch starts
  there; on one that does not (Chalice's), past the whole batch, with the warning core.py
  describes.

A kind of stream subclasses StreamPoller with its API calls and its Lambda record shape.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from chalicelib.core.aws import error_code
from local.events.core import EventRuntime, reported_identifiers, retry_until_done

log = logging.getLogger(__name__)

#: An idle shard's reads slow down by doubling, this many times (0.25 s -> 1 s by default).
IDLE_BACKOFF_STEPS = 2


@dataclass
class StreamShard:
    shard_id: str
    #: ParentShardId and AdjacentParentShardId (a merge has two parents).
    parents: tuple[str, ...] = ()
    #: The last sequence number of a closed shard; None while it is open.
    ending: str | None = None


class StreamPoller:
    """One stream event source mapping: finds the stream, runs a `ShardReader` per shard (a
    shard's children only once the shard is read to its end), and lists the shards again
    every RELIST_SECONDS, or as soon as a shard ends, to find new ones."""

    SOURCE = ""
    MAX_RECORDS = 1
    RELIST_SECONDS = 10.0
    SETUP_RETRY_SECONDS = 2.0
    READS_BATCH_ITEM_FAILURES = True

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        self._runtime = runtime
        self._source = source
        self.ready = threading.Event()
        self.arn = ""
        self._shards: dict[str, StreamShard] = {}
        self._latest: dict[str, str] = {}  # shard id -> its LATEST iterator, taken at start
        self._finished: set[str] = set()
        self._readers: dict[str, threading.Thread] = {}
        self._changed = threading.Event()
        self._lock = threading.Lock()

    # What each kind of stream does its own way.

    def _find_stream(self) -> str:
        raise NotImplementedError

    def _list_shards(self) -> list[StreamShard]:
        raise NotImplementedError

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        raise NotImplementedError

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        """One GetRecords: the records, the next iterator (None at the end of a closed
        shard) and how many milliseconds the reader is behind the shard's newest record."""
        raise NotImplementedError

    def sequence_number(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        raise NotImplementedError

    # The shards.

    @property
    def name(self) -> str:
        return str(self._source.name)

    def run(self) -> None:
        if not self._set_up():
            return
        listed = time.monotonic()
        self._start_readers()
        stopping = self._runtime.stopping
        while not stopping.wait(0.1):
            if self._changed.is_set() or time.monotonic() - listed >= self.RELIST_SECONDS:
                self._changed.clear()
                listed = time.monotonic()
                try:
                    self._update_shards(self._list_shards())
                except Exception:
                    log.warning("%s: could not list the shards of %s", self.name, self.arn)
                    log.debug("listing failed:\n%s", traceback.format_exc())
                self._start_readers()
        for thread in list(self._readers.values()):
            thread.join()

    def _set_up(self) -> bool:
        """Find the stream and its shards, and take the LATEST positions: until it works."""
        problem = f"{self.name}: its stream cannot be read yet"
        if not retry_until_done(self._runtime, self._find_positions, problem,
                                self.SETUP_RETRY_SECONDS):  # fmt: skip
            return False
        self.ready.set()
        return True

    def _find_positions(self) -> None:
        self.arn = self._find_stream()
        shards = self._list_shards()
        latest: dict[str, str] = {}
        closed: set[str] = set()
        if self._source.starting_position == "LATEST":
            for shard in shards:
                if shard.ending is None:
                    latest[shard.shard_id] = self._iterator(shard.shard_id, "LATEST")
                else:  # closed before we started: nothing in it is "after now"
                    closed.add(shard.shard_id)
        self._update_shards(shards)
        with self._lock:
            self._latest = latest
            self._finished |= closed

    def _update_shards(self, shards: list[StreamShard]) -> None:
        with self._lock:
            self._shards = {shard.shard_id: shard for shard in shards}

    def _start_readers(self) -> None:
        with self._lock:
            for shard_id, shard in sorted(self._shards.items()):
                if shard_id in self._readers or shard_id in self._finished:
                    continue
                if any(p in self._shards and p not in self._finished for p in shard.parents):
                    continue  # its parents first
                iterator = self._latest.pop(shard_id, None)
                # A shard found later holds only records written after we started.
                start = "TRIM_HORIZON" if iterator is None else "LATEST"
                reader = ShardReader(self, shard_id, start, iterator)
                thread = threading.Thread(
                    target=reader.run, name=f"events:{self.name}:{shard_id}", daemon=True
                )
                self._readers[shard_id] = thread
                thread.start()

    def shard_finished(self, shard_id: str) -> None:
        with self._lock:
            self._finished.add(shard_id)
        self._changed.set()

    def read_to_its_end(self, shard_id: str, last_read: str | None) -> bool:
        """For emulators that never end a closed shard's iterator: whether the listing says
        the shard is closed and nothing after `last_read` is left in it."""
        with self._lock:
            shard = self._shards.get(shard_id)
        if shard is None or shard.ending is None:
            return False
        return last_read is None or sequence_key(last_read) >= sequence_key(shard.ending)

    def iterator_from(self, shard_id: str, start: str, last_read: str | None) -> str:
        if last_read is not None:
            return self._iterator(shard_id, "AFTER_SEQUENCE_NUMBER", last_read)
        return self._iterator(shard_id, start)


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
        numbers = [poller.sequence_number(record) for record in batch]
        event = {"Records": [poller.lambda_record(record, self.shard_id) for record in batch]}
        result, invocation = self._runtime.invoke(self._source.name, poller.SOURCE, event)
        if isinstance(result, Exception):
            # BisectBatchOnFunctionError: the halves, each retried as a batch, first one first.
            halves = [len(batch) // 2, len(batch) - len(batch) // 2] if len(batch) > 1 else [1]
            if self._spans:
                self._spans.pop(0)
            self._spans[:0] = halves
            split = f", split into {halves[0]} + {halves[1]}" if len(halves) == 2 else ""
            invocation.failed_ids = numbers
            invocation.outcome += f" (retried in {self._delay:g} s{split})"
            self._runtime.report(invocation)
            self._back_off()
            return
        first_failed, reported = stream_batch_failures(result, numbers)
        if reported and not self._runtime.reports_item_failures(self._source.name):
            # A success, whatever the answer: the checkpoint moves past the whole batch.
            self._runtime.item_failures_ignored(invocation, reported, "record")
            first_failed = None
        done = len(batch) if first_failed is None else first_failed
        if done:
            del self._buffer[:done]
            key = (self._source.name, poller.arn, self.shard_id)
            self._runtime.checkpoints[key] = numbers[done - 1]
            self._delay = self._runtime.retry_backoff[0]
            if self._spans:
                self._spans[0] -= done
                if self._spans[0] <= 0:
                    self._spans.pop(0)
        if first_failed is None:
            self._runtime.report(invocation)
            return
        invocation.failed_ids = reported
        invocation.outcome = (
            f"partial: {len(reported)} of {len(batch)} failed "
            f"(retried from sequence number {numbers[first_failed]} in {self._delay:g} s)"
        )
        self._runtime.report(invocation)
        self._back_off()

    def _back_off(self) -> None:
        self._runtime.stopping.wait(self._delay)
        self._delay = min(self._delay * 2, self._runtime.retry_backoff[1])


def stream_shard(shard: dict[str, Any]) -> StreamShard:
    """A shard as ListShards (Kinesis) or DescribeStream (both) describe it."""
    parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
    return StreamShard(
        shard["ShardId"],
        tuple(parent for parent in parents if parent),
        (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber"),
    )


def sequence_key(number: str) -> int:
    """Kinesis and DynamoDB sequence numbers are decimal strings of different lengths."""
    return int(number)


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
