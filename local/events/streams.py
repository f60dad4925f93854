"""What Kinesis streams (kinesis.py) and DynamoDB streams (dynamodb_streams.py) share: they
are read as Lambda's stream event source mappings read them.

- each shard by a thread of its own, its records in order; a shard's children (after a split
  or a merge) only once the shard itself is read to its end. `TRIM_HORIZON` starts at the
  oldest record; `LATEST` at the records written after the runtime started the poller
  (`EventRuntime.wait_until_ready()` returns once every starting position is taken);
- batches of up to `batch_size`, filled for up to `maximum_batching_window_in_seconds`;
- a checkpoint per handler and shard, in memory: a batch that succeeds moves it past its last
  record. Two handlers on one stream are two consumers, each with its own checkpoints;
- a failing batch is retried after a backoff (0.5 s, doubling up to 5 s), never reordered, as
  the mapping's settings in infra/functions.json say (stream_failures.py reads them, from the
  file the deploy applies): with BisectBatchOnFunctionError, a batch that raises is split in
  halves, each retried as a batch of its own, first half first (and halved again while it
  fails, down to the one record that fails); without it, the same batch is retried whole;
- MaximumRetryAttempts counts as Lambda does: a batch that fails is invoked again up to that
  many times, and then given up on. Splitting a batch takes nothing from the quota (AWS:
  "Splitting batches doesn't consume the retry quota"): each half is a new batch with the
  whole quota, so only a batch that cannot be split (one record, or no bisection) uses
  retries. A poison record is thus invoked alone 1 + MaximumRetryAttempts times. A partial
  batch failure (below) is a failed invocation of the batch starting at the lowest failed
  record: it uses one retry of that record's batch;
- records older than MaximumRecordAgeInSeconds, or with -1 (Lambda's default), older than the
  stream's retention (24 h for DynamoDB, the Kinesis stream's retention period: when AWS would
  no longer have them), are given up on before an invocation; so even with no limit set, no
  record is retried forever;
- a batch given up on goes, as Lambda's on-failure record (RetryAttemptsExhausted or
  RecordAgeExceeded; the sequence numbers, not the records), to the mapping's on-failure
  destination, and the checkpoint then moves past it, so later records flow; with no
  destination, it is only logged (as Lambda drops it);
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
from datetime import datetime
from typing import Any

from chalicelib.core import clock
from local.events.core import EventRuntime, retry_until_done
from local.events.shard_reader import ShardReader, stream_batch_failures
from local.events.stream_failures import (
    FailedBatch,
    function_arn,
    on_failure_record,
    send_on_failure,
    stream_mapping,
)

log = logging.getLogger(__name__)

#: ShardReader and stream_batch_failures live in shard_reader.py; named here too.
__all__ = ["ShardReader", "StreamPoller", "StreamShard", "stream_batch_failures", "stream_shard"]

#: How long a stream keeps a record, unless it says otherwise (DynamoDB Streams: always).
DEFAULT_RETENTION_SECONDS = 24 * 3600


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
    #: The kind in the event source's logical id (`<Function><KIND>EventSource`).
    KIND = ""
    #: The on-failure record's batch key, and the precision of its arrival times.
    BATCH_INFO = ""
    ARRIVAL_TIMESPEC = "milliseconds"
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
        #: The mapping's error handling, as infra/functions.json deploys it.
        self.mapping = stream_mapping(self.name, self.KIND)
        self.retention_seconds = DEFAULT_RETENTION_SECONDS

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

    def arrival(self, record: dict[str, Any]) -> datetime:
        """When the record reached the stream (timezone-aware)."""
        raise NotImplementedError

    # Giving up on records.

    def expired(self, records: list[dict[str, Any]]) -> int:
        """How many of `records`, from the first, are older than MaximumRecordAgeInSeconds
        (or, with no maximum, than the stream keeps records)."""
        limit = self.mapping.maximum_record_age_seconds
        if limit < 0:
            limit = self.retention_seconds
        now = clock.now()
        count = 0
        while count < len(records) and (now - self.arrival(records[count])).total_seconds() > limit:
            count += 1
        return count

    def give_up(self, failed: FailedBatch) -> str:
        """Sends the on-failure record of `failed` to the mapping's destination (or logs that
        there is none, as Lambda drops the records then); says what became of it."""
        function = function_arn(self._runtime, self.name)
        record = on_failure_record(failed, function, self.BATCH_INFO, self.ARRIVAL_TIMESPEC)
        count = len(failed.numbers)
        what = f"{count} record{'' if count == 1 else 's'}"
        span = f"{failed.shard_id} {failed.numbers[0]}..{failed.numbers[-1]}"
        destination = self.mapping.destination
        if destination is None:
            log.warning("%s: %s: %s (%s) dropped: the mapping has no on-failure destination",
                        self.name, failed.condition, what, span)  # fmt: skip
            return f"{failed.condition}: {what} dropped, no on-failure destination"
        if not send_on_failure(self._runtime, destination, record):
            return f"{failed.condition}: {what} given up, on-failure record logged"
        log.warning("%s: %s: %s (%s) sent to %s", self.name, failed.condition, what, span,
                    destination.describe())  # fmt: skip
        return f"{failed.condition}: {what} sent to {destination.name}"

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
