"""`TelemetryIngest` on its own (a list for a stream, in-memory quotas): who may send which
events, the sender's stamp on every record, and the per-caller quota."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.errors import Forbidden, ValidationFailed
from chalicelib.core.quotas import InMemoryQuotas, QuotaExceeded
from tests.clock import RunningClock
from tests.unit.test_telemetry_support import (
    ADMIN,
    MACHINE,
    MACHINE_QUOTAS,
    USER_QUOTAS,
    ListStream,
    activity,
    machine,
    make_ingest,
    metric,
    transaction,
    user,
)

VICTIM = "user-victim"
ATTACKER = user("user-attacker")


def mine(event: dict[str, Any], owner: str = "user-attacker") -> dict[str, Any]:
    return {**event, "user_id": owner}


# --- whose events ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        activity(1, user_id=VICTIM),
        transaction(2, user=VICTIM),
        transaction(3, amount=50_000, user=VICTIM),
    ],
    ids=["activity", "transaction", "fraud-alert-bait"],
)
def test_an_event_naming_another_user_is_refused_whole_and_nothing_is_put(
    event: dict[str, Any],
) -> None:
    """The attack: a signed-in user sends events as another user (to overwrite their
    transactions, raise fraud alerts against them). 403, even with valid events beside it."""
    stream = ListStream()
    ingest = make_ingest(stream)
    with pytest.raises(Forbidden) as refused:
        ingest.ingest({"events": [mine(activity(0)), event]}, ATTACKER)
    assert refused.value.details == [
        {
            "field": "events[1].user_id",
            "issue": "user_id must be the caller's own (only admins send events for other users)",
        }
    ]
    assert stream.records == []


def test_a_missing_user_id_is_the_caller() -> None:
    stream = ListStream()
    events = [activity(1), transaction(2)]
    for event in events:
        del event["user_id"]
    result = make_ingest(stream).ingest({"events": events}, ATTACKER)
    assert result["accepted"] == 2
    assert [e["user_id"] for e in stream.events()] == ["user-attacker"] * 2


def test_every_record_carries_the_verified_sender_and_clients_cannot_forge_it() -> None:
    stream = ListStream()
    ingest = make_ingest(stream)
    ingest.ingest({"events": [mine(activity(1))]}, ATTACKER)
    [sent] = stream.events()
    assert (sent["submitted_by"], sent["submitted_as"]) == ("user-attacker", "user")

    forged = {**mine(activity(2)), "submitted_by": VICTIM, "submitted_as": "admin"}
    with pytest.raises(ValidationFailed) as refused:
        ingest.ingest({"events": [forged]}, ATTACKER)
    assert "unknown field(s)" in refused.value.details[0]["issue"]
    assert len(stream.records) == 1


def test_admins_may_send_events_for_any_user() -> None:
    stream = ListStream()
    result = make_ingest(stream).ingest(
        {"events": [activity(1, user_id=VICTIM), transaction(2, user=VICTIM)]}, ADMIN
    )
    assert result["accepted"] == 2
    assert {(e["user_id"], e["submitted_by"], e["submitted_as"]) for e in stream.events()} == {
        (VICTIM, "admin-1", "admin")
    }


# --- system metrics ----------------------------------------------------------------------


def test_an_ordinary_user_cannot_send_system_metrics() -> None:
    """The attack: a user pages critical alerts (cpu 99) and skews a source's baseline."""
    stream = ListStream()
    with pytest.raises(Forbidden) as refused:
        make_ingest(stream).ingest({"events": [metric(1, value=99.0)]}, ATTACKER)
    assert refused.value.details[0]["field"] == "events[0].event_type"
    assert stream.records == []


def test_a_machine_identity_with_the_scope_sends_metrics() -> None:
    stream = ListStream()
    result = make_ingest(stream).ingest({"events": [metric(1), metric(2)]}, machine())
    assert result["accepted"] == 2
    assert {(e["submitted_by"], e["submitted_as"]) for e in stream.events()} == {
        (MACHINE, "machine")
    }


def test_an_admin_may_send_metrics() -> None:
    assert make_ingest(ListStream()).ingest({"events": [metric(1)]}, ADMIN)["accepted"] == 1


@pytest.mark.parametrize(
    ("caller", "event"),
    [
        (machine(scopes=()), metric(1)),  # no scope: nothing at all
        (machine(scopes=("aws.cognito.signin.user.admin",)), metric(1)),
        (machine(), activity(1, user_id=MACHINE)),  # nobody's user, not even its own id's
        (machine(), transaction(2, user=VICTIM)),
    ],
    ids=["no-scope", "other-scope", "activity-as-itself", "transaction"],
)
def test_a_machine_identity_sends_system_metrics_only_and_only_with_its_scope(
    caller: Any, event: dict[str, Any]
) -> None:
    stream = ListStream()
    with pytest.raises(Forbidden):
        make_ingest(stream).ingest({"events": [event]}, caller)
    assert stream.records == []


# --- quotas ------------------------------------------------------------------------------


def test_batches_from_one_user_reach_the_quota_and_the_next_minute_works(
    app_clock: RunningClock,
) -> None:
    """The dev limit is 600 events a minute: three batches of 200, then 429 with nothing
    put; the next minute (the clock's, not the machine's) the user sends again."""
    stream = ListStream()
    ingest = make_ingest(stream)
    batch = {"events": [mine(activity(n)) for n in range(200)]}
    app_clock.advance(seconds=60 - app_clock().second - 50)  # 50 s left in this minute
    sent = 0
    with pytest.raises(QuotaExceeded) as refused:
        for _ in range(10):
            ingest.ingest(batch, ATTACKER)
            sent += 1
    assert sent == 3 and len(stream.records) == USER_QUOTAS.events.limit == 600
    assert refused.value.status_code == 429
    assert refused.value.code == "too_many_requests"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 50

    app_clock.advance(minutes=1)
    assert ingest.ingest(batch, ATTACKER)["accepted"] == 200
    assert len(stream.records) == 800


def test_the_quota_counts_accepted_events_only_and_is_per_caller() -> None:
    quotas = InMemoryQuotas()
    ingest = make_ingest(ListStream(), quotas)
    bad = {**activity(0), "activity_type": "NOT A SLUG"}
    ingest.ingest({"events": [mine(activity(1)), bad]}, ATTACKER)
    ingest.ingest({"events": [mine(activity(1), "user-2")]}, user("user-2"))
    used = {subject: n for (subject, name, _), n in quotas.used.items() if name == "events"}
    assert used == {"user-attacker": 1, "user-2": 1}


def test_machine_identities_have_their_own_larger_quota() -> None:
    quotas = InMemoryQuotas()
    ingest = make_ingest(ListStream(), quotas)
    batch = {"events": [metric(n) for n in range(500)]}
    for _ in range(MACHINE_QUOTAS.events.limit // 500):  # five times a user's limit on dev
        assert ingest.ingest(batch, machine())["accepted"] == 500
    assert {(s, q) for s, q, _ in quotas.used} == {
        (MACHINE, "machine-events"),
        (MACHINE, "machine-event-bytes"),
    }


def test_a_forbidden_request_counts_nothing() -> None:
    quotas = InMemoryQuotas()
    with pytest.raises(Forbidden):
        make_ingest(ListStream(), quotas).ingest({"events": [metric(1)]}, ATTACKER)
    assert quotas.used == {}


def test_a_quota_store_that_fails_puts_nothing_and_its_error_is_not_disguised() -> None:
    """The error goes up as it is: the API turns a throttled or timed-out call into a 503
    (`core.http.busy_aws_as_503`, test_api_telemetry), and anything else stays a 500 to fix
    rather than a retry that can never succeed."""

    class Broken:
        def take(self, subject: str, uses: Any) -> None:
            raise KeyError("a bug in the counters")

    stream = ListStream()
    with pytest.raises(KeyError):
        make_ingest(stream, Broken()).ingest({"events": [mine(activity(1))]}, ATTACKER)
    assert stream.records == []
