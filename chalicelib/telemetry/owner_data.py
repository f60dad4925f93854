"""What telemetry holds about one user: exported on request, erased when the user is deleted
(`users.erasure` calls `erase` on every pass; `users.export` calls `export`).
`DynamoTelemetryOwnerExport` only reads (the API's export, `telemetry_owner_export()`);
`DynamoTelemetryOwnerData` also erases (the erasure, `telemetry_owner_data()`).

Where a user's data is (infra/resources.json; no new index needed):

- activities: the user's partition, `pk` = `USER#<user_id>` (a Query on the table);
- transactions: the `by-user` index (`user_id`, `occurred_at`; KEYS_ONLY), then the items;
- the data lake's pseudonym and secret (`pseudonyms`): the pseudonyms table's item;
- metrics and baselines are keyed by source and metric, never by user (only machine
  identities and admins send metrics): nothing of a user there. The quota counters
  (`core.quotas`) and the fraud alerts' budget (`tables.DynamoAlertBudget`) name a user by
  a digest of the id, and expire by TTL (minutes; a day).

Erasure:

- activities are deleted (BatchWriteItem, 25 a call);
- transactions are financial records: each item stays, but loses every link to the person.
  Its `user_id` becomes a pseudonym, and its `transaction_id` a random id
  (`erased-txn-` and 32 hex digits, one per item): the client chose the original, which may
  hold personal data or match the payment provider's record of the person's payment
  (`pseudonyms`). The key (`TXN#<user_id>#<id>` holds both) follows: the pseudonymised item is
  put under `TXN#<pseudonym>#<random id>` and the original deleted in one transaction,
  conditional on it still being the user's, so a crash or a second erasure at the same time
  never leaves two copies (the loser's put is cancelled with its delete), and two of the
  user's items with the same id (one stored before ids were per owner) stay two. What an
  item keeps: `KEPT_TRANSACTION_FIELDS` (time, amount, currency, status); free text that may
  name a person (`merchant`, `category`) and the client's `event_id` are dropped.
- the pseudonym is random (`deleted-` and 32 hex digits), one per call, stored nowhere: it
  cannot be recomputed from the user's id, which other records (logs, the data lake's
  archived events) may still hold, so a pseudonymised transaction cannot be linked back to
  the person. The transactions of one call share it (they stay countable together);
  transactions a later pass of the erasure finds (sent with a token still valid after the
  deletion) get another.
- the user's lake identity is replaced by a tombstone (`pseudonyms.DynamoPseudonyms.forget`):
  the events archived in the data lake keep only the pseudonym and keyed digests, which
  nothing maps to the user any more. The archive itself is not rewritten.

Both page through everything (no 1 MB truncation), retry throttled calls with backoff a
bounded number of times (then raise: the erasure's message comes back), and are idempotent:
what was erased is not found again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from chalicelib.core import aws, clock, ids
from chalicelib.core.aws import error_code, retryable
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import WRITE_BATCH, batch_get, batch_write, from_item, to_item
from chalicelib.telemetry.duplicates import SOURCE_RECORD
from chalicelib.telemetry.encoding import transaction_key
from chalicelib.telemetry.pseudonyms import DynamoPseudonyms

PSEUDONYM_PREFIX = "deleted-"
ERASED_TRANSACTION_PREFIX = "erased-txn-"
#: What a pseudonymised transaction keeps (with its new `pk`, `user_id` and
#: `transaction_id`).
KEPT_TRANSACTION_FIELDS = (
    "event_type",
    "timestamp",
    "occurred_at",
    "amount",
    "currency",
    "status",
)
#: The tables' own attributes: not data about the user (`SOURCE_RECORD`: the stream record
#: that wrote the item, `duplicates`).
ACTIVITY_BOOKKEEPING = frozenset({"pk", "sk", SOURCE_RECORD})
TRANSACTION_BOOKKEEPING = frozenset({"pk", SOURCE_RECORD})


def new_pseudonym() -> str:
    return PSEUDONYM_PREFIX + ids.new_pseudonym()


def new_transaction_id() -> str:
    """An erased transaction's id: random, so nothing the client or a payment provider
    holds matches it."""
    return ERASED_TRANSACTION_PREFIX + secrets.token_hex(16)


class DynamoTelemetryOwnerExport:
    """A user's telemetry, read only: `export(user_id)`."""

    def __init__(
        self,
        activities_table: str,
        transactions_table: str,
        by_user_index: str = "by-user",
        client: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._activities = activities_table
        self._transactions = transactions_table
        self._index = by_user_index
        self._client = client or (lambda: aws.client("dynamodb"))
        self._backoff = backoff or Backoff()

    # --- export ------------------------------------------------------------------------------

    def export(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        """`{"activities": [...], "transactions": [...]}`, oldest first, JSON-ready."""
        activities = []
        for item in self._query(self._activity_request(user_id)):
            activity = {k: v for k, v in from_item(item).items() if k not in ACTIVITY_BOOKKEEPING}
            if isinstance(activity.get("details"), str):  # stored as JSON text (encoding)
                activity["details"] = json.loads(activity["details"])
            activities.append(activity)
        transactions = [
            {k: v for k, v in from_item(item).items() if k not in TRANSACTION_BOOKKEEPING}
            for item in self._transaction_items(user_id)
        ]
        transactions.sort(key=lambda t: (t.get("occurred_at", ""), t.get("transaction_id", "")))
        return {"activities": activities, "transactions": transactions}

    # --- reads -------------------------------------------------------------------------------

    def _activity_request(self, user_id: str) -> dict[str, Any]:
        return {
            "TableName": self._activities,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}},
            "ConsistentRead": True,
        }

    def _transaction_items(self, user_id: str) -> Iterator[dict[str, Any]]:
        """The user's transaction items (raw), read through the `by-user` index (keys) and
        BatchGetItem (consistent), a page of keys at a time."""
        request = {
            "TableName": self._transactions,
            "IndexName": self._index,
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": {":u": {"S": user_id}},
        }
        for page in self._query_pages(request):
            keys = [{"pk": key["pk"]} for key in page]
            found = batch_get(
                self._client(), self._transactions, keys, self._backoff, ConsistentRead=True
            )
            # The index lags the table: keep only what is still the user's.
            yield from (item for item in found if item.get("user_id", {}).get("S") == user_id)

    def _query(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for page in self._query_pages(request):
            yield from page

    def _query_pages(self, request: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a Query (following LastEvaluatedKey), each call retried when
        throttled. A page's items may be deleted before the next page is read: the next page
        starts after a key position, whether or not that item is still there."""
        request = dict(request)
        while True:
            response = self._call_query(request)
            yield response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _call_query(self, request: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                return dict(self._client().query(**request))
            except Exception as exc:
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")


class DynamoTelemetryOwnerData(DynamoTelemetryOwnerExport):
    """A user's telemetry: `export(user_id)` and `erase(user_id)`."""

    def __init__(
        self,
        activities_table: str,
        transactions_table: str,
        lake: DynamoPseudonyms,
        by_user_index: str = "by-user",
        client: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
        pseudonym: Callable[[], str] = new_pseudonym,
        transaction_id: Callable[[], str] = new_transaction_id,
    ) -> None:
        super().__init__(activities_table, transactions_table, by_user_index, client, backoff)
        self._lake = lake
        self._pseudonym = pseudonym
        self._transaction_id = transaction_id

    # --- erase -------------------------------------------------------------------------------

    def erase(self, user_id: str) -> dict[str, int]:
        """Delete the user's activities, pseudonymise their transactions, forget their lake
        identity; the counts of what this call changed (all 0 when run again)."""
        deleted = 0
        keys: list[dict[str, Any]] = []
        request = {**self._activity_request(user_id), "ProjectionExpression": "pk, sk"}
        for item in self._query(request):
            keys.append({"pk": item["pk"], "sk": item["sk"]})
            if len(keys) == WRITE_BATCH:
                deleted += self._delete_activities(keys)
                keys = []
        if keys:
            deleted += self._delete_activities(keys)
        pseudonym = self._pseudonym()
        pseudonymised = sum(
            self._pseudonymise(item, user_id, pseudonym)
            for item in self._transaction_items(user_id)
        )
        forgotten = self._lake.forget(user_id)
        return {
            "activities": deleted,
            "transactions": pseudonymised,
            "lake_identities": int(forgotten),
        }

    def _delete_activities(self, keys: list[dict[str, Any]]) -> int:
        requests = [{"DeleteRequest": {"Key": key}} for key in keys]
        batch_write(self._client(), self._activities, requests, self._backoff).raise_if_any(
            self._activities
        )
        return len(keys)

    def _pseudonymise(self, item: dict[str, Any], user_id: str, pseudonym: str) -> bool:
        """Move one transaction to its pseudonym, under a new random id; False if it is no
        longer the user's."""
        values = from_item(item)
        kept = {k: values[k] for k in KEPT_TRANSACTION_FIELDS if k in values}
        transaction_id = self._transaction_id()  # never the client's (module docstring)
        kept.update(
            pk=transaction_key(pseudonym, transaction_id),
            transaction_id=transaction_id,
            user_id=pseudonym,
            pseudonymised_at=clock.timestamp(),
        )
        operations = [
            {"Put": {"TableName": self._transactions, "Item": to_item(kept)}},
            {
                "Delete": {
                    "TableName": self._transactions,
                    "Key": {"pk": item["pk"]},
                    "ConditionExpression": "user_id = :owner",
                    "ExpressionAttributeValues": {":owner": {"S": user_id}},
                }
            },
        ]
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                self._client().transact_write_items(TransactItems=operations)
                return True
            except Exception as exc:
                if error_code(exc) == "TransactionCanceledException":
                    reasons = [r.get("Code") for r in _cancellation_reasons(exc)]
                    if "ConditionalCheckFailed" in reasons:
                        return False  # erased meanwhile (another pass), or not the user's
                    retry = any(c in ("ThrottlingError", "TransactionConflict") for c in reasons)
                else:
                    retry = retryable(exc) or error_code(exc) == "TransactionInProgressException"
                if not retry or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")


def _cancellation_reasons(exc: BaseException) -> list[dict[str, Any]]:
    response = getattr(exc, "response", None) or {}
    reasons = response.get("CancellationReasons") or []
    return [r for r in reasons if isinstance(r, dict)]
