"""The processor trusts no record's word for whose it is: every record must carry the sender
the ingest verified, allowed to send it; transactions are keyed within their owner's."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.telemetry import encoding
from chalicelib.telemetry.model import STAMP_FIELDS, Invalid, validate_event
from tests.unit.test_telemetry_support import (
    NOW,
    FakeHistory,
    activity,
    fake_processor,
    metric,
    record,
    transaction,
)

VICTIM = "user-victim"


def stamp(event: dict[str, Any], by: str, kind: str) -> dict[str, Any]:
    return {**event, "submitted_by": by, "submitted_as": kind}


@pytest.mark.parametrize(
    "payload",
    [
        transaction(1, amount=50_000, user=VICTIM),  # no stamp: not from the ingest
        stamp(transaction(1, amount=50_000, user=VICTIM), "user-attacker", "user"),
        stamp(activity(1, user_id=VICTIM), "user-attacker", "user"),
        stamp(metric(1, value=99.0), "user-attacker", "user"),  # a user's "system metric"
        stamp(metric(1, value=99.0), "producer", "superuser"),
        stamp(transaction(1, user="producer"), "producer", "machine"),
    ],
    ids=[
        "unstamped",
        "other-users-txn",
        "other-users-activity",
        "users-metric",
        "bad-kind",
        "machines-txn",
    ],
)
def test_a_record_its_sender_may_not_send_is_quarantined_not_acted_on(payload: Any) -> None:
    processor, parts = fake_processor()
    result = processor.process([record(payload, 0, stamp=False), record(activity(2), 1)])
    assert result == {"batchItemFailures": []}
    [quarantined] = parts["quarantine"].messages
    assert "stamp" in quarantined["reason"] or "not allowed" in quarantined["reason"]
    stored = [key for table in parts["writer"].tables.values() for key in table]
    assert len(stored) == 1 and stored[0].startswith("USER#user-2|")  # only the good one
    assert parts["alerts"].published == []  # no fraud or critical alert on the victim
    assert parts["baselines"].stores == 0


def test_an_admins_record_for_another_user_and_a_machines_metric_are_taken() -> None:
    processor, parts = fake_processor()
    batch = [
        record(stamp(transaction(1, user=VICTIM), "admin-1", "admin"), 0, stamp=False),
        record(stamp(metric(2), "producer", "machine"), 1, stamp=False),
    ]
    assert processor.process(batch) == {"batchItemFailures": []}
    assert parts["quarantine"].messages == []
    assert f"TXN#{VICTIM}#t-1|" in parts["writer"].tables["serverless-app-dev-transactions"]


def test_the_stamp_is_checked_by_the_model_and_kept_out_of_items_and_archive() -> None:
    event = validate_event(stamp(activity(1), "user-1", "user"), NOW, stamped=True)
    assert (event["submitted_by"], event["submitted_as"]) == ("user-1", "user")
    _, item = encoding.table_and_item(event)
    assert "submitted_by" not in item and "submitted_as" not in item
    assert b"submitted" not in encoding.archive_line(encoding.lake_fields(event))
    assert not {n for kept in encoding.LAKE_FIELDS.values() for n in kept} & set(STAMP_FIELDS)
    with pytest.raises(Invalid, match="unknown field"):  # from a client: refused
        validate_event(stamp(activity(1), "user-1", "user"), NOW)
    with pytest.raises(Invalid, match="not stamped"):
        validate_event(activity(1), NOW, stamped=True)


def test_the_same_transaction_id_of_two_users_is_two_transactions() -> None:
    """The attack: another user's transaction overwritten by sending its id. Ids are per
    owner now: both are kept, each its owner's."""
    processor, parts = fake_processor()
    batch = [record(transaction(1, amount=10, user=VICTIM), 0),
             record(transaction(1, amount=99_999, user="user-attacker"), 1)]  # fmt: skip
    assert processor.process(batch) == {"batchItemFailures": []}
    stored = parts["writer"].tables["serverless-app-dev-transactions"]
    assert {key: item["user_id"]["S"] for key, item in stored.items()} == {
        f"TXN#{VICTIM}#t-1|": VICTIM,
        "TXN#user-attacker#t-1|": "user-attacker",
    }
    assert stored[f"TXN#{VICTIM}#t-1|"]["amount"] == {"N": "10"}


def test_velocity_reads_only_the_owners_transactions() -> None:
    """Five transactions of the victim in the window do not make the attacker's sixth (same
    ids, their own) fraud, and the other way round."""
    history = FakeHistory()
    history.stored[VICTIM] = [(transaction(n)["timestamp"], f"t-{n}") for n in range(10, 15)]
    processor, parts = fake_processor(history=history)
    batch = [record(transaction(n, user="user-attacker"), n) for n in range(10, 11)]
    assert processor.process(batch) == {"batchItemFailures": []}
    assert parts["alerts"].published == []
    processor.process([record(transaction(9, user=VICTIM), 20)])
    [alert] = parts["alerts"].published
    assert alert["user_id"] == VICTIM and "6 transactions" in alert["reasons"][0]


def test_transaction_keys_old_and_new_give_the_id() -> None:
    assert encoding.transaction_key("u1", "t-1") == "TXN#u1#t-1"
    assert encoding.transaction_id_of("TXN#u1#t-1") == "t-1"
    assert encoding.transaction_id_of("TXN#t-1") == "t-1"  # stored before ids were per owner
