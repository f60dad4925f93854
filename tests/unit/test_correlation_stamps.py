"""The correlation id as stored bookkeeping: the users table's stamp (and the delete's extra
stamp write, its races and failures), and the alert message that carries its event's id."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.core import correlation
from chalicelib.telemetry import alerting
from chalicelib.telemetry.encoding import Record
from chalicelib.users.events import events_from_stream
from chalicelib.users.repository import StaleUser
from tests.unit.test_repository import TABLE, Repo, user


@pytest.fixture
def repo(aws: dict[str, str]) -> Repo:
    return Repo(TABLE)


def raw_item(user_id: str) -> dict[str, Any] | None:
    found = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": f"USER#{user_id}"}})
    return found.get("Item")


def test_a_write_between_the_stamp_and_the_delete_makes_it_stale_then_a_retry_deletes(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.add(user(1))
    user_id = user(1)["user_id"]
    stamp = repo._update_if_unchanged

    def stamp_then_someone_writes(read: dict[str, Any], changes: dict[str, Any]) -> bool:
        stamped = stamp(read, changes)
        with correlation.bound("other-write"):  # lands between the stamp and the delete
            assert stamp({**read, "version": read["version"] + 1}, {"name": "Renamed"})
        return stamped

    monkeypatch.setattr(repo, "_update_if_unchanged", stamp_then_someone_writes)
    with correlation.bound("del-1"), pytest.raises(StaleUser):
        repo.remove(repo.get(user_id))
    monkeypatch.undo()
    current = repo.get(user_id)
    assert current is not None and current["name"] == "Renamed" and current["version"] == 3
    assert current["correlation_id"] == "other-write", "the other write was not overwritten"
    with correlation.bound("del-1"):
        repo.remove(current)  # the service's retry: what is stored now
    assert repo.get(user_id) is None
    repo.add(user(2, email=user(1)["email"]))  # the address was released


def test_a_stamp_on_a_missing_user_is_stale_and_creates_no_item(repo: Repo) -> None:
    ghost = user(3)  # never stored, or deleted meanwhile
    with correlation.bound("del-2"), pytest.raises(StaleUser):
        repo.remove(ghost)
    assert raw_item(ghost["user_id"]) is None


def test_a_failed_delete_leaves_only_bookkeeping_and_the_next_write_restamps(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamp is kept when the TransactWrite after it fails (a 503, a cancelled
    transaction): it changed no public field, so the stream announces nothing."""
    repo.add(user(4))
    user_id = user(4)["user_id"]
    before = raw_item(user_id)
    busy = ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "busy"}}, "Transact")
    monkeypatch.setattr(repo, "_transact", lambda _items: (_ for _ in ()).throw(busy))
    with correlation.bound("del-3"), pytest.raises(ClientError):
        repo.remove(repo.get(user_id))
    after = raw_item(user_id)
    assert after is not None and after["correlation_id"] == {"S": "del-3"}
    assert after["version"] == {"N": "2"}
    assert {k: v for k, v in after.items() if k not in ("version", "correlation_id")} == {
        k: v for k, v in before.items() if k not in ("version", "correlation_id")
    }
    keys = {"pk": {"S": f"USER#{user_id}"}}
    modify = {"eventName": "MODIFY", "dynamodb": {"Keys": keys, "OldImage": before,
                                                  "NewImage": after}}  # fmt: skip
    assert events_from_stream([modify]) == []
    assert repo.mark_onboarded(user_id, "2026-12-07T03:00:00.000000Z")  # outside any work
    assert "correlation_id" not in raw_item(user_id), "no write names work that did not make it"
    with correlation.bound("onboarding-1"):
        assert repo.add_missing_preferences(user_id, {"digest": True}, "2026-12-07T03:01Z")
    assert raw_item(user_id)["correlation_id"] == {"S": "onboarding-1"}


def test_an_alert_carries_its_events_id_in_its_body() -> None:
    """Documented (README, Telemetry): the attribute for filters and code, the body for
    whoever reads the alert (an email subscription shows the body only)."""
    sent: list[dict[str, Any]] = []

    class Alerts:
        def send_alerts(self, alerts: list[dict[str, Any]]) -> list[int]:
            sent.extend(alerts)
            return []

    def record(index: int, correlation_id: str | None) -> Record:
        return Record(index, str(index), "shard-1", "p", 0.0, "", correlation_id=correlation_id)

    alert = {"type": "metric_anomaly", "severity": "high"}
    found = {i: [{**alert, "event_id": f"e{i}"}] for i in (0, 1)}
    outcome = alerting.send(found, [record(0, "ev-9"), record(1, None)], 2, Alerts(), None)
    assert outcome.published == 2
    assert [alert.get("correlation_id") for alert in sent] == ["ev-9", None]
