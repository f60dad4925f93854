"""The processor's DynamoDB adapters: the items it stores, the metrics' baselines, a user's
recent transactions, the fraud alerts' budget (`processor`, behind the interfaces of `ports`).

Every adapter takes the client as a callable (the shared lazy client of `chalicelib.core.aws`
by default) and a backoff, so tests and the benchmark can stub either. Batch calls retry
what DynamoDB leaves unprocessed or throttles, with exponential backoff and full jitter, a
bounded number of times, and then report what is still not done instead of raising: the
processor turns it into `batchItemFailures`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from chalicelib.core import aws
from chalicelib.core.aws import error_code, retryable
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import WRITE_BATCH, batch_get, batch_write
from chalicelib.core.quotas import counter_subject
from chalicelib.telemetry.alerting import ALERT_WINDOW_SECONDS
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


#: How long a budget item outlives its hour: the stream keeps a record 24 hours, so a record
#: redelivered that late still finds the alerts its hour let through.
BUDGET_KEPT_SECONDS = 24 * 3600
FULL_WINDOWS_KEPT = 10_000


class DynamoAlertBudget:
    """The fraud alerts let through per user and hour, in the quotas table (`core.quotas`'
    table: key `id`, TTL `expires_at`): one item per (user, hour), keyed
    `<digest of the user id>#fraud-alerts#<hour's epoch second>`, holding the set of the
    alerts' event ids as digests (an event id is the client's: it may name someone).

    Each alert is one conditional UpdateItem that adds its id while the set has room or
    already holds it: idempotent (an alert let through is let through again on redelivery)
    and exact under concurrency. Once an hour is full the process remembers its set (at most
    `FULL_WINDOWS_KEPT`), so a flood of alerts over the limit costs no call."""

    def __init__(
        self,
        table: str,
        limit: int,
        window_seconds: int = ALERT_WINDOW_SECONDS,
        client: Callable[[], Any] = _dynamodb,
        backoff: Backoff | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("the fraud alerts' budget must let one alert through at least")
        self._table = table
        self._limit = limit
        self._window = window_seconds
        self._client = client
        self._backoff = backoff or Backoff()
        self._full: OrderedDict[str, frozenset[str]] = OrderedDict()

    def admit(self, user_id: str, window: int, alert_ids: Sequence[str]) -> set[str]:
        key = f"{counter_subject(user_id)}#fraud-alerts#{window}"
        admitted: set[str] = set()
        for alert_id in dict.fromkeys(alert_ids):
            token = hashlib.sha256(alert_id.encode()).hexdigest()[:32]
            full = self._full.get(key)
            if full is None:
                full = self._add(key, window, token)
            if full is None or token in full:
                admitted.add(alert_id)
        return admitted

    def _add(self, key: str, window: int, token: str) -> frozenset[str] | None:
        """Add `token` to the hour's set: None if it is in it now, else the full set."""
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                self._client().update_item(
                    TableName=self._table,
                    Key={"id": {"S": key}},
                    UpdateExpression="ADD alerts :token SET expires_at = :expires",
                    ConditionExpression=(
                        "attribute_not_exists(alerts) OR size(alerts) < :limit "
                        "OR contains(alerts, :id)"
                    ),
                    ExpressionAttributeValues={
                        ":token": {"SS": [token]},
                        ":id": {"S": token},
                        ":limit": {"N": str(self._limit)},
                        ":expires": {"N": str(window + self._window + BUDGET_KEPT_SECONDS)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except Exception as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    item = (getattr(exc, "response", None) or {}).get("Item")
                    if not item:  # not the full set: refuse this one, remember nothing
                        return frozenset()
                    full = frozenset(item.get("alerts", {}).get("SS", []))
                    self._full[key] = full
                    while len(self._full) > FULL_WINDOWS_KEPT:
                        self._full.popitem(last=False)
                    return full
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")
