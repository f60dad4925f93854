"""The users use cases, with in-memory ports: no AWS."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from chalicelib.users.service import UsersService
from tests.unit.fakes import Faults, InMemoryIdentities, InMemoryUserRepository

PASSWORD = "Corr3ct-Horse!"
ADA = {"email": "ada@example.com", "name": "Ada", "password": PASSWORD}
ADMIN = Principal("admin-id", frozenset({"admins"}))


@dataclass
class World:
    service: UsersService
    repo: InMemoryUserRepository
    identities: InMemoryIdentities
    faults: Faults

    def register(self, **fields: str) -> dict:
        return self.service.register({**ADA, **fields})

    def consistent(self) -> bool:
        """Every profile has its identity and every identity its profile; no stray claims."""
        profiles = {u["user_id"] for u in self.repo.users.values()}
        claims_ok = all(c["status"] == "active" for c in self.repo.claims.values())
        return profiles == set(self.identities.by_id) and claims_ok


@pytest.fixture
def world() -> World:
    ticks = itertools.count(1)
    faults = Faults()
    repo, identities = InMemoryUserRepository(faults), InMemoryIdentities(faults)
    service = UsersService(
        repo, identities, clock=lambda: f"2026-11-26T00:00:{next(ticks):02d}.000000Z"
    )
    return World(service, repo, identities, faults)


def me(user: dict) -> Principal:
    return Principal(user["user_id"], frozenset())


# --- register: a saga over Cognito and DynamoDB ---------------------------------------------


def test_register_creates_identity_and_profile(world: World) -> None:
    user = world.register()
    assert user["user_id"] in world.identities.by_id
    assert user["user_id"] in world.repo.users
    assert "password" not in world.repo.users[user["user_id"]]
    assert world.consistent()


def test_register_refuses_an_email_in_any_case(world: World) -> None:
    world.register()
    with pytest.raises(Conflict):
        world.register(email="ADA@example.COM", name="Other")
    assert len(world.identities.by_id) == 1


def test_password_refused_by_cognito_is_400_and_leaves_nothing(world: World) -> None:
    with pytest.raises(ValidationFailed):
        world.register(password="refused-by-cognito")
    assert world.repo.claims == {} and world.identities.by_id == {}
    assert world.register()


@pytest.mark.parametrize("failing", ["create_identity", "add", "add_reply"])
def test_a_failing_step_undoes_the_others_and_a_retry_succeeds(world: World, failing: str) -> None:
    world.faults.failing.add(failing)
    with pytest.raises(ServiceUnavailable):
        world.register()
    assert world.repo.users == {} and world.identities.by_id == {} and world.repo.claims == {}
    assert world.register()["email"] == ADA["email"]
    assert world.consistent()


def test_a_failed_undo_leaves_an_identity_the_retry_replaces(world: World) -> None:
    world.faults.failing |= {"add_reply", "delete_identity"}
    with pytest.raises(ServiceUnavailable):
        world.register()
    assert world.identities.emails() == {ADA["email"]}  # the orphan
    assert world.repo.users == {}
    user = world.register()
    assert set(world.identities.by_id) == {user["user_id"]}
    assert world.consistent()


def test_an_undo_that_fails_stops_there_and_leaves_a_whole_account(world: World) -> None:
    world.faults.failing |= {"add_reply", "remove"}
    with pytest.raises(ServiceUnavailable):
        world.register()
    # The profile could not be removed, so its sign-in was kept: a whole account, not half.
    assert world.consistent() and world.identities.emails() == {ADA["email"]}


def test_an_identity_whose_profile_exists_is_never_replaced(world: World) -> None:
    """An email change frees the old address's claim before Cognito follows: registering
    that address meanwhile must not take the live user's sign-in."""
    ada = world.register()
    del world.repo.claims["ada@example.com"]  # the claim has moved, Cognito not yet
    with pytest.raises(Conflict):
        world.register(name="Mallory")
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    assert world.repo.claims == {}  # the attempt's reservation was released


def test_a_stale_reservation_can_be_taken_over(world: World) -> None:
    world.repo.reserve_email(ADA["email"])  # a registration that crashed half-way
    with pytest.raises(Conflict):
        world.register()
    world.repo.claims["ada@example.com"]["stale"] = True  # RESERVATION_TTL has passed
    assert world.register()


# --- who may do what ----------------------------------------------------------------------


def test_owner_and_admin_may_read_others_may_not(world: World) -> None:
    ada = world.register()
    bob = world.register(email="bob@example.com", name="Bob")
    assert world.service.get(me(ada), ada["user_id"]) == ada
    assert world.service.get(ADMIN, ada["user_id"]) == ada
    with pytest.raises(Forbidden):
        world.service.get(me(bob), ada["user_id"])
    with pytest.raises(Forbidden):
        world.service.get(me(bob), "00000000-0000-4000-8000-000000000999")
    with pytest.raises(NotFound):
        world.service.get(ADMIN, "00000000-0000-4000-8000-000000000999")


def test_only_admins_list(world: World) -> None:
    ada = world.register()
    with pytest.raises(Forbidden):
        world.service.list(me(ada), 10, None)
    assert [u["user_id"] for u in world.service.list(ADMIN, 10, None)["items"]] == [ada["user_id"]]


def test_list_pages_newest_first_until_the_end(world: World) -> None:
    created = [world.register(email=f"u{i}@example.com") for i in range(5)]
    seen, cursor = [], None
    while True:
        page = world.service.list(ADMIN, 2, cursor)
        seen += [u["user_id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [u["user_id"] for u in reversed(created)]


def test_get_unknown_or_malformed_id_is_not_found_for_admins(world: World) -> None:
    for user_id in ("00000000-0000-4000-8000-000000000099", "not-a-uuid", "x" * 3000):
        with pytest.raises(NotFound):
            world.service.get(ADMIN, user_id)


# --- update, delete -----------------------------------------------------------------------


def test_update_changes_fields(world: World) -> None:
    ada = world.register()
    updated = world.service.update(
        me(ada), ada["user_id"], {"name": "Ada L.", "phone": "+447700900123"}
    )
    assert updated["name"] == "Ada L." and updated["phone"] == "+447700900123"
    assert updated["updated_at"] > ada["updated_at"]
    assert world.repo.users[ada["user_id"]]["name"] == "Ada L."
    cleared = world.service.update(me(ada), ada["user_id"], {"phone": None})
    assert "phone" not in cleared
    assert world.repo.users[ada["user_id"]]["version"] == 3


def test_update_of_someone_else_is_forbidden(world: World) -> None:
    ada = world.register()
    bob = world.register(email="bob@example.com")
    with pytest.raises(Forbidden):
        world.service.update(me(bob), ada["user_id"], {"name": "Mallory"})
    assert world.service.update(ADMIN, ada["user_id"], {"name": "Fixed"})["name"] == "Fixed"


def test_update_without_real_change_writes_nothing(world: World) -> None:
    ada = world.register()
    assert world.service.update(me(ada), ada["user_id"], {"name": "Ada"}) == ada
    assert world.repo.users[ada["user_id"]]["version"] == 1


def test_email_change_moves_the_sign_in_too(world: World) -> None:
    ada = world.register()
    world.service.update(me(ada), ada["user_id"], {"email": "new@example.com"})
    assert world.identities.by_id[ada["user_id"]]["email"] == "new@example.com"
    assert world.register(email="ada@example.com")  # the old address is free


def test_update_to_a_taken_email_is_conflict(world: World) -> None:
    world.register()
    bob = world.register(email="bob@example.com")
    with pytest.raises(Conflict):
        world.service.update(me(bob), bob["user_id"], {"email": "Ada@Example.com"})


def test_update_is_undone_when_the_sign_in_cannot_follow(world: World) -> None:
    ada = world.register()
    world.faults.failing.add("change_email")
    with pytest.raises(ServiceUnavailable):
        world.service.update(me(ada), ada["user_id"], {"email": "new@example.com", "name": "N"})
    stored = world.repo.users[ada["user_id"]]
    assert (stored["email"], stored["name"]) == (ADA["email"], ADA["name"])
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    assert world.register(email="new@example.com")  # the new address was released again


def test_update_rejects_bad_input(world: World) -> None:
    ada = world.register()
    with pytest.raises(ValidationFailed):
        world.service.update(me(ada), ada["user_id"], {})


def test_delete_removes_identity_and_profile(world: World) -> None:
    ada = world.register()
    bob = world.register(email="bob@example.com")
    with pytest.raises(Forbidden):
        world.service.delete(me(bob), ada["user_id"])
    world.service.delete(me(ada), ada["user_id"])
    assert ada["user_id"] not in world.identities.by_id
    with pytest.raises(NotFound):
        world.service.get(ADMIN, ada["user_id"])
    with pytest.raises(NotFound):
        world.service.delete(ADMIN, ada["user_id"])
    assert world.register()
    assert world.consistent()


def test_an_update_racing_a_background_change_keeps_both(world: World) -> None:
    """The onboarding handlers change a new user in the background (preferences, set-up): a
    PUT that meets such a change is re-applied on what is now stored, not refused."""
    ada = world.register()
    world.repo.before_next_write[ada["user_id"]] = {"onboarded_at": "2026-11-26T00:00:30Z"}
    updated = world.service.update(me(ada), ada["user_id"], {"bio": "Analyst"})
    assert updated["bio"] == "Analyst" and updated["onboarded_at"] == "2026-11-26T00:00:30Z"
    stored = world.repo.users[ada["user_id"]]
    assert (stored["bio"], stored["onboarded_at"], stored["version"]) == (
        "Analyst",
        "2026-11-26T00:00:30Z",
        3,
    )


def test_a_delete_racing_a_background_change_still_deletes(world: World) -> None:
    ada = world.register()
    world.repo.before_next_write[ada["user_id"]] = {"onboarded_at": "2026-11-26T00:00:30Z"}
    world.service.delete(me(ada), ada["user_id"])
    assert world.repo.users == {} and world.identities.by_id == {}


def test_an_email_change_cognito_refuses_is_undone_even_after_a_background_change(
    world: World,
) -> None:
    ada = world.register()
    world.faults.failing.add("change_email")
    # Between the update's write and its undo, the onboarding handler marks the user set up.
    world.repo.before_next_write[ada["user_id"]] = {}
    original_replace = world.repo.replace

    def replace_then_onboard(current: dict, new: dict) -> None:
        original_replace(current, new)
        world.repo.before_next_write[ada["user_id"]] = {"onboarded_at": "2026-11-26T00:00:30Z"}
        world.repo.replace = original_replace  # type: ignore[method-assign]

    world.repo.replace = replace_then_onboard  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        world.service.update(me(ada), ada["user_id"], {"email": "new@example.com"})
    stored = world.repo.users[ada["user_id"]]
    assert stored["email"] == ADA["email"]  # back, so profile and sign-in agree
    assert stored["onboarded_at"] == "2026-11-26T00:00:30Z"  # and the background change kept
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    assert world.register(email="new@example.com")  # the new address was released
