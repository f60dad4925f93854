"""What the data lake keeps of telemetry: no user's id, no free text, the identifiers a client
chose as digests (encoding.lake_fields / pseudonymised, the processor's archive step), and the
daily report's queries giving the same figures over such an archive (Athena on DuckDB over
moto's S3, as in test_analytics_queries)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import boto3
import pytest

from chalicelib.telemetry import encoding
from chalicelib.telemetry.model import validate_event
from tests.unit import test_analytics_queries as report_tests
from tests.unit.analytics_lake import archive_key
from tests.unit.test_telemetry_support import (
    NOW,
    FakePseudonyms,
    activity,
    archived_lines,
    fake_processor,
    metric,
    record,
    records,
    stamped,
    transaction,
)

PERSONAL = "grace.hopper@example.com"


def normalised(event: dict[str, Any]) -> dict[str, Any]:
    return validate_event(stamped(event), NOW, stamped=True)


def test_the_lake_keeps_the_reports_fields_and_names_nobody() -> None:
    pseudonyms = FakePseudonyms()
    act = normalised(activity(1, user_id="u-1", event_id=PERSONAL, session_id=PERSONAL,
                              ip_address="198.51.100.4", details={"who": PERSONAL}))  # fmt: skip
    txn = normalised(transaction(2, user="u-1", transaction_id=PERSONAL, merchant=PERSONAL,
                                 category=PERSONAL, status="failed"))  # fmt: skip
    met = normalised(metric(3))
    identity = pseudonyms.identities(["u-1"])["u-1"]
    lake = [encoding.pseudonymised(encoding.lake_fields(e), identity) for e in (act, txn, met)]

    assert set(lake[0]) == {"event_type", "event_id", "timestamp", "user_id", "activity_type",
                            "session_id"}  # fmt: skip
    assert set(lake[1]) == {"event_type", "event_id", "timestamp", "transaction_id", "user_id",
                            "amount", "currency", "status"}  # fmt: skip
    assert lake[2] == {k: v for k, v in met.items() if k not in ("submitted_by", "submitted_as")}
    assert lake[0]["user_id"] == lake[1]["user_id"] == identity.pseudonym
    assert lake[0]["session_id"] == identity.digest("session_id", PERSONAL)
    assert lake[1]["transaction_id"] == identity.digest("transaction_id", PERSONAL)
    assert (lake[1]["amount"], lake[1]["currency"], lake[1]["status"]) == (25.5, "EUR", "failed")
    assert lake[0]["timestamp"] == act["timestamp"] and lake[0]["activity_type"] == "page_view"
    text = b"".join(map(encoding.archive_line, lake)).decode()
    for needle in (PERSONAL, "u-1", "198.51.100.4", "submitted"):
        assert needle not in text, needle
    with pytest.raises(ValueError):
        encoding.pseudonymised(encoding.lake_fields(act), None)  # never archived by its id


def test_a_batch_asks_for_its_users_identities_once_and_metrics_need_none() -> None:
    processor, parts = fake_processor()
    batch = records([activity(n, user_id=f"u-{n % 2}") for n in range(6)] + [metric(9)])
    assert processor.process(batch) == {"batchItemFailures": []}
    assert parts["pseudonyms"].calls == 1 and set(parts["pseudonyms"].known) == {"u-0", "u-1"}
    lines = archived_lines(parts["archive"])
    assert {line.get("user_id") for line in lines} == {
        parts["pseudonyms"].known["u-0"].pseudonym,
        parts["pseudonyms"].known["u-1"].pseudonym,
        None,
    }
    processor.process(records([metric(n) for n in range(3)], start=20))
    assert parts["pseudonyms"].calls == 1


def test_pseudonyms_unreachable_redelivers_the_batch_and_does_nothing_of_it() -> None:
    """Whether a user was erased is known only from the pseudonyms: without them nothing is
    written, alerted, quarantined or archived; the whole batch comes back."""
    pseudonyms = FakePseudonyms(fail=True)
    processor, parts = fake_processor(pseudonyms=pseudonyms)
    batch = [*records([activity(0), transaction(1, amount=50_000), metric(2, value=99)]),
             record(None, 3, raw="!!")]  # fmt: skip
    result = processor.process(batch)
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [
        batch[0]["kinesis"]["sequenceNumber"]
    ]
    assert parts["archive"].objects == {}  # never under the user's id instead
    assert parts["writer"].tables == {} and parts["alerts"].published == []
    assert parts["quarantine"].messages == []
    pseudonyms.fail = False
    assert processor.process(batch) == {"batchItemFailures": []}
    assert len(archived_lines(parts["archive"])) == 3
    assert len(parts["alerts"].published) == 2


def test_the_batchs_users_are_looked_up_once_before_anything_is_written() -> None:
    processor, parts = fake_processor()
    parts["writer"].fail_keys = {"USER#late"}
    batch = [record(activity(0, user_id="early"), 0), record(activity(1, user_id="late"), 1),
             record(transaction(2, user="early"), 2)]  # fmt: skip
    processor.process(batch)
    assert parts["pseudonyms"].asked == [{"early", "late"}]  # one lookup, archive included
    lines = archived_lines(parts["archive"])
    assert {line["user_id"] for line in lines} == {parts["pseudonyms"].known["early"].pseudonym}


def test_late_events_of_an_erased_user_are_dropped_not_stored_alerted_or_archived() -> None:
    """The attack (or accident): an access token outlives the user's deletion by up to an
    hour, and the stream keeps records for a day; an event of the erased user processed
    after the erasure's last pass used to be stored again, with the raw user id, its
    `ip_address` and `details` (activities) or a fraud alert naming the user. The lake's
    tombstone now drops them before any write; other users' events go on."""
    pseudonyms = FakePseudonyms(erased={"gone"})
    processor, parts = fake_processor(pseudonyms=pseudonyms)
    batch = records([
        activity(0, user_id="gone", ip_address="203.0.113.9", details={"who": PERSONAL}),
        transaction(1, user="gone", amount=50_000),
        activity(2, user_id="still-here"),
        metric(3),
    ])  # fmt: skip
    assert processor.process(batch) == {"batchItemFailures": []}
    stored = json.dumps(parts["writer"].tables)
    assert "gone" not in stored and PERSONAL not in stored and "203.0.113.9" not in stored
    assert len(parts["writer"].tables["serverless-app-dev-activities"]) == 1
    assert len(parts["writer"].tables["serverless-app-dev-metrics"]) == 1
    assert "serverless-app-dev-transactions" not in parts["writer"].tables
    assert parts["alerts"].published == [] and parts["history"].queries == 0
    assert parts["quarantine"].messages == []  # dropped, not kept elsewhere
    lines = archived_lines(parts["archive"])
    assert [line["event_type"] for line in lines] == ["user_activity", "system_metric"]
    assert lines[0]["user_id"] == pseudonyms.known["still-here"].pseudonym
    assert "gone" not in pseudonyms.known
    [counts] = parts["metrics"]
    assert counts["TelemetryErasedUserEventsDropped"] == 2
    assert pseudonyms.calls == 1  # the one lookup of the batch, before the writes


def test_an_erased_identity_can_never_be_archived() -> None:
    from chalicelib.telemetry.pseudonyms import ERASED

    event = normalised(activity(1, user_id="gone"))
    with pytest.raises(ValueError):
        encoding.pseudonymised(encoding.lake_fields(event), ERASED)


def test_the_report_over_a_pseudonymised_archive_counts_as_over_the_raw_events(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same random events as test_analytics_queries, archived as the processor archives
    them: every figure is the one computed from the raw events with each user replaced by
    the pseudonym, and a session by the user's session (a session id two users both sent is
    two sessions now)."""
    pseudonyms = FakePseudonyms()

    def as_archived(event: dict[str, Any]) -> dict[str, Any]:
        user = event.get("user_id")
        identity = pseudonyms.identities([user])[user] if user else None
        return encoding.pseudonymised(encoding.lake_fields(event), identity)

    def put_pseudonymised(s3: Any, bucket: str, arrival: Any, name: str, events: list) -> int:
        body = encoding.archive_body([as_archived(e) for e in events])
        s3.put_object(Bucket=bucket, Key=archive_key(arrival, name), Body=body)
        return len(body)

    monkeypatch.setattr(report_tests, "put_events", put_pseudonymised)
    lake = report_tests.write_lake(boto3.client("s3"), aws["DataLakeBucketName"])

    def seen_as(event: dict[str, Any]) -> dict[str, Any]:
        if "user_id" not in event:
            return event
        pseudonym = pseudonyms.known[event["user_id"]].pseudonym
        seen = {**event, "user_id": pseudonym}
        if "session_id" in event:
            seen["session_id"] = f"{pseudonym}/{event['session_id']}"
        return seen

    day: date
    for day in (report_tests.DAY_A, report_tests.DAY_B):
        expected = report_tests.expected_report([seen_as(e) for e in lake[day]["events"]], day)
        answers = {name: rows for name, (_, rows) in report_tests.run_report(aws, day).items()}
        alerts = {(r["kind"], r["rule"]): r["events"] for r in answers["alerts"]}
        assert alerts == expected["alerts"] and alerts[("fraud", "velocity")] >= 3
        for name in ("by_kind", "top_users", "transactions", "metrics"):
            assert answers[name] == expected[name], name
        assert [{**r, "avg_session_seconds": None} for r in answers["daily"]] == [
            {**r, "avg_session_seconds": None} for r in expected["daily"]
        ]
        assert all(row["user_id"].startswith("p-") for row in answers["top_users"])
