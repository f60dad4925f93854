"""`make redrive [QUEUE=...]`: the stage's dead-letter and failure queues, and emptying one.

Without a queue it lists each one (ops/failure_queues.py) with its depth and what redriving
it does. With one:

- a dead-letter queue: its messages go back to the source queue whose RedrivePolicy names it
  (ListDeadLetterSourceQueues), body and message attributes kept, 10 at a time, each deleted
  only once the source has accepted it. (SQS's StartMessageMoveTask does this in AWS, but
  runs in the background and the emulator has no such call: one way, on both, with counts);
- an on-failure destination: each Lambda on-failure record is replayed (ops/replay.py).

It says how many moved or were replayed, failed, were lost and are left (also when the run
stops on an error), and exits 1 if any failed or was lost. At most `--max` messages are
handled (default 1,000), and a message is looked at once per run: what fails again stays in
the queue, visible again at the end. Each message is deleted as soon as it is done. Replays
take one message at a time, so each is hidden from its receipt for longer than its one
synchronous invoke may take, not a batch's for ten.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.core.aws import error_code
from local.provision import STATE_DIR
from ops.failure_queues import (
    DEAD_LETTER,
    STREAM_FAILURES,
    FailureQueue,
    failure_queues,
    find,
)
from ops.replay import Allowed, Outcome, Replayer
from ops.session import Target, local_target

#: How long a message taken for a move or a replay stays hidden: longer than one synchronous
#: Invoke may take (15 min, Lambda's limit), so no message reappears while it is replayed.
HIDE_SECONDS = 960
DEFAULT_MAX = 1_000
#: Receives in a row that bring no message not seen yet before a run ends (a message seen
#: may come back; an empty receive is not proof that the queue is empty).
MAX_MISSES = 3


@dataclass
class Tally:
    handled: int = 0  # moved, or replayed and deleted
    records: int = 0  # stream records replayed
    failed: int = 0
    lost: int = 0
    unknown: int = 0
    not_deleted: int = 0  # handled, but the delete failed: it will be handled again
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.lost or self.unknown or self.not_deleted)


def move_messages(sqs: Any, dlq_url: str, source_url: str, limit: int,
                  tally: Tally | None = None) -> Tally:  # fmt: skip
    """Moves up to `limit` messages from `dlq_url` to `source_url`, 10 at a time: body and
    message attributes kept (and a FIFO queue's group), each deleted from the dead-letter
    queue only once the source accepted it."""
    tally = Tally() if tally is None else tally

    def move(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fifo = source_url.endswith(".fifo")
        entries = [_entry(str(i), message, fifo) for i, message in enumerate(messages)]
        try:
            answer = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        except Exception as exc:  # one bad entry may fail a whole batch: one at a time then
            if error_code(exc) in ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"):
                raise
            answer = _one_by_one(sqs, source_url, entries)
        sent = {entry["Id"] for entry in answer.get("Successful", [])}
        for failure in answer.get("Failed", []):
            tally.failed += 1
            tally.notes.append(f"not sent: {failure.get('Code')}: {failure.get('Message')}")
        moved = [m for i, m in enumerate(messages) if str(i) in sent]
        tally.handled += len(moved)
        return moved

    _drain(sqs, dlq_url, limit, move, tally, batch=10)
    return tally


def _one_by_one(sqs: Any, url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """SendMessageBatch's answer, from one SendMessage per entry."""
    answer: dict[str, list[dict[str, Any]]] = {"Successful": [], "Failed": []}
    for entry in entries:
        fields = {k: v for k, v in entry.items() if k != "Id"}
        try:
            sqs.send_message(QueueUrl=url, **fields)
            answer["Successful"].append({"Id": entry["Id"]})
        except Exception as exc:
            failure = {"Id": entry["Id"], "Code": error_code(exc), "Message": str(exc)}
            answer["Failed"].append(failure)
    return answer


def _entry(entry_id: str, message: dict[str, Any], fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        entry["MessageAttributes"] = {
            name: {
                k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")
            }
            for name, value in message["MessageAttributes"].items()
        }
    attributes = message.get("Attributes", {})
    if fifo:
        entry["MessageGroupId"] = attributes.get("MessageGroupId", "redrive")
        entry["MessageDeduplicationId"] = attributes.get(
            "MessageDeduplicationId", message["MessageId"]
        )
    return entry


def replay_records(
    sqs: Any, queue_url: str, replayer: Replayer, limit: int, tally: Tally | None = None
) -> Tally:
    """Replays each on-failure record of `queue_url` (up to `limit`), one message at a time,
    deleting each whose function succeeded at once."""
    tally = Tally() if tally is None else tally

    def replay(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = []
        for message in messages:
            try:
                outcome: Outcome = replayer.replay(message["Body"])
            except Exception as exc:  # this message's outcome, not the run's end
                outcome = Outcome(False, f"not replayed: {error_code(exc)}: {exc}", failed=True)
            tally.records += outcome.replayed
            tally.lost += outcome.lost
            tally.failed += outcome.failed
            tally.unknown += outcome.unknown
            tally.notes.append(outcome.note)
            if outcome.done:
                tally.handled += 1
                done.append(message)
        return done

    _drain(sqs, queue_url, limit, replay, tally, batch=1)
    return tally


def _drain(
    sqs: Any,
    url: str,
    limit: int,
    handle: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    tally: Tally,
    batch: int,
) -> None:
    """Takes the queue's messages, `batch` at a time and each once, up to `limit`; deletes
    those `handle` returns as soon as it returns them; makes the others visible again at the
    end, also when a call fails. A message seen already that comes back is hidden again and
    skipped; the run ends after MAX_MISSES receives in a row bring nothing new."""
    seen: set[str] = set()
    kept: dict[str, dict[str, Any]] = {}  # taken and not done: made visible again at the end
    misses = 0
    try:
        while len(seen) < limit and misses < MAX_MISSES:
            messages = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(batch, limit - len(seen)),
                WaitTimeSeconds=1,
                VisibilityTimeout=HIDE_SECONDS,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            kept |= {m["MessageId"]: m for m in messages}  # the newest receipt handle
            fresh = [m for m in messages if m["MessageId"] not in seen]
            misses = 0 if fresh else misses + 1
            if not fresh:
                continue
            seen |= {m["MessageId"] for m in fresh}
            for message in handle(fresh):
                kept.pop(message["MessageId"], None)
                _delete(sqs, url, message, tally)
    finally:
        for message in kept.values():
            try:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            except Exception as exc:  # visible again after HIDE_SECONDS anyway
                tally.notes.append(f"{message['MessageId']} stays hidden: {error_code(exc)}")


def _delete(sqs: Any, url: str, message: dict[str, Any], tally: Tally) -> None:
    """Deletes a message that is done; one that cannot be will be handled again."""
    try:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    except Exception as exc:
        tally.not_deleted += 1
        tally.notes.append(f"{message['MessageId']} done but not deleted: {error_code(exc)}")


def depth(sqs: Any, url: str) -> tuple[int, int]:
    """(messages waiting, messages in flight)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


def source_queue(sqs: Any, dlq_url: str, queue: FailureQueue) -> str:
    """The URL of the queue a dead-letter queue's messages came from: the one whose
    RedrivePolicy names it (AWS), else the template's."""
    urls = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
    if len(urls) > 1:
        raise LookupError(f"{queue.name} is the dead-letter queue of several queues: {urls}")
    if urls:
        return str(urls[0])
    [source] = queue.sources
    return str(sqs.get_queue_url(QueueName=source)["QueueUrl"])


def redrive(
    target: Target, queue: FailureQueue, limit: int, discard_lost: bool, tally: Tally | None = None
) -> Tally:
    """Empties `queue` (up to `limit` messages) into `tally`, which holds what was done
    also if this raises."""
    tally = Tally() if tally is None else tally
    sqs = target.client("sqs")
    url = sqs.get_queue_url(QueueName=queue.name)["QueueUrl"]
    if queue.kind == DEAD_LETTER:
        return move_messages(sqs, url, source_queue(sqs, url, queue), limit, tally)
    replayer = Replayer(target, Allowed.of(queue), discard_lost)
    return replay_records(sqs, url, replayer, limit, tally)


def summary(queue: FailureQueue, tally: Tally, left: tuple[int, int] | None) -> str:
    if queue.kind == DEAD_LETTER:
        what = f"{tally.handled} moved back to {', '.join(queue.sources)}"
    else:
        what = f"{tally.handled} replayed"
        if tally.records and queue.kind == STREAM_FAILURES:
            what += f" ({tally.records} stream records)"
    parts = [what, f"{tally.failed} failed"]
    if tally.lost:
        parts.append(f"{tally.lost} stream records lost")
    if tally.unknown:
        parts.append(f"{tally.unknown} refused or not on-failure records (kept)")
    if tally.not_deleted:
        parts.append(f"{tally.not_deleted} handled but not deleted (will be handled again)")
    if left is not None:
        waiting, in_flight = left
        parts.append(f"{waiting} left" + (f" ({in_flight} in flight)" if in_flight else ""))
    return f"{queue.name}: " + ", ".join(parts)


def main(argv: list[str] | None = None, only_on_failure: bool = False) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("queue", nargs="?", help="name, logical id or name without the prefix")
    parser.add_argument("--stage", default=os.environ.get("STAGE") or "dev")
    parser.add_argument("--local", action="store_true", help="the local stack (`make run`)")
    parser.add_argument("--max", type=int, default=DEFAULT_MAX, help="messages at most")
    parser.add_argument(
        "--discard-lost",
        action="store_true",
        help="delete stream failure records even if some or all of their records are lost",
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    try:
        target = local_target(args.stage, args.state_dir) if args.local else Target(args.stage)
        queues = failure_queues(args.stage)
        print(f"{'Local' if args.local else 'AWS'}: {target.describe()}")
        if only_on_failure:
            queues = [q for q in queues if q.kind != DEAD_LETTER]
        if not args.queue:
            return list_queues(target, queues, "replay" if only_on_failure else "redrive")
        queue = find(queues, args.queue, target.name(""))
        if queue is None:
            names = ", ".join(q.name.removeprefix(target.name("")) for q in queues)
            print(f"No such queue {args.queue!r}; choose one of: {names}", file=sys.stderr)
            return 2
    except Exception as exc:  # an operator reads this, not a traceback
        print(f"redrive failed: {error_code(exc)}: {exc}", file=sys.stderr)
        return 1
    tally = Tally()
    failure = ""
    try:
        redrive(target, queue, args.max, args.discard_lost, tally)
    except Exception as exc:  # what was done is still said below
        failure = f"redrive stopped: {error_code(exc)}: {exc}"
    for note in tally.notes:
        print(f"  {note}")
    try:
        sqs = target.client("sqs")
        left = depth(sqs, sqs.get_queue_url(QueueName=queue.name)["QueueUrl"])
        print(summary(queue, tally, left))
    except Exception as exc:
        print(summary(queue, tally, None) + f" (depth unknown: {error_code(exc)})")
    if failure:
        print(failure, file=sys.stderr)
    return 0 if tally.ok and not failure else 1


def list_queues(target: Target, queues: list[FailureQueue], command: str = "redrive") -> int:
    sqs = target.client("sqs")
    width = max((len(q.name) for q in queues), default=0)
    for queue in queues:
        try:
            waiting, in_flight = depth(sqs, sqs.get_queue_url(QueueName=queue.name)["QueueUrl"])
            count = f"{waiting:>6}" + (f" (+{in_flight} in flight)" if in_flight else "")
        except Exception as exc:
            count = f"  ? ({error_code(exc)})"
        print(f"  {queue.name:<{width}} {count}  {queue.kind}: {queue.action()}")
    print(f"Then: make {command} QUEUE=<name> (LOCAL=1 for the local stack)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
