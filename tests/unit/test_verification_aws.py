"""Codes waiting in the users table, the disabled identity, and quota counters: the adapters
against moto, provisioned from infra/resources.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.core.errors import PayloadTooLarge
from chalicelib.core.quotas import (
    DynamoQuotas,
    InMemoryQuotas,
    Quota,
    QuotaExceeded,
    counter_subject,
)
from chalicelib.users import verification
from chalicelib.users.pending import DynamoPendingRecords, email_change_key, signup_key
from chalicelib.users.repository import DynamoUserRepository
from infra.paths import PROJECT_DIR

USERS = "serverless-app-dev-users"
QUOTAS = "serverless-app-dev-quotas"
NOON = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
NOW_EPOCH = int(NOON.timestamp())


def test_a_new_code_voids_the_old_and_resets_its_misses(aws: dict[str, str]) -> None:
    pending = DynamoPendingRecords(USERS)
    key = signup_key("Ada@Example.com")
    first = verification.issue(NOON)
    pending.put(key, {"email": "Ada@Example.com", **first.stored()})
    assert pending.use_attempt(key, first.digest, 5, NOW_EPOCH)
    assert pending.get(key)["attempts"] == 1
    second = verification.issue(NOON)
    pending.put(key, {"email": "Ada@Example.com", **second.stored()})
    assert not pending.use_attempt(key, first.digest, 5, NOW_EPOCH)  # a late try, old code
    record = pending.get(key)
    assert record["attempts"] == 0 and verification.matches(record, second.code)
    assert not verification.matches(record, first.code) or first.code == second.code
    pending.delete(key, first.digest)  # the old code's confirmation must not remove the new
    assert pending.get(key) is not None
    pending.delete(key, second.digest)
    assert pending.get(key) is None


def test_only_the_digest_is_stored_and_the_item_expires_by_ttl(aws: dict[str, str]) -> None:
    pending = DynamoPendingRecords(USERS)
    code = verification.issue(NOON)
    pending.put(signup_key("a@example.com"), {"email": "a@example.com", **code.stored()})
    item = boto3.client("dynamodb").get_item(
        TableName=USERS, Key={"pk": {"S": "SIGNUP#a@example.com"}}
    )["Item"]
    assert code.code not in str(item)
    # moto's CloudFormation does not apply TTL settings (nor would moto expire items): the
    # template is what AWS gets.
    template = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    ttl = template["Resources"]["UsersTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    assert int(item["expires_at"]["N"]) == int((NOON + verification.CODE_LIFETIME).timestamp())


def test_a_removed_user_takes_its_waiting_email_change_along(aws: dict[str, str]) -> None:
    repo, pending = DynamoUserRepository(USERS), DynamoPendingRecords(USERS)
    user: dict[str, Any] = {
        "user_id": "00000000-0000-4000-8000-000000000001",
        "email": "ada@example.com",
        "name": "Ada",
        "preferences": {},
        "created_at": "2026-11-26T00:00:00.000000Z",
        "updated_at": "2026-11-26T00:00:00.000000Z",
        "version": 1,
    }
    repo.add(user, repo.reserve_email(user["email"]))
    assert repo.email_owner("ADA@example.com") == user["user_id"]
    code = verification.issue(NOON)
    pending.put(email_change_key(user["user_id"]), {"email": "new@x.org", **code.stored()})
    repo.remove(user)
    assert pending.get(email_change_key(user["user_id"])) is None
    assert repo.email_owner("ada@example.com") is None


def test_a_reserved_address_has_no_owner_yet(aws: dict[str, str]) -> None:
    repo = DynamoUserRepository(USERS)
    repo.reserve_email("bob@example.com")
    assert repo.email_owner("bob@example.com") is None


def test_an_attempt_counts_only_while_the_code_is_live_and_has_tries_left(
    aws: dict[str, str],
) -> None:
    pending = DynamoPendingRecords(USERS)
    key = signup_key("bob@example.com")
    code = verification.issue(NOON)
    pending.put(key, {"email": "bob@example.com", **code.stored()})
    assert [pending.use_attempt(key, code.digest, 3, NOW_EPOCH) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert pending.get(key)["attempts"] == 3
    pending.put(key, {"email": "bob@example.com", **code.stored()})
    expired = int((NOON + verification.CODE_LIFETIME).timestamp())
    assert not pending.use_attempt(key, code.digest, 3, expired)
    assert not pending.use_attempt(signup_key("nobody@example.com"), code.digest, 3, NOW_EPOCH)


# --- quotas ---------------------------------------------------------------------------------

PER_MINUTE = Quota("events", 10, 60)
COUNT, BYTES = Quota("uploads", 3, 86400), Quota("upload-bytes", 100, 86400)


@pytest.mark.parametrize("kind", ["dynamodb", "memory"])
def test_a_quota_takes_up_to_its_limit_per_window_and_refuses_beyond(
    aws: dict[str, str], kind: str
) -> None:
    now = [NOON]
    quotas = (
        DynamoQuotas(QUOTAS, now=lambda: now[0])
        if kind == "dynamodb"
        else InMemoryQuotas(now=lambda: now[0])
    )
    quotas.take("user-1", [(PER_MINUTE, 7)])
    quotas.take("user-1", [(PER_MINUTE, 3)])
    with pytest.raises(QuotaExceeded) as refused:
        quotas.take("user-1", [(PER_MINUTE, 1)])
    assert refused.value.retry_after_seconds == 30  # the minute ends at 12:01:00
    assert refused.value.headers == {"Retry-After": "30"}
    quotas.take("user-2", [(PER_MINUTE, 10)])  # another subject's own count
    with pytest.raises(PayloadTooLarge) as too_big:  # never fits: not a retry
        quotas.take("user-3", [(PER_MINUTE, 11)])
    assert too_big.value.status_code == 413 and "at most 10" in too_big.value.message
    quotas.take("user-3", [(PER_MINUTE, 10)])  # the refused request counted nothing
    now[0] += timedelta(seconds=30)
    quotas.take("user-1", [(PER_MINUTE, 10)])  # a new window


@pytest.mark.parametrize("kind", ["dynamodb", "memory"])
def test_a_use_given_back_frees_its_room_and_never_goes_below_zero(
    aws: dict[str, str], kind: str
) -> None:
    now = [NOON]
    quotas = (
        DynamoQuotas(QUOTAS, now=lambda: now[0])
        if kind == "dynamodb"
        else InMemoryQuotas(now=lambda: now[0])
    )
    quotas.give_back("user-1", PER_MINUTE, 1)  # nothing taken yet: nothing to undo
    quotas.take("user-1", [(PER_MINUTE, 10)])
    quotas.give_back("user-1", PER_MINUTE, 4)
    quotas.take("user-1", [(PER_MINUTE, 4)])  # the room given back
    with pytest.raises(QuotaExceeded):
        quotas.take("user-1", [(PER_MINUTE, 1)])
    quotas.give_back("user-1", PER_MINUTE, 10)
    quotas.give_back("user-1", PER_MINUTE, 10)  # more than is left: refused, not negative
    quotas.take("user-1", [(PER_MINUTE, 10)])
    with pytest.raises(QuotaExceeded):
        quotas.take("user-1", [(PER_MINUTE, 1)])


@pytest.mark.parametrize("kind", ["dynamodb", "memory"])
def test_quotas_taken_together_are_all_or_none(aws: dict[str, str], kind: str) -> None:
    quotas = (
        DynamoQuotas(QUOTAS, now=lambda: NOON)
        if kind == "dynamodb"
        else InMemoryQuotas(now=lambda: NOON)
    )
    quotas.take("u", [(COUNT, 1), (BYTES, 90)])
    with pytest.raises(QuotaExceeded) as refused:
        quotas.take("u", [(COUNT, 1), (BYTES, 20)])
    assert refused.value.quota == BYTES
    quotas.take("u", [(COUNT, 1), (BYTES, 10)])  # the refused one counted nothing
    quotas.take("u", [(COUNT, 1), (BYTES, 0)])
    with pytest.raises(QuotaExceeded) as refused:
        quotas.take("u", [(COUNT, 1), (BYTES, 0)])
    assert refused.value.quota == COUNT


def test_quota_counters_expire_after_their_window(aws: dict[str, str]) -> None:
    DynamoQuotas(QUOTAS, now=lambda: NOON).take("u", [(PER_MINUTE, 1)])
    (item,) = boto3.client("dynamodb").scan(TableName=QUOTAS)["Items"]
    start = int(NOON.timestamp()) // 60 * 60
    assert item["id"]["S"] == f"{counter_subject('u')}#events#{start}"
    assert int(item["expires_at"]["N"]) == start + 120


def test_quotas_taken_by_concurrent_requests_are_retried_then_503(aws: dict[str, str]) -> None:
    """Parallel uploads of one user take the same two counters in transactions, which
    DynamoDB cancels as conflicting: retried, then a 503 (never an unexplained 500)."""
    from chalicelib.core.errors import ServiceUnavailable

    real = boto3.client("dynamodb")

    class Conflicting:
        """DynamoDB whose next `conflicts` transactions are cancelled as conflicting."""

        exceptions = real.exceptions

        def __init__(self, conflicts: int) -> None:
            self.conflicts, self.calls = conflicts, 0

        def transact_write_items(self, **request: Any) -> Any:
            self.calls += 1
            if self.conflicts:
                self.conflicts -= 1
                error = {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
                }
                raise real.exceptions.TransactionCanceledException(error, "TransactWriteItems")
            return real.transact_write_items(**request)

    settles = Conflicting(conflicts=2)
    DynamoQuotas(QUOTAS, now=lambda: NOON, client=lambda: settles).take(
        "u", [(COUNT, 1), (BYTES, 1)]
    )
    assert settles.calls == 3
    never = Conflicting(conflicts=99)
    with pytest.raises(ServiceUnavailable):
        DynamoQuotas(QUOTAS, now=lambda: NOON, client=lambda: never).take(
            "u", [(COUNT, 1), (BYTES, 1)]
        )
    assert never.calls == 3
