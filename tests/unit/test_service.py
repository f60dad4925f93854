"""The users use cases, with in-memory ports: no AWS."""

from __future__ import annotations

import itertools

import pytest

from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from chalicelib.users.service import UsersService
from tests.unit.fakes import InMemoryUserRepository, RecordingPublisher

ADA = {"email": "ada@example.com", "name": "Ada"}


def make_service(
    fail_on: str | None = None,
) -> tuple[UsersService, InMemoryUserRepository, RecordingPublisher]:
    ticks = itertools.count(1)
    ids = itertools.count(1)
    repo, publisher = InMemoryUserRepository(), RecordingPublisher(fail_on)
    service = UsersService(
        repo,
        publisher,
        clock=lambda: f"2026-11-26T00:00:{next(ticks):02d}.000000Z",
        new_id=lambda: f"00000000-0000-4000-8000-{next(ids):012d}",
    )
    return service, repo, publisher


def test_register_stores_and_announces_the_user() -> None:
    service, repo, publisher = make_service()
    user = service.register(dict(ADA))
    assert user["user_id"] in repo.users
    assert user["created_at"] == user["updated_at"]
    assert "version" not in user
    assert [name for name, _ in publisher.sent] == ["user_created", "onboarding_requested"]


def test_register_refuses_an_email_in_any_case() -> None:
    service, repo, _ = make_service()
    service.register(dict(ADA))
    with pytest.raises(Conflict):
        service.register({"email": "ADA@example.COM", "name": "Other"})
    assert len(repo.users) == 1


@pytest.mark.parametrize("failing", ["user_created", "onboarding_requested"])
def test_register_is_undone_when_events_cannot_be_sent(failing: str) -> None:
    service, repo, publisher = make_service(fail_on=failing)
    with pytest.raises(ServiceUnavailable):
        service.register(dict(ADA))
    assert repo.users == {}
    publisher.fail_on = None
    assert service.register(dict(ADA))["email"] == ADA["email"]  # the retry succeeds


def test_get_unknown_or_malformed_id_is_not_found() -> None:
    service, _, _ = make_service()
    for user_id in ("00000000-0000-4000-8000-000000000099", "not-a-uuid", "x" * 3000):
        with pytest.raises(NotFound):
            service.get(user_id)


def test_list_pages_newest_first_until_the_end() -> None:
    service, _, _ = make_service()
    created = [service.register({"email": f"u{i}@example.com", "name": f"U{i}"}) for i in range(5)]
    seen, cursor = [], None
    while True:
        page = service.list(2, cursor)
        seen += [u["user_id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [u["user_id"] for u in reversed(created)]


def test_update_changes_fields_and_announces_them() -> None:
    service, repo, publisher = make_service()
    user = service.register(dict(ADA))
    updated = service.update(user["user_id"], {"name": "Ada L.", "phone": "+447700900123"})
    assert updated["name"] == "Ada L." and updated["phone"] == "+447700900123"
    assert updated["updated_at"] > user["updated_at"]
    assert publisher.sent[-1][0] == "user_updated"
    assert publisher.sent[-1][1]["changed_fields"] == ["name", "phone"]
    cleared = service.update(user["user_id"], {"phone": None})
    assert "phone" not in cleared
    assert repo.users[user["user_id"]]["version"] == 3


def test_update_without_real_change_writes_nothing() -> None:
    service, repo, publisher = make_service()
    user = service.register(dict(ADA))
    assert service.update(user["user_id"], {"name": "Ada"}) == user
    assert repo.users[user["user_id"]]["version"] == 1
    assert len(publisher.sent) == 2


def test_update_to_a_taken_email_is_conflict() -> None:
    service, _, _ = make_service()
    service.register(dict(ADA))
    bob = service.register({"email": "bob@example.com", "name": "Bob"})
    with pytest.raises(Conflict):
        service.update(bob["user_id"], {"email": "Ada@Example.com"})


def test_update_is_undone_when_the_event_cannot_be_sent() -> None:
    service, repo, publisher = make_service()
    user = service.register(dict(ADA))
    publisher.fail_on = "user_updated"
    with pytest.raises(ServiceUnavailable):
        service.update(user["user_id"], {"email": "new@example.com", "name": "New"})
    stored = repo.users[user["user_id"]]
    assert (stored["email"], stored["name"]) == (ADA["email"], ADA["name"])
    # the new address was released again
    assert service.register({"email": "new@example.com", "name": "N"})


def test_update_rejects_bad_input_before_reading() -> None:
    service, _, _ = make_service()
    with pytest.raises(ValidationFailed):
        service.update("00000000-0000-4000-8000-000000000001", {})


def test_delete_then_get_is_not_found_and_email_is_free() -> None:
    service, _, _ = make_service()
    user = service.register(dict(ADA))
    service.delete(user["user_id"])
    with pytest.raises(NotFound):
        service.get(user["user_id"])
    with pytest.raises(NotFound):
        service.delete(user["user_id"])
    assert service.register(dict(ADA))
