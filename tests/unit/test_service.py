"""The users use cases, with in-memory ports: no AWS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from chalicelib.core.quotas import InMemoryQuotas, QuotaExceeded
from chalicelib.users import verification
from chalicelib.users.registration import RegistrationLimits, RegistrationService
from chalicelib.users.service import UsersService
from tests.unit.fakes import (
    Faults,
    InMemoryIdentities,
    InMemoryPendingRecords,
    InMemoryUserRepository,
    RecordingMailer,
)

PASSWORD = "Corr3ct-Horse!"
ADA = {"email": "ada@example.com", "name": "Ada"}
ADMIN = Principal("admin-id", frozenset({"admins"}))


@dataclass
class World:
    service: UsersService
    registration: RegistrationService
    repo: InMemoryUserRepository
    identities: InMemoryIdentities
    pending: InMemoryPendingRecords
    mailer: RecordingMailer
    quotas: InMemoryQuotas
    faults: Faults
    clock: TickingClock

    def ask(self, **fields: str) -> dict:
        """Step one of a registration: the code is mailed (to `mailer`)."""
        return self.registration.register({**ADA, **fields}, CLIENT)

    def confirm(
        self, email: str = ADA["email"], code: str | None = None, password: str = PASSWORD
    ) -> dict:
        code = code if code is not None else self.mailer.code(email)
        body = {"email": email, "code": code, "password": password}
        return self.registration.confirm(body, CLIENT)

    def register(self, **fields: str) -> dict:
        """Both steps: a usable account."""
        self.ask(**fields)
        return self.confirm(fields.get("email", ADA["email"]))

    def consistent(self) -> bool:
        """Every profile has its identity and every identity its profile; no stray claims."""
        profiles = {u["user_id"] for u in self.repo.users.values()}
        claims_ok = all(c["status"] == "active" for c in self.repo.claims.values())
        return profiles == set(self.identities.by_id) and claims_ok


class TickingClock:
    """A clock a second further on each read, that tests can also move."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 11, 26, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment

    def stamp(self) -> str:
        return clock.timestamp(self())


CLIENT = "192.0.2.1"
LIMITS = RegistrationLimits(per_client_hour=50, confirmations_per_client_hour=100)


@pytest.fixture
def world() -> Iterator[World]:
    faults, ticking = Faults(), TickingClock()
    repo, identities = InMemoryUserRepository(faults), InMemoryIdentities(faults)
    pending, mailer = InMemoryPendingRecords(), RecordingMailer(faults)
    quotas = InMemoryQuotas(now=lambda: ticking.moment)
    registration = RegistrationService(
        repo, pending, identities, mailer, quotas, LIMITS, now=ticking
    )
    service = UsersService(repo, identities, pending, mailer, quotas, LIMITS, ticking.stamp)
    with clock.use(lambda: ticking.moment):
        yield World(
            service, registration, repo, identities, pending, mailer, quotas, faults, ticking
        )


def me(user: dict) -> Principal:
    return Principal(user["user_id"], frozenset())


# --- register: a code mailed, then the account made --------------------------------------


def test_register_mails_a_code_and_nothing_exists_before_it(world: World) -> None:
    answer = world.ask()
    assert answer["status"] == "verification_pending" and "user_id" not in answer
    assert world.identities.by_id == {}  # no sign-in, no password, before the proof
    assert world.repo.users == {} and world.repo.claims == {}  # no profile, no events
    record = next(iter(world.pending.records.values()))
    assert world.mailer.code(ADA["email"]) not in str(record)
    user = world.confirm()
    assert world.identities.passwords[user["user_id"]] == PASSWORD
    assert world.repo.users[user["user_id"]]["email"] == ADA["email"]
    assert "password" not in world.repo.users[user["user_id"]]
    assert world.pending.records == {}  # a code works once
    assert world.consistent()


def test_whoever_asks_first_cannot_set_the_credentials(world: World) -> None:
    """Attack: registering a victim's address first (with one's own password, before they
    do), so that the account they later confirm is one the attacker can sign in to."""
    world.ask(name="Ada")  # the victim
    world.registration.register({**ADA, "name": "Mallory"}, "198.51.100.66")  # the attacker
    user = world.confirm(password="Victim-0wn-pass!")  # the victim reads the newest code
    assert world.identities.passwords[user["user_id"]] == "Victim-0wn-pass!"
    assert world.consistent()


def test_register_answers_the_same_for_a_taken_address_and_mails_its_owner(
    world: World,
) -> None:
    """Attack: registering an address to learn whether it has an account (a 409 told)."""
    world.register()
    fresh = world.ask(email="bob@example.com")
    taken = world.ask(email="ADA@example.COM", name="Mallory")
    assert {k: v for k, v in taken.items() if k != "email"} == {
        k: v for k, v in fresh.items() if k != "email"
    }
    assert world.mailer.sent[-1] == ("ADA@example.COM", "already-registered")
    assert len(world.identities.by_id) == 1  # Ada's: nothing for Bob yet, nothing for Mallory
    with pytest.raises(ValidationFailed):
        world.confirm("ADA@example.COM", "000000")


def test_a_password_cognito_refuses_is_400_and_the_code_still_works(world: World) -> None:
    world.ask()
    with pytest.raises(ValidationFailed, match="password was refused"):
        world.confirm(password="Refused-by-C0gnito!")
    assert world.repo.claims == {} and world.identities.by_id == {}
    assert world.confirm()["email"] == ADA["email"]


def test_each_try_uses_up_an_attempt_before_the_code_is_compared(world: World) -> None:
    """Attack: guessing the code of an address one does not read (in parallel too: the
    attempt is counted in one conditional write before any comparison)."""
    world.ask()
    right = world.mailer.code(ADA["email"])
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for _ in range(verification.MAX_ATTEMPTS):
        with pytest.raises(ValidationFailed, match="wrong or has expired"):
            world.confirm(code=wrong)
    with pytest.raises(ValidationFailed, match="wrong or has expired"):
        world.confirm(code=right)
    assert world.repo.users == {}
    world.ask()  # a new code, a new count
    assert world.confirm()["email"] == ADA["email"]


def test_a_code_expires_and_a_new_one_voids_the_old(world: World) -> None:
    world.ask()
    first = world.mailer.code(ADA["email"])
    world.ask()
    with pytest.raises(ValidationFailed):
        world.confirm(code=first)
    world.clock.moment += verification.CODE_LIFETIME
    with pytest.raises(ValidationFailed):
        world.confirm()
    assert world.repo.users == {}


def test_confirming_an_address_never_asked_for_is_refused_alike(world: World) -> None:
    with pytest.raises(ValidationFailed, match="wrong or has expired"):
        world.confirm("nobody@example.com", "123456")
    with pytest.raises(ValidationFailed) as refused:
        world.registration.confirm({"email": "x", "code": "12ab", "extra": 1}, CLIENT)
    assert {d["field"] for d in refused.value.details} == {"email", "code", "extra", "password"}


def test_a_failing_first_step_is_503_and_a_retry_succeeds(world: World) -> None:
    world.faults.failing.add("send_code")
    with pytest.raises(ServiceUnavailable):
        world.ask()
    assert world.register()["email"] == ADA["email"]
    assert world.consistent()


@pytest.mark.parametrize(
    "failing", ["create_identity", "create_identity_reply", "add", "add_reply"]
)
def test_a_failing_confirmation_undoes_it_and_the_same_code_works_again(
    world: World, failing: str
) -> None:
    world.ask()
    world.faults.failing.add(failing)
    with pytest.raises(ServiceUnavailable):
        world.confirm()
    assert world.repo.users == {} and world.repo.claims == {}
    # An identity whose creation answered with a failure may be left: the retry replaces it.
    assert world.identities.by_id == {} or failing == "create_identity_reply"
    assert world.confirm()["email"] == ADA["email"]
    assert world.consistent()


def test_an_undo_that_fails_stops_there_and_leaves_a_whole_account(world: World) -> None:
    world.ask()
    world.faults.failing |= {"add_reply", "remove"}
    with pytest.raises(ServiceUnavailable):
        world.confirm()
    # The profile could not be removed, so its sign-in was kept: a whole account, not half.
    assert world.consistent() and world.identities.emails() == {ADA["email"]}


def test_an_identity_whose_profile_exists_is_never_replaced(world: World) -> None:
    """An email change frees the old address's claim before Cognito follows: registering
    that address meanwhile must not take the live user's sign-in."""
    ada = world.register()
    del world.repo.claims["ada@example.com"]  # the claim has moved, Cognito not yet
    world.ask(name="Mallory")
    with pytest.raises(Conflict):
        world.confirm(password="Mall0ry-pass!")
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    assert world.identities.passwords[ada["user_id"]] == PASSWORD
    assert world.repo.claims == {}  # the attempt's reservation was released


def test_a_reservation_in_progress_is_a_conflict_until_stale(world: World) -> None:
    world.ask()
    world.repo.reserve_email(ADA["email"])  # a confirmation that crashed half-way
    with pytest.raises(Conflict):
        world.confirm()
    world.repo.claims["ada@example.com"]["stale"] = True  # RESERVATION_TTL has passed
    assert world.confirm()


def test_a_registration_flood_from_one_client_is_429_after_its_limit(world: World) -> None:
    """Attack: a script registering address after address (each mails a stranger)."""
    for n in range(LIMITS.per_client_hour):
        world.ask(email=f"victim{n}@example.com")
    with pytest.raises(QuotaExceeded) as refused:
        world.ask(email="one-more@example.com")
    assert refused.value.status_code == 429 and refused.value.retry_after_seconds <= 3600
    assert ("one-more@example.com", "registration") not in world.mailer.sent
    world.registration.register({**ADA, "email": "other@example.com"}, "198.51.100.7")
    world.clock.moment += timedelta(hours=1)
    assert world.ask(email="next-hour@example.com")


def test_one_address_gets_a_bounded_number_of_mails_and_the_answer_never_changes(
    world: World,
) -> None:
    """Attack: mail-bombing one inbox through the public registration."""
    answers = [world.ask() for _ in range(LIMITS.mails_per_address_day + 3)]
    assert len({str(a) for a in answers}) == 1
    assert len(world.mailer.sent) == LIMITS.mails_per_address_day


def test_attempts_that_failed_before_mailing_do_not_use_up_the_address_bound(
    world: World,
) -> None:
    """A client told 503 retries: the failed tries sent nothing, so they must not count
    against the address's mails, or its retries end in a 202 with no code."""
    for _ in range(LIMITS.mails_per_address_day + 2):
        world.faults.failing.add("email_owner")
        with pytest.raises(ServiceUnavailable):
            world.ask()
    world.ask()
    assert len(world.mailer.sent) == 1


def test_a_failure_while_mailing_keeps_its_use_of_the_bound(world: World) -> None:
    """The mail may have gone before the failure was heard: its use stays counted."""
    for _ in range(LIMITS.mails_per_address_day):
        world.faults.failing.add("send_code")
        with pytest.raises(ServiceUnavailable):
            world.ask()
    world.ask()
    assert world.mailer.sent == []


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


def test_email_change_waits_for_the_code_mailed_to_the_new_address(world: World) -> None:
    """Attack: moving one's account onto an address one does not read (it was marked
    verified with no proof)."""
    ada = world.register()
    answer = world.service.update(
        me(ada), ada["user_id"], {"email": "new@example.com", "name": "Ada L."}
    )
    assert answer["email"] == ADA["email"] and answer["pending_email"] == "new@example.com"
    assert answer["name"] == "Ada L."  # the other fields apply at once
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    code = world.mailer.code("new@example.com", "email-change")
    with pytest.raises(ValidationFailed, match="wrong or has expired"):
        world.service.confirm_email(me(ada), ada["user_id"], {"code": "000000"})
    changed = world.service.confirm_email(me(ada), ada["user_id"], {"code": code})
    assert changed["email"] == "new@example.com" and "pending_email" not in changed
    assert world.identities.by_id[ada["user_id"]]["email"] == "new@example.com"
    with pytest.raises(ValidationFailed):  # the code worked once
        world.service.confirm_email(me(ada), ada["user_id"], {"code": code})
    assert world.register(email="ada@example.com")  # the old address is free


def test_a_change_of_case_only_applies_at_once(world: World) -> None:
    ada = world.register()
    updated = world.service.update(me(ada), ada["user_id"], {"email": "Ada@Example.com"})
    assert updated["email"] == "Ada@Example.com" and "pending_email" not in updated
    assert world.pending.records == {}


def test_nobody_confirms_someone_elses_email_change(world: World) -> None:
    ada = world.register()
    bob = world.register(email="bob@example.com")
    world.service.update(me(ada), ada["user_id"], {"email": "new@example.com"})
    code = world.mailer.code("new@example.com", "email-change")
    with pytest.raises(Forbidden):
        world.service.confirm_email(me(bob), ada["user_id"], {"code": code})
    with pytest.raises(ValidationFailed):  # Bob has no change waiting; Ada's code is not his
        world.service.confirm_email(me(bob), bob["user_id"], {"code": code})


def test_update_to_a_taken_email_is_conflict_at_confirmation(world: World) -> None:
    world.register()
    bob = world.register(email="bob@example.com")
    world.service.update(me(bob), bob["user_id"], {"email": "Ada@Example.com"})
    code = world.mailer.code("ada@example.com", "email-change")
    with pytest.raises(Conflict):
        world.service.confirm_email(me(bob), bob["user_id"], {"code": code})


def change_email(world: World, user: dict, email: str = "new@example.com") -> dict:
    world.service.update(me(user), user["user_id"], {"email": email})
    code = world.mailer.code(email, "email-change")
    return world.service.confirm_email(me(user), user["user_id"], {"code": code})


def test_update_is_undone_when_the_sign_in_cannot_follow(world: World) -> None:
    ada = world.register()
    world.faults.failing.add("change_email")
    with pytest.raises(ServiceUnavailable):
        change_email(world, ada)
    stored = world.repo.users[ada["user_id"]]
    assert stored["email"] == ADA["email"]
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
        change_email(world, ada)
    stored = world.repo.users[ada["user_id"]]
    assert stored["email"] == ADA["email"]  # back, so profile and sign-in agree
    assert stored["onboarded_at"] == "2026-11-26T00:00:30Z"  # and the background change kept
    assert world.identities.by_id[ada["user_id"]]["email"] == ADA["email"]
    assert world.register(email="new@example.com")  # the new address was released


def test_one_account_cannot_make_the_app_mail_strangers_at_will(world: World) -> None:
    """Attack: PUT after PUT of new addresses, each mailing a code to a stranger."""
    ada = world.register()
    for n in range(LIMITS.email_changes_per_user_day):
        world.service.update(me(ada), ada["user_id"], {"email": f"stranger{n}@example.com"})
    with pytest.raises(QuotaExceeded):
        world.service.update(me(ada), ada["user_id"], {"email": "one-more@example.com"})
    assert ("one-more@example.com", "email-change") not in world.mailer.sent


def test_tries_at_an_email_change_code_are_bounded_per_account(world: World) -> None:
    ada = world.register()
    for _ in range(LIMITS.email_confirmations_per_user_hour):
        with pytest.raises(ValidationFailed):
            world.service.confirm_email(me(ada), ada["user_id"], {"code": "000000"})
    with pytest.raises(QuotaExceeded):
        world.service.confirm_email(me(ada), ada["user_id"], {"code": "000000"})
