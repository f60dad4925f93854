"""Replaying Lambda's on-failure records (`make replay QUEUE=...`, and `make redrive` for an
on-failure destination): each record's event is handed to its function again, and the
record is deleted only once the function has succeeded.

- An asynchronous invocation's record (SNS, EventBridge, schedules): its `requestPayload`
  is the event, `requestContext.functionArn` the function.
- A stream batch's record (`DDBStreamBatchInfo`, `KinesisBatchInfo`) holds no record, only
  where the batch was: the tool reads the shard from `startSequenceNumber` (GetShardIterator
  AT_SEQUENCE_NUMBER) to `endSequenceNumber`, builds the event Lambda would have
  (`local/events/`'s record builders, the ones the local runtime delivers with) and invokes
  the function. Records the stream no longer has (trimmed after its retention, 24 h) are
  reported as lost, and a batch missing any stays in the queue unless `discard_lost` (the
  records still there are replayed all the same). A `batchItemFailures` answer is a
  partial failure: the record stays.

Only what the queue's templates allow is acted on (`Allowed`, from ops/failure_queues.py):
a record naming another function, or another stream than the stage's table stream or
Kinesis stream, is refused (counted unknown, kept): anything able to send to a failure queue
could otherwise have the operator's credentials invoke any function with any payload. A
function is invoked by its name in the operator's account, never by the ARN a record gives.

Invocations are synchronous (RequestResponse), so the tool knows each outcome and deletes
nothing that failed; the handlers are idempotent, so a batch replayed twice (a run
interrupted between the invoke and the delete) duplicates nothing.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core.aws import error_code
from local.events.dynamodb_streams import DYNAMODB_STREAMS_MAX_RECORDS, dynamodb_lambda_record
from local.events.kinesis import kinesis_lambda_record
from ops.failure_queues import FailureQueue
from ops.session import Target

#: Errors that mean the records are no longer in the stream (or the stream is gone).
GONE = frozenset({"TrimmedDataAccessException", "ResourceNotFoundException"})
#: A shard read ends at the batch's last record, at the end of a closed shard, on a Kinesis
#: shard caught up with its newest record, or after this many pages: a DynamoDB stream may
#: answer several empty pages before later records, so an open shard is read on.
MAX_PAGES = 500
KINESIS_MAX_RECORDS = 10_000
BATCH_INFO = {"DDBStreamBatchInfo": "dynamodb", "KinesisBatchInfo": "kinesis"}
FUNCTION_ARN = re.compile(r"arn:aws[\w-]*:lambda:[\w-]+:\d+:function:([\w-]+)(?::([\w$-]+))?")
TABLE_STREAM_ARN = re.compile(r"(arn:aws[\w-]*:dynamodb:[\w-]+:\d+:table/([\w.-]+))/stream/[^/]+")
KINESIS_STREAM_ARN = re.compile(r"arn:aws[\w-]*:kinesis:[\w-]+:\d+:stream/([\w.-]+)")


@dataclass
class Outcome:
    """What replaying one message did."""

    done: bool  # the function succeeded (or the record was discarded): delete the message
    note: str
    replayed: int = 0  # stream records handed to the function (1 for an async event)
    lost: int = 0  # stream records no longer in the stream
    failed: bool = False
    unknown: bool = False


@dataclass(frozen=True)
class Allowed:
    """What a failure queue's records may name: its source functions (deployed names) and,
    for a stream failure queue, the stage's tables and Kinesis streams they read."""

    functions: frozenset[str]
    tables: frozenset[str] = frozenset()
    kinesis_streams: frozenset[str] = frozenset()

    @classmethod
    def of(cls, queue: FailureQueue) -> Allowed:
        return cls(queue.functions(), frozenset(queue.tables), frozenset(queue.kinesis_streams))


@dataclass(frozen=True)
class Batch:
    """Where a failed stream batch was: what its on-failure record says."""

    source: str  # "dynamodb" or "kinesis"
    stream_arn: str
    shard_id: str
    start: int
    end: int
    size: int


@dataclass
class Replayer:
    target: Target
    allowed: Allowed
    discard_lost: bool = False
    _roles: dict[str, str] = field(default_factory=dict)
    _streams: dict[str, str | None] = field(default_factory=dict)

    def replay(self, body: str) -> Outcome:
        """Replays the on-failure record `body` (an SQS message's body). Never raises: an
        error is this message's outcome (failed, kept), not the run's end."""
        try:
            return self._replay(body)
        except Exception as exc:
            return Outcome(False, f"not replayed: {error_code(exc)}: {exc}", failed=True)

    def _replay(self, body: str) -> Outcome:
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return Outcome(False, "not an on-failure record (not JSON)", unknown=True)
        function = (record.get("requestContext") or {}).get("functionArn")
        try:
            batch = batch_of(record)
        except (KeyError, TypeError, ValueError) as exc:
            return Outcome(False, f"a malformed stream batch record ({exc!r})", unknown=True)
        if not isinstance(function, str) or (batch is None and "requestPayload" not in record):
            return Outcome(False, "not a Lambda on-failure record", unknown=True)
        match = FUNCTION_ARN.fullmatch(function)
        if match is None or match.group(1) not in self.allowed.functions:
            return Outcome(False, f"refused: {function[:200]!r} is not one of this queue's "
                                  "functions", unknown=True)  # fmt: skip
        name, qualifier = match.group(1), match.group(2)
        if batch is None:
            error = self.invoke(name, record["requestPayload"], qualifier)
            if error:
                return Outcome(False, f"{name} failed again: {error}", failed=True)
            return Outcome(True, f"{name}: event replayed", replayed=1)
        refused = self._refused_stream(batch)
        if refused:
            return Outcome(False, f"refused: {refused}", unknown=True)
        return self._replay_batch(name, qualifier, batch)

    def _refused_stream(self, batch: Batch) -> str | None:
        """Why the batch's stream is not one this queue's functions read (None if it is):
        its name must be the stage's, and its ARN the one of that name in this account."""
        dynamodb = batch.source == "dynamodb"
        pattern = TABLE_STREAM_ARN if dynamodb else KINESIS_STREAM_ARN
        names = self.allowed.tables if dynamodb else self.allowed.kinesis_streams
        match = pattern.fullmatch(batch.stream_arn)
        name = match.group(2 if dynamodb else 1) if match else None
        if match is None or name not in names:
            return f"{batch.stream_arn[:200]!r} is not a stream this queue's functions read"
        if batch.stream_arn not in self._streams:
            self._streams[batch.stream_arn] = self._actual_arn(batch.source, str(name))
        actual = self._streams[batch.stream_arn]
        mine = match.group(1) if dynamodb else batch.stream_arn
        if actual is not None and actual != mine:
            return f"{batch.stream_arn} is not this account's {name} ({actual})"
        return None

    def _actual_arn(self, source: str, name: str) -> str | None:
        """The ARN of this account's table (or Kinesis stream) `name`; None if it is gone
        (then its records are lost, and nothing is read)."""
        try:
            if source == "dynamodb":
                table = self.target.client("dynamodb").describe_table(TableName=name)
                return str(table["Table"]["TableArn"])
            summary = self.target.client("kinesis").describe_stream_summary(StreamName=name)
            return str(summary["StreamDescriptionSummary"]["StreamARN"])
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            return None

    def _replay_batch(self, name: str, qualifier: str | None, batch: Batch) -> Outcome:
        span = f"{batch.shard_id} {batch.start}..{batch.end}"
        if self._streams.get(batch.stream_arn, "") is None:
            found, why = [], "the stream is gone"
        else:
            found, why = read_batch(self.target, batch)
        lost = max(batch.size - len(found), 0) if batch.size else 0
        keep = "; kept (--discard-lost deletes it)"
        if not found:
            lost = lost or 1
            note = f"{name}: {span}: no record left in the stream ({why})"
            if self.discard_lost:
                return Outcome(True, note + "; discarded", lost=lost)
            return Outcome(False, note + keep, lost=lost)
        event = {"Records": [self._lambda_record(name, batch, r) for r in found]}
        error = self.invoke(name, event, qualifier)
        if error:
            return Outcome(False, f"{name}: {span} failed again: {error}", failed=True)
        note = f"{name}: {span}: {len(found)} records replayed"
        if not lost:
            return Outcome(True, note, replayed=len(found))
        note += f", {lost} lost ({why or 'no longer in the stream'})"
        if self.discard_lost:
            return Outcome(True, note + "; discarded", replayed=len(found), lost=lost)
        return Outcome(False, note + keep, replayed=len(found), lost=lost)

    def _lambda_record(self, name: str, batch: Batch, record: dict[str, Any]) -> Any:
        region = batch.stream_arn.split(":")[3]
        if batch.source == "dynamodb":
            return dynamodb_lambda_record(record, batch.stream_arn, region)
        role = self._role(name)
        return kinesis_lambda_record(record, batch.shard_id, batch.stream_arn, region, role)

    def _role(self, name: str) -> str:
        """The function's execution role (a Kinesis record's `invokeIdentityArn`)."""
        if name not in self._roles:
            answer = self.target.client("lambda").get_function_configuration(FunctionName=name)
            self._roles[name] = str(answer.get("Role", ""))
        return self._roles[name]

    def invoke(self, name: str, event: Any, qualifier: str | None = None) -> str | None:
        """Runs the function `name` of this account on `event` (RequestResponse): None if it
        succeeded, else why not (its error, or the records its `batchItemFailures` names)."""
        extra = {"Qualifier": qualifier} if qualifier not in (None, "$LATEST") else {}
        try:
            answer = self.target.client("lambda").invoke(
                FunctionName=name,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
                **extra,
            )
        except Exception as exc:
            return f"Invoke refused: {error_code(exc)}: {exc}"
        raw = answer["Payload"].read()
        try:
            result = json.loads(raw) if raw else None
        except ValueError:
            result = raw.decode(errors="replace")
        if answer.get("FunctionError"):
            if isinstance(result, dict):
                return f"{result.get('errorType')}: {result.get('errorMessage')}"
            return str(result)
        failures = result.get("batchItemFailures") if isinstance(result, dict) else None
        if failures:
            return f"partial failure: batchItemFailures names {len(failures)} record(s)"
        return None


def batch_of(record: dict[str, Any]) -> Batch | None:
    """The stream batch an on-failure record describes, None if it is no stream record;
    KeyError, TypeError or ValueError if it is a malformed one."""
    for key, source in BATCH_INFO.items():
        info = record.get(key)
        if isinstance(info, dict):
            return Batch(
                source,
                str(info["streamArn"]),
                str(info["shardId"]),
                int(info["startSequenceNumber"]),
                int(info["endSequenceNumber"]),
                int(info.get("batchSize") or 0),
            )
    return None


def read_batch(target: Target, batch: Batch) -> tuple[list[dict[str, Any]], str]:
    """The records of `batch` the stream still has, in order, and why some are not there
    ("" if none is missing, as far as a read can tell). A start already trimmed is read from
    TRIM_HORIZON (the later records may be there); an expired iterator is renewed after the
    last record read."""
    kinesis = batch.source == "kinesis"
    client = target.client("kinesis" if kinesis else "dynamodbstreams")
    arn_key, number_key = ("StreamARN", "StartingSequenceNumber") if kinesis else (
        "StreamArn", "SequenceNumber")  # fmt: skip
    number = _kinesis_number if kinesis else _dynamodb_number
    most = KINESIS_MAX_RECORDS if kinesis else DYNAMODB_STREAMS_MAX_RECORDS
    limit = min(max(batch.size, 1) + 1, most)
    # Kinesis's GetRecords takes the stream's ARN too (as an emulator needs it).
    read = {"StreamARN": batch.stream_arn} if kinesis else {}
    found: list[dict[str, Any]] = []
    why = ""
    last: int | None = None  # the last record read, in the batch or not

    def iterator(kind: str, at: int | None) -> str:
        position = {"ShardId": batch.shard_id, "ShardIteratorType": kind, arn_key: batch.stream_arn}
        if at is not None:
            position[number_key] = str(at)
        return str(client.get_shard_iterator(**position)["ShardIterator"])

    def start() -> str:
        nonlocal why, limit
        if last is not None:
            return iterator("AFTER_SEQUENCE_NUMBER", last)
        try:
            return iterator("AT_SEQUENCE_NUMBER", batch.start)
        except Exception as exc:
            if error_code(exc) != "TrimmedDataAccessException":
                raise
            why, limit = "its first records were trimmed from the stream", most
            return iterator("TRIM_HORIZON", None)

    try:
        position: str | None = start()
        for _ in range(MAX_PAGES):
            try:
                page = client.get_records(ShardIterator=position, Limit=limit, **read)
            except Exception as exc:
                if error_code(exc) != "ExpiredIteratorException":
                    raise
                position = start()
                continue
            records = page.get("Records", [])
            for record in records:
                last = number(record)
                if last > batch.end:
                    return found, _missing(found, batch, why)
                if last >= batch.start:
                    found.append(record)
            if found and number(found[-1]) == batch.end:
                break
            position = page.get("NextShardIterator")
            caught_up = kinesis and not records and not page.get("MillisBehindLatest")
            if not position or caught_up:
                break
    except Exception as exc:
        if error_code(exc) not in GONE:
            raise
        return found, error_code(exc)
    return found, _missing(found, batch, why)


def _missing(found: list[dict[str, Any]], batch: Batch, why: str = "") -> str:
    if batch.size and len(found) < batch.size:
        return why or "trimmed from the stream or never there"
    return ""


def _kinesis_number(record: dict[str, Any]) -> int:
    return int(record["SequenceNumber"])


def _dynamodb_number(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def main(argv: list[str] | None = None) -> int:
    """`make replay QUEUE=...`: `make redrive` restricted to on-failure destinations."""
    from ops import redrive

    return redrive.main(argv, only_on_failure=True)


if __name__ == "__main__":
    sys.exit(main())
