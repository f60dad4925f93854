"""A user's telemetry exported (`telemetry_owner_export()`) and erased
(`telemetry_owner_data()`), against moto provisioned from infra/resources.json; every AWS call
checked against the policy of the function that makes it (`erase_users` erases, the API only
exports)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import from_item
from chalicelib.telemetry import encoding
from chalicelib.telemetry.model import validate_event
from chalicelib.telemetry.owner_data import DynamoTelemetryOwnerData
from chalicelib.telemetry.pseudonyms import DynamoPseudonyms, user_digest
from chalicelib.telemetry.tables import DynamoItemWriter
from tests.unit.test_telemetry_support import (
    NOW,
    TABLES,
    activity,
    metric,
    records,
    stamped,
    transaction,
)

ALICE = "user-alice"
BOB = "user-bob"
ACTIVITIES, TRANSACTIONS = TABLES["activities"], TABLES["transactions"]
PSEUDONYMS = "serverless-app-dev-telemetry-pseudonyms"


def owner_data(client: Any = None, backoff: Backoff | None = None) -> DynamoTelemetryOwnerData:
    """The erasure's object on `client` (the app's by default)."""
    if client is None:
        lake = DynamoPseudonyms(PSEUDONYMS, backoff=backoff)
        return DynamoTelemetryOwnerData(ACTIVITIES, TRANSACTIONS, lake, backoff=backoff)
    lake = DynamoPseudonyms(PSEUDONYMS, client=lambda: client, backoff=backoff)
    return DynamoTelemetryOwnerData(
        ACTIVITIES, TRANSACTIONS, lake, client=lambda: client, backoff=backoff
    )


@pytest.fixture
def calls(aws: dict[str, str]) -> Iterator[Any]:
    """Records the app's AWS calls, per function, and checks them against its policy."""
    from chalicelib.core import aws as app_aws
    from tests.unit.iam_calls import Recorder, denied

    recorder = Recorder()
    events = app_aws.session().events
    events.register("before-parameter-build", recorder.before_parameter_build)
    app_aws.reset_clients()
    yield recorder
    events.unregister("before-parameter-build", recorder.before_parameter_build)
    region = app_aws.session().region_name or os.environ["AWS_DEFAULT_REGION"]
    refused = sorted(set(denied(recorder, region, "123456789012")))
    assert not refused, f"the function's policy does not allow: {refused}"


def store(*events: dict[str, Any]) -> None:
    writer = DynamoItemWriter(lambda: boto3.client("dynamodb"))
    by_table: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        table, item = encoding.table_and_item(validate_event(stamped(event), NOW, stamped=True))
        by_table.setdefault(TABLES[table], []).append(item)
    for table, items in by_table.items():
        assert writer.put_all(table, items).failed == []


def everything(table: str) -> list[dict[str, Any]]:
    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=table)
    return [from_item(item) for page in pages for item in page["Items"]]


def run_as(recorder: Any, function: str, call: Any) -> Any:
    recorder.function = function
    try:
        return call()
    finally:
        recorder.function = None


def test_export_then_erase(calls: Any) -> None:
    from chalicelib.telemetry import telemetry_owner_data, telemetry_owner_export

    store(
        activity(1, user_id=ALICE, ip_address="203.0.113.9"),
        activity(2, user_id=ALICE),
        activity(3, user_id=BOB),
        transaction(4, user=ALICE, merchant="Dr. Ada's clinic", category="health"),
        transaction(5, user=ALICE, status="completed"),
        transaction(4, user=BOB),  # the same id, Bob's own
    )
    owner_data = telemetry_owner_data()
    exported = run_as(calls, "api_handler", lambda: telemetry_owner_export().export(ALICE))
    json.dumps(exported)  # JSON-ready
    assert [a["event_id"] for a in exported["activities"]] == ["act-2", "act-1"]  # oldest first
    assert exported["activities"][1]["details"] == {"path": "/p/1", "ms": 12.5}
    assert exported["activities"][1]["ip_address"] == "203.0.113.9"
    assert [t["transaction_id"] for t in exported["transactions"]] == ["t-5", "t-4"]
    assert exported["transactions"][1]["merchant"] == "Dr. Ada's clinic"
    assert all("pk" not in row and "sk" not in row for rows in exported.values() for row in rows)

    counts = run_as(calls, "erase_users", lambda: owner_data.erase(ALICE))
    assert counts == {"activities": 2, "transactions": 2, "lake_identities": 0}

    assert [a["user_id"] for a in everything(ACTIVITIES)] == [BOB]
    transactions = everything(TRANSACTIONS)
    assert len(transactions) == 3  # financial records stay
    kept = [t for t in transactions if t["user_id"] != BOB]
    [pseudonym] = {t["user_id"] for t in kept}  # one per erasure: still countable together
    assert pseudonym.startswith("deleted-") and ALICE not in pseudonym
    for row in kept:
        assert ALICE not in json.dumps(row)
        assert row["pk"] == f"TXN#{pseudonym}#{row['transaction_id']}"
        assert not {"merchant", "category", "event_id"} & set(row)
        assert {"amount", "currency", "occurred_at", "status", "pseudonymised_at"} <= set(row)
    # the client's transaction ids are gone too (key included): random ids, one each
    assert not {"t-4", "t-5"} & {t["transaction_id"] for t in kept}
    assert "t-4" not in json.dumps(kept) and "t-5" not in json.dumps(kept)
    assert len({t["transaction_id"] for t in kept}) == 2
    assert sorted((t["occurred_at"], t["amount"]) for t in kept) == sorted(
        (t["occurred_at"], t["amount"]) for t in exported["transactions"]
    )
    [bobs] = [t for t in transactions if t["user_id"] == BOB]
    assert bobs["pk"] == f"TXN#{BOB}#t-4" and "event_id" in bobs  # untouched

    # Idempotent: nothing of Alice is found again.
    assert run_as(calls, "erase_users", lambda: owner_data.erase(ALICE)) == {
        "activities": 0,
        "transactions": 0,
        "lake_identities": 0,
    }
    assert everything(TRANSACTIONS) == transactions
    assert run_as(calls, "api_handler", lambda: owner_data.export(ALICE)) == {
        "activities": [],
        "transactions": [],
    }


class Paged:
    """The moto client with every Query cut to `limit` items, as DynamoDB cuts at 1 MB."""

    def __init__(self, limit: int) -> None:
        self._real = boto3.client("dynamodb")
        self._limit = limit
        self.queries = 0

    def query(self, **request: Any) -> Any:
        self.queries += 1
        return self._real.query(**request, Limit=self._limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_everything_is_paged_through(aws: dict[str, str]) -> None:
    store(*[activity(n, user_id=ALICE, event_id=f"a-{n}") for n in range(60)])
    store(*[transaction(n, user=ALICE) for n in range(45)])
    client = Paged(limit=7)
    erasure = owner_data(client)
    exported = erasure.export(ALICE)
    assert (len(exported["activities"]), len(exported["transactions"])) == (60, 45)
    assert client.queries >= 60 // 7 + 45 // 7
    assert erasure.erase(ALICE) == {"activities": 60, "transactions": 45, "lake_identities": 0}
    assert everything(ACTIVITIES) == []
    assert ALICE not in json.dumps(everything(TRANSACTIONS))


def test_a_megabyte_of_activities_is_paged_through(aws: dict[str, str]) -> None:
    """Over DynamoDB's (and moto's) 1 MB a Query page: ~4 KB details each."""
    big = {"page": "x" * 4000}
    store(*[activity(n, user_id=ALICE, event_id=f"a-{n}", details=big) for n in range(300)])
    erasure = owner_data()
    assert len(erasure.export(ALICE)["activities"]) == 300
    assert erasure.erase(ALICE)["activities"] == 300
    assert everything(ACTIVITIES) == []


def throttled(operation: str) -> ClientError:
    error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
    return ClientError({"Error": error}, operation)


class Throttling:
    """The moto client; each operation named is throttled `times` times first."""

    def __init__(self, times: int, *operations: str) -> None:
        self._real = boto3.client("dynamodb")
        self._left = dict.fromkeys(operations, times)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._real, name)
        if name not in self._left:
            return call

        def maybe_throttled(**kwargs: Any) -> Any:
            if self._left[name] > 0:
                self._left[name] -= 1
                raise throttled(name)
            return call(**kwargs)

        return maybe_throttled


OPERATIONS = ("query", "batch_get_item", "batch_write_item", "transact_write_items", "put_item")


def test_throttling_is_retried_a_bounded_number_of_times(aws: dict[str, str]) -> None:
    store(activity(1, user_id=ALICE), transaction(2, user=ALICE))
    no_sleep = Backoff(sleep=lambda _: None, max_attempts=4)
    briefly = Throttling(3, *OPERATIONS)
    erasure = owner_data(briefly, no_sleep)
    assert erasure.erase(ALICE) == {"activities": 1, "transactions": 1, "lake_identities": 0}

    store(transaction(3, user=ALICE))
    for operation in ("query", "transact_write_items"):
        stuck = owner_data(Throttling(4, operation), no_sleep)
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            stuck.erase(ALICE)  # fails, so the erasure's message comes back
    assert erasure.erase(ALICE) == {"activities": 0, "transactions": 1, "lake_identities": 0}
    # the lake's tombstone (PutItem) stuck: the pass fails too, and the next one ends it
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        owner_data(Throttling(4, "put_item"), no_sleep).erase(ALICE)
    assert erasure.erase(ALICE) == {"activities": 0, "transactions": 0, "lake_identities": 0}


def test_a_transaction_erased_meanwhile_is_neither_duplicated_nor_counted(
    aws: dict[str, str],
) -> None:
    """Two passes at once: the one that loses the race finds the item no longer Alice's."""
    store(transaction(1, user=ALICE))
    real = boto3.client("dynamodb")

    class Racing:
        def transact_write_items(self, **kwargs: Any) -> Any:
            owner_data().erase(ALICE)  # the other pass
            return real.transact_write_items(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    racing = Racing()
    assert owner_data(racing).erase(ALICE) == {
        "activities": 0,
        "transactions": 0,
        "lake_identities": 0,
    }
    [kept] = everything(TRANSACTIONS)
    assert kept["user_id"].startswith("deleted-")


def test_an_erased_transaction_keeps_no_id_the_client_chose(aws: dict[str, str]) -> None:
    """A transaction id is the client's: it may hold an address, or match the payment
    provider's record of the person's payment. Erased, each transaction gets a random id
    (its key too), so even two of the user's items with the same id (one stored before ids
    were per owner) stay two."""
    chosen = "ada.lovelace@example.com"
    store(transaction(1, user=ALICE, transaction_id=chosen, amount=10))
    legacy = {"pk": {"S": f"TXN#{chosen}"}, "user_id": {"S": ALICE}, "amount": {"N": "20"},
              "transaction_id": {"S": chosen}, "currency": {"S": "EUR"},
              "occurred_at": {"S": "2026-11-26T11:00:00.000000Z"}}  # fmt: skip
    boto3.client("dynamodb").put_item(TableName=TRANSACTIONS, Item=legacy)
    assert owner_data().erase(ALICE)["transactions"] == 2
    kept = everything(TRANSACTIONS)
    assert len(kept) == 2 and chosen not in json.dumps(kept)
    assert sorted(t["amount"] for t in kept) == [10, 20]
    ids = {t["transaction_id"] for t in kept}
    assert len(ids) == 2 and all(t["pk"].endswith("#" + t["transaction_id"]) for t in kept)
    assert all(len(i) >= 32 and "#" not in i for i in ids)


def test_the_apis_export_reads_but_may_not_erase(aws: dict[str, str]) -> None:
    """The API's function exports (`telemetry_owner_export()`); erasing is the erasure's.
    Its policy refuses every write the erasure makes, were the API to try one."""
    from chalicelib.core import aws as app_aws
    from chalicelib.telemetry import telemetry_owner_data, telemetry_owner_export
    from tests.unit.iam_calls import Recorder, denied

    store(activity(1, user_id=ALICE), transaction(2, user=ALICE))
    recorder = Recorder()
    events = app_aws.session().events
    events.register("before-parameter-build", recorder.before_parameter_build)
    app_aws.reset_clients()
    try:
        recorder.function = "api_handler"
        assert len(telemetry_owner_export().export(ALICE)["transactions"]) == 1
        region = app_aws.session().region_name or os.environ["AWS_DEFAULT_REGION"]
        assert list(denied(recorder, region, "123456789012")) == []  # the export: allowed
        telemetry_owner_data().erase(ALICE)  # moto does not check IAM: the policy does
    finally:
        events.unregister("before-parameter-build", recorder.before_parameter_build)
    refused = " ".join(denied(recorder, region, "123456789012"))
    assert (
        f"dynamodb:BatchWriteItem on arn:aws:dynamodb:{region}:123456789012:table/{ACTIVITIES}"
        in refused
    )
    for action, table in (
        ("PutItem", TRANSACTIONS),
        ("DeleteItem", TRANSACTIONS),
        ("PutItem", PSEUDONYMS),
    ):
        assert (
            f"dynamodb:{action} on arn:aws:dynamodb:{region}:123456789012:table/{table}" in refused
        )


def lake_lines() -> list[dict[str, Any]]:
    s3 = boto3.client("s3")
    bucket = os.environ["DATA_LAKE_BUCKET_NAME"]
    lines = []
    for listed in s3.list_objects_v2(Bucket=bucket, Prefix="telemetry/").get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
        lines += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return lines


def test_the_lake_names_nobody_and_the_erasure_unlinks_its_pseudonym(calls: Any) -> None:
    """The processor archives a user's events under a pseudonym, with the identifiers the
    client chose as digests and its free text left out; the erasure forgets the pseudonym, and
    a late event of the erased user makes no new mapping."""
    from chalicelib.telemetry import telemetry_owner_data, telemetry_processor

    email = "ada.lovelace@example.com"  # anything a client may put in an id or free text
    events = [
        activity(1, user_id=ALICE, event_id=f"{email}-1", session_id=email,
                 ip_address="203.0.113.9", details={"name": "Ada Lovelace"}),
        transaction(2, user=ALICE, event_id=f"{email}-2", transaction_id=f"{email}-t",
                    merchant="Lovelace bakery", category="ada"),
        activity(3, user_id=BOB, session_id=email),
        metric(4),
    ]  # fmt: skip
    process = telemetry_processor().process
    assert run_as(calls, "process_telemetry", lambda: process(records(events))) == {
        "batchItemFailures": []
    }
    lines = lake_lines()
    assert len(lines) == 4
    text = json.dumps(lines).casefold()
    for needle in (ALICE, BOB, email, "lovelace", "example", "203.0.113.9"):
        assert needle not in text, needle
    assert not {"details", "ip_address", "merchant", "category"} & {
        k for line in lines for k in line
    }
    [mapping] = [i for i in everything(PSEUDONYMS) if i["user_digest"] == user_digest(ALICE)]
    pseudonym = mapping["pseudonym"]
    alices = [line for line in lines if line.get("user_id") == pseudonym]
    assert [line["event_type"] for line in alices] == ["user_activity", "transaction"]
    [bobs] = [
        line for line in lines if line.get("event_type") == "user_activity" and line not in alices
    ]
    assert bobs["user_id"] != pseudonym and bobs["session_id"] != alices[0]["session_id"]
    assert [line for line in lines if line["event_type"] == "system_metric"] == [
        validate_event(metric(4), NOW)  # a metric: as it was sent, normalised
    ]
    assert [a["user_id"] for a in everything(ACTIVITIES) if a["pk"] == "USER#" + ALICE] == [ALICE]

    erased = run_as(calls, "erase_users", lambda: telemetry_owner_data().erase(ALICE))
    assert erased == {"activities": 1, "transactions": 1, "lake_identities": 1}
    client = boto3.client("dynamodb")
    for table in client.list_tables()["TableNames"]:
        items = client.scan(TableName=table)["Items"]
        assert pseudonym not in json.dumps(items, default=repr), table
        # nor the transaction id she chose (it held her address), kept transaction included
        assert f"{email}-t" not in json.dumps(items, default=repr), table
    [tombstone] = [i for i in everything(PSEUDONYMS) if i["user_digest"] == user_digest(ALICE)]
    assert set(tombstone) == {"user_digest", "erased_at", "expires_at"}
    assert NOW.timestamp() < tombstone["expires_at"] <= NOW.timestamp() + 31 * 86400

    # Late events of Alice (a token still valid), processed after the erasure's last pass,
    # in another process: dropped, neither stored (ip address, details, her id), nor
    # archived, nor mapped anew.
    telemetry_processor.cache_clear()
    late = records([
        activity(5, user_id=ALICE, event_id="late", ip_address="198.51.100.7",
                 details={"name": "Ada Lovelace"}),
        transaction(6, user=ALICE, transaction_id="late-t", amount=20_000),
        activity(7, user_id=BOB, event_id="bobs"),
    ], start=10)  # fmt: skip
    assert run_as(calls, "process_telemetry", lambda: telemetry_processor().process(late)) == {
        "batchItemFailures": []
    }
    for table in client.list_tables()["TableNames"]:
        text = json.dumps(client.scan(TableName=table)["Items"], default=repr)
        for needle in (ALICE, "198.51.100.7", "Lovelace", "late-t"):
            assert needle not in text, (table, needle)
    [line] = [line for line in lake_lines() if line not in lines]
    assert line["user_id"] == bobs["user_id"]  # Bob's event only
    assert [i for i in everything(PSEUDONYMS) if i["user_digest"] == user_digest(ALICE)] == [
        tombstone
    ]
    assert (
        run_as(calls, "erase_users", lambda: telemetry_owner_data().erase(ALICE))["lake_identities"]
        == 0
    )
