"""The processor's DynamoDB adapters: the items it stores, the metrics' baselines, a user's
recent transactions (`processor`, behind the interfaces of `ports`).

Every adapter takes the client as a callable (the shared lazy client of `chalicelib.core.aws`
by default) and a backoff, so tests and the benchmark can stub either. Batch calls retry
what DynamoDB leaves unprocessed or throttles, with exponential backoff and full jitter, a
bounded number of times, and then report what is still not done instead of raising: the
processor turns it into `batchItemFailures`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.core import aws
from chalicelib.core.aws import error_code, retryable
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import WRITE_BATCH, batch_get, batch_write
from chalicelib.telemetry.detection import Baseline
from chalicelib.telemetry.encoding import computed_number, transaction_id_of
from chalicelib.telemetry.ports import PutOutcome


def _dynamodb() -> Any:
    return aws.client("dynamodb")


#: Errors about the items themselves (a number DynamoDB cannot store, an item too large, a
#: string botocore cannot encode): the same items fail the same way every time, but the
#: other items of their call would be written on their own.
ITEM_ERRORS = frozenset({"ValidationException", "SerializationException", "ParamValidationError"})


def item_error(exc: BaseException) -> bool:
    return error_code(exc) in ITEM_ERRORS or isinstance(exc, ValueError | TypeError)


class DynamoItemWriter:
    """BatchWriteItem (`core.dynamo.batch_write`), 25 puts per call, retrying UnprocessedItems
    and throttled calls. A call refused for its items (`item_error`) is split in halves until
    the items refused are alone: those are `rejected`, the others written."""

    def __init__(
        self, client: Callable[[], Any] = _dynamodb, backoff: Backoff | None = None
    ) -> None:
        self._client = client
        self._backoff = backoff or Backoff()

    def put_all(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        should_stop: Callable[[], bool] | None = None,
    ) -> PutOutcome:
        """Put `items` (no primary key twice); what is still not written, and why. Once
        `should_stop()` (the deadline) is true no call is started nor backoff slept: what
        is left is `failed`."""
        outcome = PutOutcome()
        for start in range(0, len(items), WRITE_BATCH):
            chunk = list(range(start, min(start + WRITE_BATCH, len(items))))
            self._put_chunk(table, items, chunk, outcome, should_stop)
        outcome.failed.sort()
        return outcome

    def _put_chunk(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        chunk: list[int],
        outcome: PutOutcome,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        requests = [{"PutRequest": {"Item": items[i]}} for i in chunk]
        left = batch_write(self._client(), table, requests, self._backoff, should_stop)
        # What is left comes back as the same requests: find their positions by key.
        positions = {_key(items[i]): i for i in chunk}
        keys = (_key(request["PutRequest"]["Item"]) for request in left.requests)
        unwritten = sorted({positions[key] for key in keys if key in positions})
        if left.error is None or not item_error(left.error):
            outcome.failed += unwritten
        elif len(unwritten) == 1:
            outcome.rejected[unwritten[0]] = f"{error_code(left.error)}: {left.error}"
        else:
            half = len(unwritten) // 2
            self._put_chunk(table, items, unwritten[:half], outcome, should_stop)
            self._put_chunk(table, items, unwritten[half:], outcome, should_stop)


def _key(item: dict[str, Any]) -> tuple[str, str]:
    sk = item.get("sk")
    return item["pk"]["S"], sk["S"] if sk else ""


class DynamoBaselines:
    """The baselines table: `pk` = `<source>#<metric>`, with `mean`, `samples`, `version`
    and `applied` (a map of shard to the last sequence number folded in)."""

    def __init__(
        self,
        table: str,
        client: Callable[[], Any] = _dynamodb,
        backoff: Backoff | None = None,
        max_conflicts: int = 5,
    ) -> None:
        self._table = table
        self._client = client
        self._backoff = backoff or Backoff()
        self._max_conflicts = max_conflicts

    def get_many(self, keys: Sequence[str]) -> dict[str, Baseline]:
        """The stored baselines of `keys` (missing ones are absent); raises when reads stay
        throttled after every retry."""
        requested = [{"pk": {"S": key}} for key in keys]
        found = batch_get(
            self._client(), self._table, requested, self._backoff, ConsistentRead=True
        )
        return {item["pk"]["S"]: _baseline(item) for item in found}

    def store(self, key: str, seen: Baseline | None, new: Baseline) -> Baseline | None:
        """Write `new` if the stored baseline is still `seen` (by version): None when
        written, else the baseline stored now (another writer got there first)."""
        values = {
            ":mean": {"N": computed_number(new.mean)},
            ":samples": {"N": str(new.samples)},
            ":version": {"N": str(new.version)},
            ":applied": {"M": {shard: {"S": seq} for shard, seq in new.applied.items()}},
        }
        if seen is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "version = :seen"
            values[":seen"] = {"N": str(seen.version)}
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                self._client().update_item(
                    TableName=self._table,
                    Key={"pk": {"S": key}},
                    UpdateExpression=(
                        "SET mean = :mean, samples = :samples, version = :version, "
                        "applied = :applied"
                    ),
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
                return None
            except Exception as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return self._get(key)
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")

    def _get(self, key: str) -> Baseline:
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                response = self._client().get_item(
                    TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True
                )
            except Exception as exc:
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
                continue
            item = response.get("Item")
            return _baseline(item) if item else Baseline()
        raise RuntimeError("unreachable")


def _baseline(item: dict[str, Any]) -> Baseline:
    return Baseline(
        mean=float(item.get("mean", {}).get("N", "0")),
        samples=int(item.get("samples", {}).get("N", "0")),
        version=int(item.get("version", {}).get("N", "0")),
        applied={k: v["S"] for k, v in item.get("applied", {}).get("M", {}).items()},
    )


class DynamoTransactionHistory:
    """The transactions table's `by-user` index (KEYS_ONLY): a user's transactions by time."""

    def __init__(
        self,
        table: str,
        index: str = "by-user",
        client: Callable[[], Any] = _dynamodb,
        backoff: Backoff | None = None,
    ) -> None:
        self._table = table
        self._index = index
        self._client = client
        self._backoff = backoff or Backoff()

    def between(self, user_id: str, start: str, end: str) -> list[tuple[str, str]]:
        """(occurred_at, transaction_id) of the user's stored transactions in [start, end].
        Keys, not a COUNT: a redelivered transaction must be counted once, by its id."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._index,
            "KeyConditionExpression": "user_id = :u AND occurred_at BETWEEN :a AND :b",
            "ExpressionAttributeValues": {
                ":u": {"S": user_id},
                ":a": {"S": start},
                ":b": {"S": end},
            },
        }
        found: list[tuple[str, str]] = []
        attempt = 0
        while True:
            try:
                response = self._client().query(**request)
            except Exception as exc:
                attempt += 1
                if not retryable(exc) or attempt >= self._backoff.max_attempts:
                    raise
                self._backoff.wait(attempt)
                continue
            found += [
                (item["occurred_at"]["S"], transaction_id_of(item["pk"]["S"]))
                for item in response.get("Items", [])
            ]
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            request["ExclusiveStartKey"] = last
