"""Per-caller quotas: how much one user (or one address) may do in a window of time.

A quota is a limit per fixed window (`events` per minute, `uploads` and `upload-bytes` per
day). Each use adds to a counter item keyed by subject, quota and window start, in one
conditional UpdateItem: the add happens only while the total stays within the limit, so
concurrent requests on many Lambda instances can never overshoot it, and a refused request
consumes nothing. Counters carry a TTL a window after they end, so the table never grows.

Counters are keyed by a digest of the subject, never the subject itself: a user id or an
address must not outlive its owner's erasure in a table of counters.

Several quotas taken together (an upload counts against both its count and its bytes) are
taken in one transaction: all or none.

Going over is `QuotaExceeded`: a 429 in the API's error shape, with `Retry-After` saying
when the window ends. A request that could never fit (more than a whole window's limit at
once) is a 413 instead: retrying it is pointless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.core import aws, clock
from chalicelib.core.backoff import Backoff
from chalicelib.core.errors import ApiError, PayloadTooLarge, ServiceUnavailable
from chalicelib.core.ids import digest

#: Transactions tried, with jittered waits, when concurrent requests conflict on the same
#: counters: a few tens of milliseconds in all, inside any function's time.
CONFLICT_BACKOFF = Backoff(max_attempts=3, base_s=0.02, cap_s=0.08)


@dataclass(frozen=True)
class Quota:
    name: str
    limit: int
    window_seconds: int


class QuotaExceeded(ApiError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, quota: Quota, retry_after_seconds: int) -> None:
        super().__init__(
            f"Quota '{quota.name}' exceeded: at most {quota.limit} per "
            f"{_window_words(quota.window_seconds)}; retry in {retry_after_seconds} s.",
            [{"field": quota.name, "issue": f"limit {quota.limit}"}],
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.quota = quota
        self.retry_after_seconds = retry_after_seconds


def _window_words(seconds: int) -> str:
    if seconds % 86400 == 0:
        return "day" if seconds == 86400 else f"{seconds // 86400} days"
    if seconds % 60 == 0:
        return "minute" if seconds == 60 else f"{seconds // 60} minutes"
    return f"{seconds} s"


def window_start(moment: datetime, window_seconds: int) -> int:
    """The epoch second the fixed window holding `moment` starts at (aligned to UTC)."""
    epoch = int(moment.timestamp())
    return epoch - epoch % window_seconds


class Quotas(Protocol):
    def take(self, subject: str, uses: Sequence[tuple[Quota, int]]) -> None:
        """Count `amount` against each quota for `subject`, all or none; `QuotaExceeded`
        (for the first quota that would go over) if any would."""

    def give_back(self, subject: str, quota: Quota, amount: int) -> None:
        """Undo a use taken in the current window whose work then failed before it did
        anything (a mail never sent): the client's retry must not pay for it twice. Never
        goes below zero."""


def _check_request(uses: Sequence[tuple[Quota, int]]) -> None:
    """A use of more than a quota's whole limit could never fit, whatever was used before:
    not a retry (429) but `PayloadTooLarge` (413), nothing counted."""
    for quota, amount in uses:
        if amount < 0:
            raise ValueError(f"negative use of {quota.name}")
        if amount > quota.limit:
            per = _window_words(quota.window_seconds)
            raise PayloadTooLarge(
                f"The request takes {amount} of quota '{quota.name}', which allows at most "
                f"{quota.limit} per {per}: it can never fit; send less.",
                [{"field": quota.name, "issue": f"{quota.name}: {amount} over {quota.limit}"}],
            )


class InMemoryQuotas:
    """The same rules in a dict, for unit tests and benchmarks."""

    def __init__(self, now: Callable[[], datetime] = clock.now) -> None:
        self._now = now
        self.used: dict[tuple[str, str, int], int] = {}

    def take(self, subject: str, uses: Sequence[tuple[Quota, int]]) -> None:
        _check_request(uses)
        moment = self._now()
        keys = []
        for quota, amount in uses:
            key = (subject, quota.name, window_start(moment, quota.window_seconds))
            if self.used.get(key, 0) + amount > quota.limit:
                raise QuotaExceeded(quota, _retry_after(moment, quota))
            keys.append((key, amount))
        for key, amount in keys:
            self.used[key] = self.used.get(key, 0) + amount

    def give_back(self, subject: str, quota: Quota, amount: int) -> None:
        key = (subject, quota.name, window_start(self._now(), quota.window_seconds))
        if self.used.get(key, 0) >= amount:  # as DynamoDB's condition: all or nothing
            self.used[key] -= amount


def _retry_after(moment: datetime, quota: Quota) -> int:
    ends = window_start(moment, quota.window_seconds) + quota.window_seconds
    return max(1, ends - int(moment.timestamp()))


def counter_subject(subject: str) -> str:
    """How a subject is named in the counters table (a digest: module docstring)."""
    return digest(subject)[:32]


class DynamoQuotas:
    """Counters in a DynamoDB table keyed by `id` with TTL attribute `expires_at`."""

    def __init__(
        self,
        table_name: str,
        now: Callable[[], datetime] = clock.now,
        client: Callable[[], Any] | None = None,
        backoff: Backoff = CONFLICT_BACKOFF,
    ) -> None:
        self._table = table_name
        self._now = now
        self._client = client or (lambda: aws.client("dynamodb"))
        self._backoff = backoff

    def take(self, subject: str, uses: Sequence[tuple[Quota, int]]) -> None:
        _check_request(uses)
        moment = self._now()
        updates = [self._update(subject, quota, amount, moment) for quota, amount in uses]
        db = self._client()
        if len(updates) == 1:
            try:
                db.update_item(**updates[0])
            except db.exceptions.ConditionalCheckFailedException:
                quota = uses[0][0]
                raise QuotaExceeded(quota, _retry_after(moment, quota)) from None
            return
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                db.transact_write_items(TransactItems=[{"Update": u} for u in updates])
                return
            except db.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons") or []
                for (quota, _), reason in zip(uses, reasons, strict=False):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise QuotaExceeded(quota, _retry_after(moment, quota)) from None
                if not any(r.get("Code") == "TransactionConflict" for r in reasons):
                    raise
        # The same counters taken by concurrent requests (a user's parallel uploads) each
        # time: the client may try again at once.
        raise ServiceUnavailable("Too many requests at once; retry.")

    def give_back(self, subject: str, quota: Quota, amount: int) -> None:
        start = window_start(self._now(), quota.window_seconds)
        try:
            self._client().update_item(
                TableName=self._table,
                Key={"id": {"S": f"{counter_subject(subject)}#{quota.name}#{start}"}},
                UpdateExpression="ADD used :less",
                ConditionExpression="used >= :amount",
                ExpressionAttributeValues={
                    ":less": {"N": str(-amount)},
                    ":amount": {"N": str(amount)},
                },
            )
        except self._client().exceptions.ConditionalCheckFailedException:
            pass  # no counter in this window any more (a new window began): nothing to undo

    def _update(self, subject: str, quota: Quota, amount: int, moment: datetime) -> dict:
        start = window_start(moment, quota.window_seconds)
        return {
            "TableName": self._table,
            "Key": {"id": {"S": f"{counter_subject(subject)}#{quota.name}#{start}"}},
            "UpdateExpression": "ADD used :amount SET expires_at = :expires",
            "ConditionExpression": "attribute_not_exists(used) OR used <= :room",
            "ExpressionAttributeValues": {
                ":amount": {"N": str(amount)},
                ":room": {"N": str(quota.limit - amount)},
                ":expires": {"N": str(start + 2 * quota.window_seconds)},
            },
        }
