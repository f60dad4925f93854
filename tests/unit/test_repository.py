"""The DynamoDB adapter against moto, provisioned from infra/resources.json."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import boto3
import pytest

from chalicelib.core import aws as aws_clients
from chalicelib.core import clock
from chalicelib.users.repository import (
    RESERVATION_TTL,
    DynamoUserRepository,
    EmailTaken,
    StaleUser,
)

TABLE = "serverless-app-dev-users"


def user(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": f"00000000-0000-4000-8000-{n:012d}",
        "email": f"user{n}@example.com",
        "name": f"User {n}",
        "preferences": {"newsletter": n % 2 == 0},
        "created_at": f"2026-11-26T00:{n // 60:02d}:{n % 60:02d}.000000Z",
        "updated_at": f"2026-11-26T00:{n // 60:02d}:{n % 60:02d}.000000Z",
        "version": 1,
        **extra,
    }


class Repo(DynamoUserRepository):
    """The adapter, with `add` doing its reservation first as registration does."""

    def add(self, user: dict[str, Any], reservation: str | None = None) -> None:  # type: ignore[override]
        super().add(user, reservation or self.reserve_email(user["email"]))


@pytest.fixture
def repo(aws: dict[str, str]) -> Repo:
    return Repo(TABLE)


@pytest.fixture
def calls(repo: Repo) -> Counter[str]:
    counter: Counter[str] = Counter()
    aws_clients.client("dynamodb").meta.events.register(
        "before-call.dynamodb", lambda model, **_: counter.update([model.name])
    )
    return counter


def test_add_and_get_round_trip(repo: Repo, calls: Counter[str]) -> None:
    repo.add(user(1, phone="+14155550123"))
    calls.clear()
    stored = repo.get(user(1)["user_id"])
    assert calls == Counter({"GetItem": 1})
    assert stored is not None
    assert stored["version"] == 1 and isinstance(stored["version"], int)
    assert stored["preferences"] == {"newsletter": False}
    assert stored["phone"] == "+14155550123"
    assert repo.get("00000000-0000-4000-8000-000000000404") is None


def test_email_is_unique_without_case(repo: Repo) -> None:
    repo.add(user(1))
    with pytest.raises(EmailTaken):
        repo.add(user(2, email="USER1@Example.com"))
    assert repo.get(user(2)["user_id"]) is None


def test_a_reservation_holds_the_email_until_released(repo: Repo) -> None:
    reservation = repo.reserve_email("held@example.com")
    with pytest.raises(EmailTaken):
        repo.reserve_email("HELD@example.com")
    repo.release_email("held@example.com", "someone-else")  # not theirs: no effect
    with pytest.raises(EmailTaken):
        repo.reserve_email("held@example.com")
    repo.release_email("held@example.com", reservation)
    assert repo.reserve_email("held@example.com")


def test_a_stale_reservation_is_taken_over_but_not_a_fresh_one(repo: Repo) -> None:
    first = repo.reserve_email("crashed@example.com")
    old = (clock.now() - RESERVATION_TTL - timedelta(seconds=1)).isoformat()
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"pk": {"S": "EMAIL#crashed@example.com"}},
        UpdateExpression="SET reserved_at = :old",
        ExpressionAttributeValues={":old": {"S": old}},
    )
    second = repo.reserve_email("crashed@example.com")
    with pytest.raises(StaleUser):  # the crashed attempt can no longer complete
        repo.add(user(1, email="crashed@example.com"), first)
    repo.add(user(2, email="crashed@example.com"), second)
    assert repo.get(user(2)["user_id"])["email"] == "crashed@example.com"


def test_an_active_claim_is_never_taken_over(repo: Repo) -> None:
    repo.add(user(1))
    old = (clock.now() - timedelta(days=1)).isoformat()
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"pk": {"S": "EMAIL#user1@example.com"}},
        UpdateExpression="SET reserved_at = :old",
        ExpressionAttributeValues={":old": {"S": old}},
    )
    with pytest.raises(EmailTaken):
        repo.reserve_email("user1@example.com")


@pytest.mark.parametrize(("count", "limit"), [(25, 10), (20, 10), (3, 100), (0, 5)])
def test_list_pages_cost_one_query_each(
    repo: Repo, calls: Counter[str], count: int, limit: int
) -> None:
    for n in range(count):
        repo.add(user(n))
    calls.clear()
    pages, after = [], None
    while True:
        items, after = repo.list_page(limit, after)
        pages.append([u["user_id"] for u in items])
        if after is None:
            break
    expected_pages = max(1, -(-count // limit))
    assert calls == Counter({"Query": expected_pages})
    flat = [uid for page in pages for uid in page]
    assert flat == [user(n)["user_id"] for n in reversed(range(count))]
    assert all(len(page) == limit for page in pages[:-1])


def test_replace_checks_version_and_moves_the_email_claim(repo: Repo) -> None:
    original = user(1)
    repo.add(original)
    moved = {**original, "email": "new@example.com", "version": 2}
    repo.replace(original, moved)
    with pytest.raises(StaleUser):
        repo.replace(original, {**original, "name": "late writer", "version": 2})
    repo.add(user(2, email="user1@example.com"))  # the old address is free again
    with pytest.raises(EmailTaken):
        repo.add(user(3, email="NEW@example.com"))
    assert repo.get(original["user_id"])["email"] == "new@example.com"


def test_replace_to_a_taken_email_changes_nothing(repo: Repo) -> None:
    repo.add(user(1))
    repo.add(user(2))
    with pytest.raises(EmailTaken):
        repo.replace(user(2), {**user(2), "email": "user1@example.com", "version": 2})
    assert repo.get(user(2)["user_id"])["version"] == 1


def test_remove_releases_the_email_and_checks_version(repo: Repo) -> None:
    repo.add(user(1))
    with pytest.raises(StaleUser):
        repo.remove({**user(1), "version": 7})
    repo.remove(user(1))
    assert repo.get(user(1)["user_id"]) is None
    repo.add(user(2, email="user1@example.com"))


def test_background_writes_give_up_after_a_bounded_number_of_lost_races(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that always loses its race raises (the event is delivered again later)
    instead of spinning for the rest of the function's time."""
    repo = Repo(TABLE)
    repo.add(user(1))
    tries: list[int] = []
    monkeypatch.setattr(repo, "_update_if_unchanged", lambda *_: tries.append(1) or False)
    with pytest.raises(StaleUser):
        repo.mark_onboarded(user(1)["user_id"], "2026-11-26T01:00:00.000000Z")
    with pytest.raises(StaleUser):
        repo.add_missing_preferences(user(1)["user_id"], {"x": True}, "2026-11-26T01:00:00Z")
    assert len(tries) == 10


def test_a_reservation_whose_answer_was_lost_is_the_callers_own(repo: Repo) -> None:
    """The PutItem is applied but its answer lost (a read timeout), and botocore's retry
    meets the reservation it made itself: that is this caller's, not someone else's."""
    dynamodb = aws_clients.client("dynamodb")
    original = dynamodb.put_item

    def applied_then_retried(**call: Any) -> Any:
        original(**call)  # the attempt whose answer never came
        return original(**call)  # botocore's retry of the same request

    dynamodb.put_item = applied_then_retried  # type: ignore[method-assign]
    try:
        reservation = repo.reserve_email("lost@example.com")
    finally:
        del dynamodb.put_item
    with pytest.raises(EmailTaken):  # held, for this caller only
        repo.reserve_email("lost@example.com")
    repo.add(user(3, email="lost@example.com"), reservation)
    assert repo.get(user(3)["user_id"]) is not None
