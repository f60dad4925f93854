"""One caller can neither crowd a Kinesis shard nor flood the fraud desk.

The ingest counts a caller's events and their bytes on the stream per minute, together (all
or none); the stage's limits keep one user to about 1 % of a shard's write capacity (the
partition key is the user, so all of a user's events land on one shard). The processor lets
through at most `TelemetryFraudAlertsPerUserHour` fraud alerts per user and hour (of the
records' arrival); further ones are counted, not published, and an alert let through stays
at least once. The attacks first, then the pieces (the budget's table against moto, the
handler with its IAM policy checked).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.core.backoff import Backoff
from chalicelib.core.errors import PayloadTooLarge
from chalicelib.core.quotas import InMemoryQuotas, QuotaExceeded, counter_subject
from chalicelib.telemetry.model import MAX_DETAILS_BYTES, MAX_EVENTS
from tests.clock import RunningClock
from tests.unit.test_telemetry_support import (
    ARRIVAL,
    DEV,
    MACHINE_QUOTAS,
    USER_QUOTAS,
    FakeAlertBudget,
    FakeAlerts,
    FakeArchive,
    ListStream,
    activity,
    fake_processor,
    make_ingest,
    metric,
    records,
    stage_settings,
    transaction,
    ts,
    user,
)

ATTACKER_ID = "user-attacker"
ATTACKER = user(ATTACKER_ID)
#: Kinesis: each shard takes up to 1 MiB and 1,000 records a second (PutRecords).
SHARD_BYTES_PER_SECOND = 1024 * 1024
SHARD_RECORDS_PER_SECOND = 1000


def biggest(n: int, owner: str = ATTACKER_ID) -> dict[str, Any]:
    """The largest event the model takes: 4 KB of details, every id at its longest."""
    pad = "x" * (MAX_DETAILS_BYTES - len('{"pad":""}'))
    return {
        "event_type": "user_activity",
        "event_id": f"{n:0128d}",
        "timestamp": ts(-n),
        "user_id": owner,
        "activity_type": "a" * 64,
        "session_id": "s" * 128,
        "ip_address": "2001:db8:85a3:1234:5678:8a2e:370:7334",
        "details": {"pad": pad},
    }


def on_stream_bytes(stream: ListStream) -> int:
    """What Kinesis counts of the records put: data and partition key."""
    return sum(len(data) + len(key.encode()) for data, key in stream.records)


def fresh_minute(app_clock: RunningClock, seconds_left: int = 50) -> None:
    app_clock.advance(seconds=60 - app_clock().second - seconds_left)


# --- the attack on the shard ---------------------------------------------------------------


def test_a_flood_of_max_size_batches_from_one_user_stops_at_its_bytes_a_minute(
    app_clock: RunningClock,
) -> None:
    """The review's attack: 500 events of ~4.6 KB (2.3 MB) a request, a dozen requests at
    the start of each minute, all onto the user's shard. A request bigger than a minute's
    bytes is refused outright (413); smaller ones go through until the minute's bytes are
    used (429 on `event-bytes`, its event count not taken either); another user is not
    affected; the next minute the user sends again."""
    quotas = InMemoryQuotas()
    stream = ListStream()
    ingest = make_ingest(stream, quotas)
    fresh_minute(app_clock)

    with pytest.raises(PayloadTooLarge) as too_big:
        ingest.ingest({"events": [biggest(n) for n in range(MAX_EVENTS)]}, ATTACKER)
    assert too_big.value.status_code == 413
    assert stream.records == [] and quotas.used == {}

    batch = {"events": [biggest(n) for n in range(50)]}
    accepted = 0
    with pytest.raises(QuotaExceeded) as refused:
        for _ in range(12):
            assert ingest.ingest(batch, ATTACKER)["accepted"] == 50
            accepted += 1
    assert refused.value.status_code == 429
    assert refused.value.details == [
        {"field": "event-bytes", "issue": f"limit {USER_QUOTAS.bytes.limit}"}
    ]
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 50
    assert accepted == 2 and len(stream.records) == 100
    assert on_stream_bytes(stream) <= USER_QUOTAS.bytes.limit
    used = {name: n for (_, name, _), n in quotas.used.items()}
    assert used == {"events": 100, "event-bytes": on_stream_bytes(stream)}  # all or none

    other = user("user-2")
    assert ingest.ingest({"events": [activity(1, user_id="user-2")]}, other)["accepted"] == 1

    app_clock.advance(minutes=1)
    assert ingest.ingest(batch, ATTACKER)["accepted"] == 50


def test_a_user_sends_at_most_the_stages_events_a_minute(app_clock: RunningClock) -> None:
    stream = ListStream()
    ingest = make_ingest(stream)
    fresh_minute(app_clock)
    limit = USER_QUOTAS.events.limit
    batch = {"events": [activity(n, user_id=ATTACKER_ID) for n in range(limit // 3)]}
    for _ in range(3):
        assert ingest.ingest(batch, ATTACKER)["accepted"] == limit // 3
    with pytest.raises(QuotaExceeded) as refused:
        ingest.ingest({"events": [activity(0, user_id=ATTACKER_ID)]}, ATTACKER)
    assert refused.value.details[0]["field"] == "events"
    assert len(stream.records) == limit


def test_machine_identities_count_bytes_too() -> None:
    from tests.unit.test_telemetry_support import machine

    quotas = InMemoryQuotas()
    ingest = make_ingest(ListStream(), quotas)
    assert ingest.ingest({"events": [metric(n) for n in range(10)]}, machine())["accepted"] == 10
    names = {name for _, name, _ in quotas.used}
    assert names == {MACHINE_QUOTAS.events.name, MACHINE_QUOTAS.bytes.name}


@pytest.mark.parametrize("stage", ["dev", "staging", "prod"])
def test_no_caller_can_fill_more_than_a_small_part_of_a_shard(stage: str) -> None:
    """The arithmetic of README's Telemetry section, on every stage's settings: a user at
    most 1 % of a shard's bytes and records a second (sustained over the minute), a machine
    identity at most 10 %; fraud alerts per user and hour a handful."""
    settings = stage_settings(stage)

    def share(events: str, size: str) -> tuple[float, float]:
        per_second = int(settings[events]) / 60, int(settings[size]) / 60
        return per_second[0] / SHARD_RECORDS_PER_SECOND, per_second[1] / SHARD_BYTES_PER_SECOND

    assert max(share("TelemetryEventsPerMinute", "TelemetryEventBytesPerMinute")) <= 0.01
    machine = share("TelemetryMachineEventsPerMinute", "TelemetryMachineEventBytesPerMinute")
    assert max(machine) <= 0.10
    assert int(settings["TelemetryEventsPerMinute"]) < int(
        settings["TelemetryMachineEventsPerMinute"]
    )
    assert 1 <= int(settings["TelemetryFraudAlertsPerUserHour"]) <= 60
    # a batch of realistic events (about 300 bytes) fits a minute's bytes
    assert int(settings["TelemetryEventBytesPerMinute"]) >= 300 * int(
        settings["TelemetryEventsPerMinute"]
    )


# --- the attack on the fraud desk ----------------------------------------------------------


def fraud(n: int, owner: str = ATTACKER_ID) -> dict[str, Any]:
    return transaction(n, amount=50_000, user=owner, event_id=f"fraud-{owner}-{n}")


def published_for(alerts: FakeAlerts, owner: str) -> list[str]:
    return [a["event_id"] for a in alerts.published if a.get("user_id") == owner]


def test_a_flood_of_large_transactions_pages_at_most_n_alerts_per_user_and_hour() -> None:
    """600 self-reported transactions over 10,000 (a minute's events) published 600 high
    fraud alerts. Now the first N of the hour go out; the rest are counted, not published;
    another user's alert and a metric's still go out; the next hour the user is alerted
    on again."""
    budget = FakeAlertBudget(limit=int(DEV["TelemetryFraudAlertsPerUserHour"]))
    processor, parts = fake_processor(alert_budget=budget)
    for start in range(0, 600, 100):
        batch = records([fraud(n) for n in range(start, start + 100)], start=start)
        assert processor.process(batch) == {"batchItemFailures": []}
    limit = budget.limit
    assert published_for(parts["alerts"], ATTACKER_ID) == [
        f"fraud-{ATTACKER_ID}-{n}" for n in range(limit)
    ]
    assert sum(m["TelemetryFraudAlerts"] for m in parts["metrics"]) == 600  # all found
    assert sum(m["TelemetryFraudAlertsSuppressed"] for m in parts["metrics"]) == 600 - limit
    assert sum(m["TelemetryAlertsPublished"] for m in parts["metrics"]) == limit
    assert len(parts["writer"].tables["serverless-app-dev-transactions"]) == 600  # all stored

    others = records([fraud(1, owner="user-2"), metric(2, value=99)], start=1000)
    processor.process(others)
    assert published_for(parts["alerts"], "user-2") == ["fraud-user-2-1"]
    assert parts["alerts"].published[-1]["type"] == "metric_anomaly"

    later = records([fraud(n) for n in range(700, 702)], start=2000, arrival=ARRIVAL + 3600)
    processor.process(later)
    assert published_for(parts["alerts"], ATTACKER_ID)[-2:] == [
        f"fraud-{ATTACKER_ID}-700",
        f"fraud-{ATTACKER_ID}-701",
    ]


def test_the_hour_is_the_records_arrival_not_the_events_claimed_time() -> None:
    """Timestamps are the client's (up to 7 days back): spreading them over many hours must
    not multiply the limit."""
    budget = FakeAlertBudget(limit=2)
    processor, parts = fake_processor(alert_budget=budget)
    spread = [{**fraud(n), "timestamp": ts(-3600 * n)} for n in range(6)]
    processor.process(records(spread))
    assert len(published_for(parts["alerts"], ATTACKER_ID)) == 2


def test_alerts_let_through_are_published_again_on_redelivery_never_suppressed() -> None:
    """At least once: the archive fails after the alerts went out, the whole batch comes
    back, and its alerts (already counted against the hour's limit, which is now reached)
    go out again rather than being taken for new ones over the limit."""
    budget = FakeAlertBudget(limit=3)
    archive = FakeArchive(fail=True)
    processor, parts = fake_processor(alert_budget=budget, archive=archive)
    batch = records([fraud(n) for n in range(5)])
    assert processor.process(batch)["batchItemFailures"]
    first = published_for(parts["alerts"], ATTACKER_ID)
    assert first == [f"fraud-{ATTACKER_ID}-{n}" for n in range(3)]
    archive.fail = False
    assert processor.process(batch) == {"batchItemFailures": []}
    assert published_for(parts["alerts"], ATTACKER_ID) == first * 2


def test_an_alert_let_through_but_not_published_goes_out_on_redelivery() -> None:
    budget = FakeAlertBudget(limit=1)
    alerts = FakeAlerts(fail={0})
    processor, _ = fake_processor(alert_budget=budget, alerts=alerts)
    batch = records([fraud(0), fraud(1)])
    result = processor.process(batch)
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [
        batch[0]["kinesis"]["sequenceNumber"]
    ]
    assert alerts.published == []
    alerts.fail = set()
    assert processor.process(batch) == {"batchItemFailures": []}
    assert published_for(alerts, ATTACKER_ID) == [f"fraud-{ATTACKER_ID}-0"]  # the second: over


def test_a_budget_that_cannot_be_read_fails_the_alerting_records_for_a_retry() -> None:
    budget = FakeAlertBudget(fail=True)
    processor, parts = fake_processor(alert_budget=budget)
    batch = records([metric(0, value=99), activity(1), fraud(2), activity(3)])
    result = processor.process(batch)
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [
        batch[2]["kinesis"]["sequenceNumber"]
    ]
    assert [a["type"] for a in parts["alerts"].published] == ["metric_anomaly"]
    budget.fail = False
    processor.process(batch)
    assert published_for(parts["alerts"], ATTACKER_ID) == [f"fraud-{ATTACKER_ID}-2"]


# --- the budget's table (moto, provisioned from infra/resources.json) ------------------------

NO_SLEEP = Backoff(sleep=lambda _: None, max_attempts=3)
WINDOW = int(ARRIVAL) - int(ARRIVAL) % 3600


class Counting:
    """The moto client, counting UpdateItem calls; `throttle` of them fail first."""

    def __init__(self, throttle: int = 0) -> None:
        self._real = boto3.client("dynamodb")
        self.updates = 0
        self.throttle = throttle

    def update_item(self, **kwargs: Any) -> Any:
        self.updates += 1
        if self.throttle:
            self.throttle -= 1
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}
            raise ClientError({"Error": error}, "UpdateItem")
        return self._real.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def quotas_table(aws: dict[str, str]) -> Iterator[str]:
    import os

    yield os.environ["QUOTAS_TABLE_NAME"]


def test_the_budget_lets_n_distinct_alerts_through_idempotently(quotas_table: str) -> None:
    from chalicelib.telemetry.tables import DynamoAlertBudget

    client = Counting()
    budget = DynamoAlertBudget(quotas_table, limit=3, client=lambda: client, backoff=NO_SLEEP)
    personal = "ada@example.com"  # an event id a client chose
    ids = [f"{personal}-{n}" for n in range(5)]
    assert budget.admit("user-ada", WINDOW, ids[:2]) == set(ids[:2])
    assert budget.admit("user-ada", WINDOW, ids) == set(ids[:3])
    assert budget.admit("user-ada", WINDOW, ids[:2]) == set(ids[:2])  # a redelivery
    assert budget.admit("user-bob", WINDOW, ids) == set(ids[:3])  # per user
    assert budget.admit("user-ada", WINDOW + 3600, ids[3:]) == set(ids[3:])  # per hour

    items = boto3.client("dynamodb").scan(TableName=quotas_table)["Items"]
    text = json.dumps(items)
    assert "user-ada" not in text and personal not in text  # digests only
    keys = {i["id"]["S"] for i in items}
    assert f"{counter_subject('user-ada')}#fraud-alerts#{WINDOW}" in keys
    [ada] = [i for i in items if i["id"]["S"].endswith(f"#{WINDOW}") and
             i["id"]["S"].startswith(counter_subject("user-ada"))]  # fmt: skip
    assert len(ada["alerts"]["SS"]) == 3
    assert int(ada["expires_at"]["N"]) == WINDOW + 3600 + 24 * 3600  # the stream's retention

    # once the hour is full, the process answers without a call
    calls = client.updates
    assert budget.admit("user-ada", WINDOW, ids) == set(ids[:3])
    assert client.updates == calls


def test_a_throttled_budget_is_retried_then_raises(quotas_table: str) -> None:
    from chalicelib.telemetry.tables import DynamoAlertBudget

    briefly = Counting(throttle=2)
    budget = DynamoAlertBudget(quotas_table, limit=3, client=lambda: briefly, backoff=NO_SLEEP)
    assert budget.admit("user-ada", WINDOW, ["a"]) == {"a"}
    stuck = Counting(throttle=3)
    budget = DynamoAlertBudget(quotas_table, limit=3, client=lambda: stuck, backoff=NO_SLEEP)
    with pytest.raises(ClientError):
        budget.admit("user-ada", WINDOW, ["b"])


def test_the_handler_publishes_at_most_n_fraud_alerts_per_user_under_its_policy(
    client: Any, aws: dict[str, str]
) -> None:
    """`process_telemetry` as deployed (its IAM policy checked by the `client` fixture): a
    user's 15 large transactions in one batch give the stage's 10 alerts on the topic."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    inbox = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]
    topic = next(
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith("-anomaly-alerts")
    )
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    batch = records([fraud(n) for n in range(15)])
    for r in batch:
        r["eventSourceARN"] = aws["TelemetryStreamArn"]
    answer = client.lambda_.invoke("process_telemetry", {"Records": batch}).payload
    assert answer == {"batchItemFailures": []}
    received = []
    while got := sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages"):
        received += got
        sqs.delete_message_batch(
            QueueUrl=inbox,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in
                     enumerate(got)],
        )  # fmt: skip
    assert len(received) == int(DEV["TelemetryFraudAlertsPerUserHour"])
