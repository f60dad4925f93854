"""What the adapters on the low-level DynamoDB client share.

- items <-> plain Python values: numbers come back as int, or float when they have a
  fraction (DynamoDB gives Decimals, which JSON cannot encode), at any depth; floats go in
  as Decimals (DynamoDB refuses floats); attributes set to None are left out;
- `query_page`: one page of a newest-first list in one Query;
- `batch_get`: BatchGetItem, 100 keys a call, retrying what DynamoDB leaves unprocessed;
- `batch_write`: one BatchWriteItem's worth of puts and deletes (25 at most), retrying what
  DynamoDB leaves unprocessed, up to a deadline if the caller has one.

Both also retry a call that failed for a reason worth another try (`aws.retryable`:
throttling, a fault on AWS's side), with the caller's backoff between any two calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from chalicelib.core.aws import retryable
from chalicelib.core.backoff import Backoff

READ_BATCH = 100  # BatchGetItem's limit
WRITE_BATCH = 25  # BatchWriteItem's limit


class Unprocessed(RuntimeError):
    """DynamoDB still left items unprocessed after every retry (throttled): retry later."""


@cache
def _codec() -> tuple[Any, Any]:
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    return TypeSerializer(), TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    serializer, _ = _codec()
    return {k: serializer.serialize(storable(v)) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    _, deserializer = _codec()
    return {k: plain(deserializer.deserialize(v)) for k, v in item.items()}


def plain(value: Any) -> Any:
    """Decimals as ints or floats, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def storable(value: Any) -> Any:
    """Floats as Decimals, recursively."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def query_page(
    client: Any, request: dict[str, Any], limit: int, sort_attribute: str = "created_key"
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` items of the Query `request` (raw items), and the `sort_attribute` to
    continue from, or None on the last page. It asks for one item more than the page, so
    the last page is known without a second call."""
    response = client.query(**request, Limit=limit + 1)
    items = response.get("Items", [])
    if len(items) > limit:
        return items[:limit], items[limit - 1][sort_attribute]["S"]
    last_key = response.get("LastEvaluatedKey")
    # DynamoDB stopped early (1 MB read): continue from where it stopped.
    return items, last_key[sort_attribute]["S"] if last_key else None


def batch_get(
    client: Any, table: str, keys: Sequence[dict[str, Any]], backoff: Backoff, **options: Any
) -> list[dict[str, Any]]:
    """The items found for `keys` (raw, in no particular order), 100 keys per call, `options`
    (ProjectionExpression, ConsistentRead...) on every call. Unprocessed if some keys are
    still unprocessed after `backoff.max_attempts` calls; the error of the last call if that
    one failed too, or of any call failing for a reason not worth a retry."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), READ_BATCH):
        pending = {"Keys": list(keys[start : start + READ_BATCH]), **options}
        for attempt in range(backoff.max_attempts):
            if attempt:
                backoff.wait(attempt)
            try:
                response = client.batch_get_item(RequestItems={table: pending})
            except Exception as exc:
                if not retryable(exc) or attempt == backoff.max_attempts - 1:
                    raise
                continue
            found += response.get("Responses", {}).get(table, [])
            pending = response.get("UnprocessedKeys", {}).get(table)
            if not pending:
                break
        else:
            raise Unprocessed(f"{len(pending['Keys'])} reads of {table} left unprocessed")
    return found


@dataclass
class WriteLeft:
    """What `batch_write` did not apply: `requests` (as sent, or as DynamoDB returned them
    unprocessed), and `error`, the exception of the call that ended the retries when it was
    not worth another try (None when the retries or the deadline ran out, or all is done)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None

    def raise_if_any(self, table: str) -> None:
        """For callers that need every write: raise `error`, or Unprocessed if any is left."""
        if self.error is not None:
            raise self.error
        if self.requests:
            raise Unprocessed(f"{len(self.requests)} writes to {table} left unprocessed")


def batch_write(
    client: Any,
    table: str,
    requests: Sequence[dict[str, Any]],
    backoff: Backoff,
    should_stop: Callable[[], bool] | None = None,
) -> WriteLeft:
    """Apply `requests` (PutRequest and DeleteRequest items, 25 at most, no key twice) with
    BatchWriteItem, sending again what DynamoDB leaves unprocessed and the whole call after
    a failure worth a retry, `backoff.max_attempts` calls at most. Once `should_stop()` (a
    deadline) is true no call is started nor backoff slept. Returns what is left."""
    pending = list(requests)
    for attempt in range(backoff.max_attempts):
        if not pending or (should_stop is not None and should_stop()):
            break
        if attempt:
            backoff.wait(attempt)
        try:
            response = client.batch_write_item(RequestItems={table: pending})
        except Exception as exc:
            if retryable(exc):
                continue
            return WriteLeft(pending, exc)
        pending = response.get("UnprocessedItems", {}).get(table, [])
    return WriteLeft(pending)
