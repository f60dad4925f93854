"""Deleting a user: the request closes the account (`UsersService.delete`), the erasure
removes the rest in idempotent passes (`users.erasure`), and the export gives everything
stored (`users.export`). In-memory ports: no AWS."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import Forbidden, NotFound
from chalicelib.core.quotas import InMemoryQuotas
from chalicelib.search.indexing import index_changes, postings_of
from chalicelib.users.erasure import (
    FOLLOW_UP_SECONDS,
    ErasureUnfinished,
    InvalidErasure,
    UserErasure,
    parse_request,
    user_digest,
)
from chalicelib.users.events import USER_DELETED, events_from_stream
from chalicelib.users.export import UserExport
from chalicelib.users.pending import email_change_key
from chalicelib.users.service import UsersService
from tests.clock import TEST_NOW
from tests.unit.fakes import (
    Faults,
    InMemoryIdentities,
    InMemoryPendingRecords,
    InMemoryUserRepository,
    RecordingMailer,
)
from tests.unit.streams import image, stream_record, user_item

ADA_ID = "4f0c6a56-2a8e-4d0b-9c53-0d9d6f1e2a11"
ADA = {
    "user_id": ADA_ID,
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "phone": "+14155550123",
    "bio": "Analyst",
    "preferences": {"newsletter": True},
    "created_at": "2026-11-26T00:00:01.000000Z",
    "updated_at": "2026-11-26T00:00:01.000000Z",
    "version": 3,
}
ADMIN = Principal("admin-id", frozenset({"admins"}))
OWNER = Principal(ADA_ID, frozenset())
STRANGER = Principal("6b1f0000-0000-4000-8000-000000000001", frozenset())


class FakeOwnerData:
    """A domain's data of its owners, by owner: erased once, whatever the reruns."""

    def __init__(self, held: dict[str, Any], faults: Faults | None = None, name: str = "") -> None:
        self.held = held  # owner -> what it holds (a list, or a dict of lists)
        self.faults = faults or Faults()
        self.name = name
        self.calls: list[str] = []

    def erase(self, user_id: str) -> Any:
        self.calls.append(user_id)
        self.faults.check(f"erase_{self.name}")
        gone = self.held.pop(user_id, None)
        if isinstance(gone, dict):
            return {kind: len(items) for kind, items in gone.items()}
        return len(gone or [])

    def export(self, user_id: str) -> Any:
        return self.held.get(user_id, [])


class FakeOrders(FakeOwnerData):
    """Orders: an open one is not erased until it ends; an ended one is kept under the
    pseudonym given."""

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        super().__init__({}, name="orders")
        self.orders = orders

    def erase(self, user_id: str, pseudonym: str) -> dict[str, int]:
        self.calls.append(user_id)
        mine = [o for o in self.orders if o["owner_id"] == user_id]
        ended = [o for o in mine if o["status"] != "pending"]
        for order in ended:
            order["owner_id"] = f"erased-{pseudonym}"
        return {"orders": len(ended), "orders_open": len(mine) - len(ended)}

    def export(self, user_id: str) -> list[dict[str, Any]]:
        return [o for o in self.orders if o["owner_id"] == user_id]


class FollowUps:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def schedule(self, body: str, delay_seconds: int) -> None:
        self.sent.append((body, delay_seconds))


class World:
    def __init__(self, now: Any = None) -> None:
        self.faults = Faults()
        self.identities = InMemoryIdentities(self.faults)
        self.identities.by_id[ADA_ID] = {"email": ADA["email"], "name": ADA["name"]}
        self.images = FakeOwnerData({ADA_ID: [{"image_id": "i1"}]}, self.faults, "images")
        self.telemetry = FakeOwnerData(
            {ADA_ID: {"activities": [{"a": 1}, {"a": 2}], "transactions": [{"t": 1}]}},
            self.faults,
            "telemetry",
        )
        self.orders = FakeOrders([{"order_id": "o1", "owner_id": ADA_ID, "status": "completed"}])
        self.follow_ups = FollowUps()
        self.now = now or TEST_NOW
        self.erasure = UserErasure(
            self.identities,
            {"images": self.images, "telemetry": self.telemetry},
            self.follow_ups,
            timedelta(minutes=90),
            pseudonymised={"orders": self.orders},
            now=lambda: self.now,
            max_passes=5,
        )

    def started(self) -> str:
        """The user-deleted event handled: the body of the first pass it handed on."""
        self.erasure.handle(deleted_event())
        body, delay = self.follow_ups.sent.pop()
        assert delay == 0
        return body

    def last_follow_up(self) -> str:
        return self.follow_ups.sent[-1][0]


def deleted_event(deleted_at: str = clock.timestamp(TEST_NOW), **extra: Any) -> str:
    body = {
        "event_type": USER_DELETED,
        "event_id": f"user-deleted:{ADA_ID}",
        "occurred_at": deleted_at,
        "user_id": ADA_ID,
        "deleted_at": deleted_at,
        **extra,
    }
    return json.dumps(body)


# --- the request: the account unusable at once ------------------------------------------


def service_with_ada() -> tuple[UsersService, InMemoryUserRepository, InMemoryIdentities]:
    repo, identities = InMemoryUserRepository(), InMemoryIdentities()
    repo.users[ADA_ID] = dict(ADA)
    repo.claims["ada@example.com"] = {"status": "active", "user_id": ADA_ID}
    identities.by_id[ADA_ID] = {"email": ADA["email"], "name": ADA["name"], "enabled": True}
    service = UsersService(
        repo, identities, InMemoryPendingRecords(), RecordingMailer(), InMemoryQuotas()
    )
    return service, repo, identities


def test_delete_revokes_the_tokens_then_removes_the_sign_in_and_the_profile() -> None:
    service, repo, identities = service_with_ada()
    order: list[str] = []
    for name in ("sign_out_everywhere", "delete"):
        original = getattr(identities, name)

        def recorded(user_id: str, _name: str = name, _original: Any = original) -> None:
            order.append(_name)
            _original(user_id)

        setattr(identities, name, recorded)
    service.delete(OWNER, ADA_ID)
    # Revoked first: a global sign-out needs the identity to exist.
    assert order == ["sign_out_everywhere", "delete"]
    assert ADA_ID in identities.signed_out and ADA_ID not in identities.by_id
    assert repo.users == {} and repo.claims == {}


def test_a_failed_sign_out_keeps_the_profile_so_the_delete_can_be_retried() -> None:
    service, repo, identities = service_with_ada()
    identities.faults.failing.add("sign_out")
    with pytest.raises(ConnectionError):
        service.delete(ADMIN, ADA_ID)
    assert ADA_ID in repo.users  # nothing announced: no erasure of a user still there
    service.delete(ADMIN, ADA_ID)
    assert repo.users == {} and identities.by_id == {}


def test_only_the_owner_or_an_admin_may_delete() -> None:
    service, repo, identities = service_with_ada()
    with pytest.raises(Forbidden):
        service.delete(STRANGER, ADA_ID)
    assert ADA_ID in repo.users and ADA_ID in identities.by_id and not identities.signed_out


# --- the stream: the removal becomes user-deleted, and the index loses the postings -------


def test_the_profiles_removal_is_announced_with_the_id_only() -> None:
    [event] = events_from_stream([stream_record("REMOVE", old=user_item(ADA))])
    assert event.event_type == USER_DELETED and event.event_id == f"user-deleted:{ADA_ID}"
    body = json.loads(event.body())
    assert body["user_id"] == ADA_ID and clock.is_timestamp(body["deleted_at"])
    for personal in (ADA["email"], ADA["name"], ADA["phone"], ADA["bio"]):
        assert personal not in event.body()
    request = parse_request(event.body())
    assert (request.user_id, request.pass_number) == (ADA_ID, 1)


def test_the_search_keeper_deletes_every_posting_of_a_removed_user() -> None:
    """The index keeper reads the same stream: a REMOVE deletes the postings of the old
    image (even when the index missed earlier changes of it)."""
    old = user_item(ADA)
    changes = index_changes([stream_record("REMOVE", old=old)])
    assert changes.put == set()
    assert changes.delete == postings_of(ADA_ID, image(old))
    assert {p.word for p in changes.delete} >= {"ada", "lovelace", "analyst"}
    # Changed and then removed in one batch: the postings of both images go.
    new = user_item({**ADA, "bio": "Poet", "version": 4})
    both = index_changes(
        [stream_record("MODIFY", new=new, old=old), stream_record("REMOVE", old=new)]
    )
    assert both.put == set() and {"poet", "analyst"} <= {p.word for p in both.delete}


# --- the erasure ---------------------------------------------------------------------------

PSEUDONYM = "0123456789abcdef0123456789abcdef"
MESSAGE_FIELDS = {"event_type", "event_id", "user_id", "deleted_at", "pass", "pseudonym"}


def test_the_user_deleted_event_gets_a_random_pseudonym_before_anything_is_erased() -> None:
    """The event names no pseudonym: its pass makes one and hands the event on with it at
    once, erasing nothing, so the pseudonym is in the queue before any order carries it."""
    world = World()
    world.erasure.handle(deleted_event())
    [(body, delay)] = world.follow_ups.sent
    assert delay == 0
    first = parse_request(body)
    assert (first.user_id, first.pass_number, first.deleted_at) == (ADA_ID, 1, TEST_NOW)
    assert first.pseudonym is not None and len(first.pseudonym) == 32
    assert world.identities.by_id and world.images.held and world.orders.calls == []
    # Random: another erasure of the same user (a duplicated event) gets another one.
    world.erasure.handle(deleted_event())
    assert parse_request(world.follow_ups.sent[-1][0]).pseudonym != first.pseudonym


def test_a_pass_erases_the_sign_in_and_every_domains_data() -> None:
    world = World()
    body = world.started()
    world.erasure.handle(body)
    assert world.identities.by_id == {}
    assert world.images.held == {} and world.telemetry.held == {}
    assert world.orders.orders[0]["owner_id"] == f"erased-{parse_request(body).pseudonym}"
    assert world.images.calls == world.telemetry.calls == world.orders.calls == [ADA_ID]


def test_every_pass_keeps_the_users_orders_under_the_one_pseudonym() -> None:
    """An order placed with a still-valid token after the deletion, erased by a later pass,
    and a pass retried after a failure, use the pseudonym the messages carry: all of the
    user's orders stay countable together, and an order already pseudonymised keeps it."""
    world = World()
    body = world.started()
    pseudonym = parse_request(body).pseudonym
    world.faults.failing.add("erase_telemetry")
    with pytest.raises(ConnectionError):
        world.erasure.handle(body)
    world.faults.failing.clear()
    world.erasure.handle(body)  # the retry: the same message, the same pseudonym
    world.orders.orders.append({"order_id": "late", "owner_id": ADA_ID, "status": "completed"})
    world.now = TEST_NOW + timedelta(minutes=15)
    world.erasure.handle(world.last_follow_up())
    assert {o["owner_id"] for o in world.orders.orders} == {f"erased-{pseudonym}"}
    assert all(parse_request(b).pseudonym == pseudonym for b, _ in world.follow_ups.sent)


def test_the_messages_hold_nothing_of_the_user_but_the_id() -> None:
    world = World()
    body = world.started()
    world.erasure.handle(body)
    for sent in (body, world.last_follow_up()):
        message = json.loads(sent)
        assert set(message) == MESSAGE_FIELDS
        for personal in (ADA["email"], ADA["name"], ADA["phone"], ADA["bio"]):
            assert personal not in sent


def test_the_erasure_logs_name_the_user_by_a_digest_never_by_the_id(
    monkeypatch: pytest.MonkeyPatch, info_logs: None
) -> None:
    from chalicelib.core.observability import logger

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    world = World()
    body = world.started()
    world.erasure.handle(body)
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["user erasure started", "user erased"]
    assert all(line["user_digest"] == user_digest(ADA_ID) for line in lines)
    text = log.getvalue()
    assert ADA_ID not in text
    assert str(parse_request(body).pseudonym) not in text  # the logs link nothing to it


def test_running_the_erasure_twice_is_harmless() -> None:
    world = World()
    body = world.started()
    world.erasure.handle(body)
    world.erasure.handle(body)
    assert world.identities.by_id == {} and world.images.held == {}
    assert world.erasure.erase(ADA_ID, PSEUDONYM) == {
        "images": 0,
        "telemetry": 0,
        "orders": 0,
        "orders_open": 0,
    }


def test_a_failing_step_fails_the_message_and_its_retry_finishes_the_erasure() -> None:
    world = World()
    body = world.started()
    world.faults.failing.add("erase_telemetry")
    with pytest.raises(ConnectionError):
        world.erasure.handle(body)
    assert world.follow_ups.sent == []  # a failed pass schedules nothing: its retry does
    assert world.telemetry.held  # not erased yet: the message stays in the queue
    world.faults.failing.clear()
    world.erasure.handle(body)
    assert world.telemetry.held == {} and world.images.held == {}
    assert len(world.follow_ups.sent) == 1


def test_passes_repeat_while_tokens_issued_before_the_deletion_may_still_act() -> None:
    """An access token stays valid up to an hour after the deletion: what it creates
    meanwhile (a late image) is erased by a later pass."""
    world = World()
    world.erasure.handle(world.started())
    [(body, delay)] = world.follow_ups.sent
    assert delay == FOLLOW_UP_SECONDS
    follow_up = parse_request(body)
    assert (follow_up.user_id, follow_up.pass_number) == (ADA_ID, 2)
    assert follow_up.deleted_at == TEST_NOW

    world.images.held[ADA_ID] = [{"image_id": "late"}]  # made with a still-valid token
    world.now = TEST_NOW + timedelta(minutes=15)
    world.erasure.handle(body)
    assert world.images.held == {}
    assert len(world.follow_ups.sent) == 2

    world.now = TEST_NOW + timedelta(minutes=91)  # past the window: the last pass
    world.erasure.handle(world.last_follow_up())
    assert len(world.follow_ups.sent) == 2


def test_an_open_order_keeps_the_passes_going_and_fails_to_the_dlq_at_the_end() -> None:
    world = World(now=TEST_NOW + timedelta(days=1))
    world.orders.orders.append({"order_id": "o2", "owner_id": ADA_ID, "status": "pending"})
    world.erasure.handle(world.started())
    assert len(world.follow_ups.sent) == 1  # past the window, but an order is still open
    world.orders.orders[1]["status"] = "completed"
    world.erasure.handle(world.last_follow_up())
    assert len(world.follow_ups.sent) == 1  # all ended: done
    assert all(o["owner_id"].startswith("erased-") for o in world.orders.orders)

    world.orders.orders.append({"order_id": "o3", "owner_id": ADA_ID, "status": "pending"})
    with pytest.raises(ErasureUnfinished):
        world.erasure.handle(deleted_event(**{"pass": 5, "pseudonym": PSEUDONYM}))


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"event_type": "user-created", "user_id": ADA_ID}),
        deleted_event().replace(ADA_ID, "not-a-uuid"),
        deleted_event(deleted_at="yesterday"),
        deleted_event(**{"pass": 0}),
        deleted_event(**{"pass": True}),
        # A pseudonym that is not 32 lowercase hex digits (another user's id, say) would
        # hand the orders to whoever it names.
        deleted_event(pseudonym=STRANGER.user_id),
        deleted_event(pseudonym=""),
        deleted_event(pseudonym=PSEUDONYM.upper()),
        deleted_event(pseudonym=PSEUDONYM[:-1]),
        deleted_event(pseudonym=12345),
    ],
)
def test_a_message_that_is_no_user_deleted_event_fails(body: str) -> None:
    world = World()
    with pytest.raises(InvalidErasure):
        world.erasure.handle(body)
    assert world.identities.by_id and world.images.held  # nothing erased on a guess


# --- the export ----------------------------------------------------------------------------


def exporter(world: World, repo: InMemoryUserRepository, pending: Any) -> UserExport:
    return UserExport(
        repo,
        pending,
        {"images": world.images, "telemetry": world.telemetry, "orders": world.orders},
        clock=lambda: "2026-11-26T01:00:00.000000Z",
    )


def test_the_export_holds_everything_stored_about_the_user_and_no_bookkeeping() -> None:
    world, repo, pending = World(), InMemoryUserRepository(), InMemoryPendingRecords()
    repo.users[ADA_ID] = {**user_item(ADA), "onboarded_at": "2026-11-26T00:00:05.000000Z"}
    pending.put(
        email_change_key(ADA_ID),
        {"email": "new@example.com", "code_digest": "secret", "expires_at": 1_790_000_900},
    )
    document = exporter(world, repo, pending).export(OWNER, ADA_ID)
    assert document["user_id"] == ADA_ID
    assert document["profile"] == {
        k: v
        for k, v in {**ADA, "onboarded_at": "2026-11-26T00:00:05.000000Z"}.items()
        if k != "version"
    }
    assert document["pending_email_change"] == {
        "email": "new@example.com",
        "expires_at": 1_790_000_900,
    }
    assert document["images"] == [{"image_id": "i1"}]
    assert document["activities"] == [{"a": 1}, {"a": 2}]
    assert document["transactions"] == [{"t": 1}]
    assert document["orders"] == [{"order_id": "o1", "owner_id": ADA_ID, "status": "completed"}]
    text = json.dumps(document)
    assert "secret" not in text and "USER#" not in text and "created_key" not in text


def test_the_export_is_for_the_owner_and_admins_and_404_for_no_such_user() -> None:
    world, repo = World(), InMemoryUserRepository()
    repo.users[ADA_ID] = user_item(ADA)
    export = exporter(world, repo, InMemoryPendingRecords())
    assert export.export(ADMIN, ADA_ID)["profile"]["email"] == ADA["email"]
    with pytest.raises(Forbidden):
        export.export(STRANGER, ADA_ID)
    with pytest.raises(Forbidden):  # as GET /users/{id}: 403 before telling what exists
        export.export(STRANGER, "6b1f0000-0000-4000-8000-00000000dead")
    with pytest.raises(NotFound):
        export.export(ADMIN, "6b1f0000-0000-4000-8000-00000000dead")
    with pytest.raises(NotFound):
        export.export(ADMIN, "not-a-user-id")
