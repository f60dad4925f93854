"""The nightly sweep of abandoned sign-ups, with in-memory ports: a sign-up nobody confirmed
loses its disabled identity and its record once its code is long dead; a young one, one whose
code still works, and a disabled account with a profile are left alone; it pages, and stops on
its time and page bounds."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.core.quotas import InMemoryQuotas
from chalicelib.users import verification
from chalicelib.users.pending import signup_key
from chalicelib.users.registration import RegistrationLimits, RegistrationService
from chalicelib.users.signup_sweep import (
    MARGIN,
    SAFETY_MARGIN_MS,
    SignupSweep,
    SignupSweepIncomplete,
)
from tests.unit.fakes import (
    Faults,
    InMemoryIdentities,
    InMemoryPendingRecords,
    InMemoryUserRepository,
    RecordingMailer,
)

PASSWORD = "Corr3ct-Horse!"
CLIENT = "192.0.2.7"
#: Past the code's life and the margin: every sign-up made before is abandoned.
LONG_AFTER = verification.CODE_LIFETIME + MARGIN + timedelta(minutes=1)


@dataclass
class World:
    repo: InMemoryUserRepository
    identities: InMemoryIdentities
    pending: InMemoryPendingRecords
    mailer: RecordingMailer
    registration: RegistrationService
    faults: Faults

    def sweep(self, **bounds: int) -> SignupSweep:
        return SignupSweep(self.identities, self.pending, self.repo, **bounds)

    def sign_up(self, email: str, name: str = "Someone") -> str:
        """Step one only (the code is mailed, never sent back); the identity's id."""
        body = {"email": email, "name": name, "password": PASSWORD}
        self.registration.register(body, CLIENT)
        user_id = self.identities.find(email)
        assert user_id is not None
        return user_id

    def confirm(self, email: str) -> dict[str, Any]:
        code = self.mailer.code(email)
        return self.registration.confirm({"email": email, "code": code}, CLIENT)


@pytest.fixture
def world(app_clock: Any) -> Iterator[World]:
    faults = Faults()
    repo, identities = InMemoryUserRepository(faults), InMemoryIdentities(faults)
    pending, mailer = InMemoryPendingRecords(), RecordingMailer(faults)
    limits = RegistrationLimits(1000, 1000, 1000)
    registration = RegistrationService(repo, pending, identities, mailer, InMemoryQuotas(), limits)
    yield World(repo, identities, pending, mailer, registration, faults)


def later(delta: timedelta = LONG_AFTER) -> datetime:
    return clock.now() + delta


def test_a_victims_address_typed_by_someone_else_does_not_stay(world: World) -> None:
    """The attack: Mallory registers Ada's address under a name of his choosing and never
    confirms (he cannot). Before the sweep the disabled identity kept both for ever."""
    mallory_made = world.sign_up("ada@example.com", name="Mallory was here")
    assert world.identities.by_id[mallory_made]["enabled"] is False
    report = world.sweep().run(later())
    assert (report.deleted, report.signups_deleted, report.examined) == (1, 1, 1)
    assert world.identities.by_id == {} and world.pending.records == {}
    assert not world.identities.find("ada@example.com")
    # Ada can still register her own address and use it.
    world.sign_up("ada@example.com", name="Ada")
    assert world.confirm("ada@example.com")["name"] == "Ada"


def test_a_sign_up_younger_than_its_code_and_the_margin_is_kept(world: World) -> None:
    user_id = world.sign_up("young@example.com")
    just_before = verification.CODE_LIFETIME + MARGIN - timedelta(minutes=1)
    report = world.sweep().run(later(just_before))
    assert (report.examined, report.deleted) == (0, 0)
    assert user_id in world.identities.by_id and world.pending.records
    assert world.sweep().run(later()).deleted == 1  # and once old enough, it goes


def test_a_sign_up_whose_code_still_works_is_kept(world: World) -> None:
    """However old the identity looks, a usable code that names it may still be confirmed."""
    user_id = world.sign_up("slow@example.com")
    world.identities.created_at[user_id] -= timedelta(days=1)
    report = world.sweep().run(later(timedelta(minutes=30)))
    assert (report.examined, report.awaiting_code, report.deleted) == (1, 1, 0)
    assert user_id in world.identities.by_id
    assert world.confirm("slow@example.com")["user_id"] == user_id


def test_a_code_used_up_by_wrong_guesses_is_not_usable(world: World) -> None:
    user_id = world.sign_up("guessed@example.com")
    world.identities.created_at[user_id] -= timedelta(days=1)
    world.pending.records[signup_key("guessed@example.com")]["attempts"] = verification.MAX_ATTEMPTS
    report = world.sweep().run(later(timedelta(minutes=30)))
    assert (report.deleted, report.signups_deleted) == (1, 1)


def test_a_disabled_identity_with_a_profile_is_never_deleted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.observability import logger

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    user = world.sign_up("ada@example.com") and world.confirm("ada@example.com")
    world.identities.deactivate(user["user_id"])  # what an undo leaves
    report = world.sweep().run(later())
    assert (report.examined, report.with_profile, report.deleted) == (1, 1, 0)
    assert user["user_id"] in world.identities.by_id
    warnings = [json.loads(line) for line in log.getvalue().splitlines()]
    assert any(w["level"] == "WARNING" and w.get("user_id") == user["user_id"] for w in warnings)


def test_confirmed_accounts_are_not_even_looked_at(world: World) -> None:
    world.sign_up("ada@example.com")
    world.confirm("ada@example.com")
    report = world.sweep().run(later())
    assert (report.examined, report.deleted) == (0, 0) and len(world.identities.by_id) == 1


def test_a_newer_sign_up_of_the_address_keeps_its_record(world: World) -> None:
    """An old identity left behind while the address's record names a newer one: only the
    old identity goes."""
    old = world.sign_up("twice@example.com")
    old_record = world.pending.get(signup_key("twice@example.com"))
    world.identities.by_id[old]["email"] = "Twice@Example.com"  # still the same address
    world.pending.records.clear()
    world.identities.created_at[old] -= timedelta(days=1)
    newer = world.identities.create("other@example.com", "N", PASSWORD, enabled=False)
    world.pending.put(signup_key("twice@example.com"), {**(old_record or {}), "user_id": newer})
    report = world.sweep().run(later(timedelta(minutes=1)))
    assert (report.deleted, report.signups_deleted) == (1, 0)
    assert old not in world.identities.by_id and newer in world.identities.by_id
    assert world.pending.get(signup_key("twice@example.com"))["user_id"] == newer  # type: ignore[index]


def test_a_record_replaced_meanwhile_is_not_deleted(world: World) -> None:
    """Between the sweep's read and its delete the address registers again: the newer code's
    record stays (the delete is conditional on the code it read)."""
    world.sign_up("race@example.com")
    key = signup_key("race@example.com")
    pending, sweep = world.pending, world.sweep()
    original_get = pending.get

    def get_then_replaced(k: str) -> dict[str, Any] | None:
        found = original_get(k)
        pending.records[k] = {**pending.records[k], "code_digest": "a newer code's digest"}
        return found

    pending.get = get_then_replaced  # type: ignore[method-assign]
    report = sweep.run(later())
    assert (report.deleted, report.signups_deleted) == (1, 1)  # asked, refused by condition
    assert pending.records[key]["code_digest"] == "a newer code's digest"


def test_an_undone_confirmation_is_swept_once_its_code_is_dead(world: World) -> None:
    world.sign_up("undone@example.com")
    world.faults.failing.add("add")  # storing the profile fails: the saga undoes itself
    with pytest.raises(Exception, match="retry"):
        world.confirm("undone@example.com")
    assert world.repo.users == {} and len(world.identities.by_id) == 1
    assert world.sweep().run(later()).deleted == 1
    assert world.identities.by_id == {} and world.pending.records == {}


def test_it_pages_through_every_disabled_identity(world: World) -> None:
    old = [world.sign_up(f"old{i}@example.com") for i in range(5)]
    world.sign_up("enabled@example.com")
    world.confirm("enabled@example.com")
    report = world.sweep(page_size=2).run(later())
    assert (report.pages, report.examined, report.deleted) == (3, 5, 5)
    assert not any(user_id in world.identities.by_id for user_id in old)
    assert [limit for limit, _ in world.identities.listed] == [2, 2, 2]
    assert world.identities.listed[0][1] is None and world.identities.listed[1][1] is not None


def test_a_page_with_only_young_identities_does_not_end_the_run(world: World) -> None:
    young = [world.sign_up(f"young{i}@example.com") for i in range(2)]
    old = world.sign_up("old@example.com")
    for user_id in young:
        world.identities.created_at[user_id] += timedelta(hours=5)
    report = world.sweep(page_size=2).run(later())
    assert (report.pages, report.deleted) == (2, 1)
    assert old not in world.identities.by_id and all(y in world.identities.by_id for y in young)


def test_it_stops_before_its_time_runs_out_and_the_next_night_goes_on(world: World) -> None:
    for i in range(4):
        world.sign_up(f"s{i}@example.com")
    left = iter([60_000, 59_000, 40_000, SAFETY_MARGIN_MS - 1])  # checks, then out of time

    report = world.sweep(page_size=10).run(later(), lambda: next(left))
    assert report.out_of_time and (report.examined, report.deleted) == (2, 2)
    assert len(world.identities.by_id) == 2
    tomorrow = world.sweep(page_size=10).run(later() + timedelta(days=1), lambda: 300_000)
    assert not tomorrow.out_of_time and tomorrow.deleted == 2
    assert world.identities.by_id == {}


def test_with_no_time_left_it_lists_nothing(world: World) -> None:
    world.sign_up("a@example.com")
    report = world.sweep().run(later(), lambda: SAFETY_MARGIN_MS - 1)
    assert report.out_of_time and report.pages == 0 and world.identities.listed == []


def test_it_reads_at_most_its_page_bound(world: World) -> None:
    for i in range(3):
        world.sign_up(f"p{i}@example.com")
    report = world.sweep(page_size=1, max_pages=2).run(later())
    assert report.page_bound and (report.pages, report.deleted) == (2, 2)
    assert world.sweep(page_size=1, max_pages=2).run(later()).deleted == 1


def test_a_failure_is_reported_after_the_others_are_swept_and_a_rerun_finishes(
    world: World,
) -> None:
    for i in range(3):
        world.sign_up(f"f{i}@example.com")
    world.faults.failing.add("delete_identity")  # one call fails
    with pytest.raises(SignupSweepIncomplete, match="1 abandoned"):
        world.sweep().run(later())
    assert len(world.identities.by_id) == 1
    assert world.sweep().run(later()).deleted == 1  # the retried run (same instant)
    assert world.identities.by_id == {} and world.pending.records == {}


def test_a_listing_that_fails_fails_the_run(world: World) -> None:
    world.sign_up("l@example.com")
    world.faults.failing.add("list_identities")
    with pytest.raises(SignupSweepIncomplete):
        world.sweep().run(later())
    assert len(world.identities.by_id) == 1


def test_a_second_run_finds_nothing_to_do(world: World) -> None:
    world.sign_up("once@example.com")
    assert world.sweep().run(later()).deleted == 1
    again = world.sweep().run(later())
    assert (again.examined, again.deleted, again.signups_deleted) == (0, 0, 0)
