"""What `local/fidelity.py` makes the emulator's DynamoDB do as AWS does, checked against the
emulator in a process of its own (`python -m local.emulator`), as the local stack runs it:
writes are atomic. Concurrent conditional writes of one item never both pass their check, a
transaction checks every condition before it applies anything, and one that is cancelled or
fails changes nothing, not even what other writers wrote meanwhile. Stock moto (in process)
loses updates and erases concurrent writes; two tests show it.

Lambda invocations and state machines: test_fidelity_lambda.py.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from local.provision import FAKE_CREDENTIALS
from tests.unit.runtime_helpers import REGION, Client, emulator

#: Concurrent writers, and the units of stock they compete for.
RACERS = 30
STOCK = 10

T = TypeVar("T")


def clients_at(url: str | None) -> Client:
    """boto3 clients with fake credentials: of the emulator at `url`, or (None) of moto in
    process. One attempt per call (a retried write could apply twice), and a connection for
    every racer."""
    config = Config(max_pool_connections=RACERS + 10, retries={"total_max_attempts": 1})

    def client(service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=config,
        )

    return client


def race(count: int, attempt: Callable[[int], T]) -> list[T | Exception]:
    """`attempt(i)` for i in range(count), on threads released together; what each returned
    or raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = attempt(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racer hangs"
    return results


def error_code(outcome: Any) -> str | None:
    """The AWS error code of a racer's outcome; None for a success. Anything else raises."""
    if isinstance(outcome, ClientError):
        return str(outcome.response["Error"]["Code"])
    if isinstance(outcome, Exception):
        raise outcome
    return None


def reasons(error: ClientError) -> list[str]:
    return [reason["Code"] for reason in error.response["CancellationReasons"]]


def create_table(dynamodb: Any, name: str, stream: bool = False) -> str:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        **(
            {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}}
            if stream
            else {}
        ),
    )
    return name


def item_keys(dynamodb: Any, table: str) -> set[str]:
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return {item["pk"]["S"] for page in pages for item in page["Items"]}


def available(dynamodb: Any, table: str, sku: str = "sku-1") -> int:
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": sku}}, ConsistentRead=True)
    return int(item["Item"]["available"]["N"])


def take_one(table: str, sku: str = "sku-1") -> dict[str, Any]:
    """UpdateItem's arguments: one unit of `sku`, if one is left."""
    return {
        "TableName": table,
        "Key": {"pk": {"S": sku}},
        "UpdateExpression": "SET available = available - :one",
        "ConditionExpression": "available >= :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }


#: An attribute that makes an item large (about 20 KB): moto takes longer between checking
#: a condition on it and writing it, so that without the emulator's lock a race shows in most
#: rounds, not in one of ten.
BALLAST = {"L": [{"M": {"n": {"N": str(i)}, "s": {"S": "x" * 10}}} for i in range(500)]}


def put_stock(
    dynamodb: Any, table: str, units: int = STOCK, sku: str = "sku-1", ballast: bool = False
) -> None:
    item = {"pk": {"S": sku}, "available": {"N": str(units)}}
    dynamodb.put_item(TableName=table, Item={**item, **({"ballast": BALLAST} if ballast else {})})


# --- The emulator's DynamoDB ----------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with emulator() as url:
        yield url


@pytest.fixture
def dynamodb(emulator_url: str) -> Any:
    return clients_at(emulator_url)("dynamodb")


@pytest.fixture
def table(dynamodb: Any) -> str:
    """A new table (key `pk`) in the emulator."""
    return create_table(dynamodb, f"fidelity-{uuid.uuid4().hex[:12]}")


def test_concurrent_conditional_updates_take_each_unit_once(dynamodb: Any, table: str) -> None:
    for _ in range(3):
        put_stock(dynamodb, table, ballast=True)
        outcomes = race(RACERS, lambda _: dynamodb.update_item(**take_one(table)))
        codes = Counter(error_code(outcome) for outcome in outcomes)
        assert codes == {None: STOCK, "ConditionalCheckFailedException": RACERS - STOCK}
        assert available(dynamodb, table) == 0


def test_concurrent_transactions_take_each_unit_once_with_their_own_items(
    dynamodb: Any, table: str
) -> None:
    """Each transaction takes a unit and puts an order of its own: exactly STOCK commit, and
    exactly their orders exist."""
    for round_ in range(3):
        put_stock(dynamodb, table, ballast=True)

        def order(index: int, round_: int = round_) -> Any:
            own = {"pk": {"S": f"order-{round_}-{index}"}, "sku": {"S": "sku-1"}}
            return dynamodb.transact_write_items(
                TransactItems=[
                    {"Update": take_one(table)},
                    {
                        "Put": {
                            "TableName": table,
                            "Item": own,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )

        outcomes = race(RACERS, order)
        committed = {
            f"order-{round_}-{i}"
            for i, outcome in enumerate(outcomes)
            if error_code(outcome) is None
        }
        cancelled = [outcome for outcome in outcomes if isinstance(outcome, ClientError)]
        assert len(committed) == STOCK
        assert len(cancelled) == RACERS - STOCK
        for error in cancelled:
            assert error.response["Error"]["Code"] == "TransactionCanceledException"
            assert reasons(error) == ["ConditionalCheckFailed", "None"]
        orders = {key for key in item_keys(dynamodb, table) if key.startswith(f"order-{round_}-")}
        assert orders == committed
        assert available(dynamodb, table) == 0


def test_a_cancelled_transaction_applies_none_of_its_items(dynamodb: Any, table: str) -> None:
    """Every other item's write would succeed; one condition fails: nothing is applied, and
    the reasons come in the request's order (with the failed item's old image if asked)."""
    put_stock(dynamodb, table, units=5)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "to-delete"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "order-1"}, "status": {"S": "paid"}})
    before = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "new-item"}}}},
                {"Update": take_one(table)},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": "order-1"}},
                        "ConditionExpression": "#s = :pending",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":pending": {"S": "pending"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {"Delete": {"TableName": table, "Key": {"pk": {"S": "to-delete"}}}},
            ]
        )
    error = raised.value
    assert error.response["Error"]["Code"] == "TransactionCanceledException"
    assert reasons(error) == ["None", "None", "ConditionalCheckFailed", "None"]
    failed = error.response["CancellationReasons"][2]
    assert failed["Item"] == {"pk": {"S": "order-1"}, "status": {"S": "paid"}}
    after = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    key = lambda item: item["pk"]["S"]  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)
    assert available(dynamodb, table) == 5


def test_reasons_name_every_failed_condition_in_order(dynamodb: Any, table: str) -> None:
    put_stock(dynamodb, table, units=0, sku="empty")
    put_stock(dynamodb, table, units=3, sku="full")
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Update": take_one(table, "empty")},
                {"Update": take_one(table, "full")},
                {"Update": take_one(table, "missing")},  # no item: its condition fails
            ]
        )
    assert reasons(raised.value) == ["ConditionalCheckFailed", "None", "ConditionalCheckFailed"]
    assert available(dynamodb, table, "full") == 3
    assert item_keys(dynamodb, table) == {"empty", "full"}


def test_a_transaction_cannot_touch_one_item_twice(dynamodb: Any, table: str) -> None:
    put_stock(dynamodb, table)
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "other"}}}},
                {"Update": take_one(table)},
                {"ConditionCheck": {"TableName": table, "Key": {"pk": {"S": "sku-1"}},
                                    "ConditionExpression": "attribute_exists(pk)"}},
            ]
        )  # fmt: skip
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "multiple operations on one item" in raised.value.response["Error"]["Message"]
    assert item_keys(dynamodb, table) == {"sku-1"}
    assert available(dynamodb, table) == STOCK


def test_a_transaction_failing_as_it_applies_undoes_its_own_items(
    dynamodb: Any, table: str
) -> None:
    """Every condition holds, but the last update cannot be applied (arithmetic on an
    attribute the item lacks): what the transaction had applied is undone, the rest stays."""
    put_stock(dynamodb, table)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "counter"}, "label": {"S": "x"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "bystander"}, "n": {"N": "7"}})
    before = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Update": take_one(table)},
                {"Put": {"TableName": table, "Item": {"pk": {"S": "its-own"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "counter"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    after = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    key = lambda item: item["pk"]["S"]  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)


def test_cancelled_and_failing_transactions_never_undo_other_writers(
    dynamodb: Any, table: str
) -> None:
    """Transactions that are cancelled, or fail as they apply, race plain writers: every
    plain write stays, and none of the transactions' items appear."""
    for index in range(20):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"base-{index}"}})
    writers, rounds = RACERS // 2, 5

    def transactions(index: int) -> list[str]:
        codes = []
        for attempt in range(rounds):
            own = {"Put": {"TableName": table, "Item": {"pk": {"S": f"tx-{index}-{attempt}"}}}}
            if attempt % 2:  # cancelled: a condition fails
                last = {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": "base-0"}},
                        "ConditionExpression": "attribute_exists(nothing)",
                    }
                }
            else:  # fails as it applies
                last = {"Update": {"TableName": table, "Key": {"pk": {"S": f"base-{index}"}},
                                   "UpdateExpression": "SET n = n + :one",
                                   "ExpressionAttributeValues": {":one": {"N": "1"}}}}  # fmt: skip
            try:
                dynamodb.transact_write_items(TransactItems=[own, last])
                codes.append("committed")
            except ClientError as error:
                codes.append(error.response["Error"]["Code"])
        return codes

    def write(index: int) -> list[str]:
        for attempt in range(rounds):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"w-{index}-{attempt}"}})
        return []

    for _ in range(3):
        outcomes = race(RACERS, lambda i: write(i) if i < writers else transactions(i))
        codes: Counter[str] = Counter()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            codes.update(outcome)
        assert codes == {
            "TransactionCanceledException": (RACERS - writers) * (rounds // 2),
            "ValidationException": (RACERS - writers) * (rounds - rounds // 2),
        }
        keys = item_keys(dynamodb, table)
        assert {f"w-{i}-{a}" for i in range(writers) for a in range(rounds)} <= keys
        assert not {k for k in keys if k.startswith("tx-")}
        assert {f"base-{i}" for i in range(20)} <= keys
        for key in keys:
            dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})
        for index in range(20):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"base-{index}"}})


def test_concurrent_conditional_puts_and_deletes_have_one_winner(dynamodb: Any, table: str) -> None:
    """RACERS claim one key (`attribute_not_exists`), then release it (`attribute_exists`):
    one claim and one release succeed, each round."""
    for round_ in range(3):
        key = {"pk": {"S": f"claim-{round_}"}}

        def claim(index: int, key: dict[str, Any] = key) -> Any:
            return dynamodb.put_item(
                TableName=table,
                Item={**key, "owner": {"N": str(index)}, "ballast": BALLAST},
                ConditionExpression="attribute_not_exists(pk)",
            )

        def release(_: int, key: dict[str, Any] = key) -> Any:
            return dynamodb.delete_item(
                TableName=table,
                Key=key,
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )

        outcomes = race(RACERS, claim)
        winners = [i for i, outcome in enumerate(outcomes) if error_code(outcome) is None]
        assert len(winners) == 1
        item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
        assert item["owner"]["N"] == str(winners[0])
        outcomes = race(RACERS, release)
        released = [outcome for outcome in outcomes if error_code(outcome) is None]
        assert len(released) == 1
        assert released[0]["Attributes"]["owner"]["N"] == str(winners[0])
        assert item_keys(dynamodb, table) == set()


def test_return_values_are_the_item_as_this_very_write_found_it(dynamodb: Any, table: str) -> None:
    """In DynamoDB, `ADD n :one` with ReturnValues=UPDATED_OLD answers each caller a
    different old value: the update and its answer are one step."""
    counters = 3

    def count(index: int) -> list[int]:
        old = []
        for _ in range(counters):
            answer = dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": "counter"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_OLD",
            )
            old.append(int(answer["Attributes"]["n"]["N"]))
        return old

    for _ in range(20):  # a stale answer shows in about half the rounds
        dynamodb.put_item(TableName=table, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
        outcomes = race(RACERS, count)
        answered = sorted(n for outcome in outcomes for n in outcome)  # type: ignore[union-attr]
        assert answered == list(range(RACERS * counters)), Counter(answered).most_common(3)


def test_a_failed_transaction_leaves_nothing_in_the_tables_stream(dynamodb: Any) -> None:
    name = create_table(dynamodb, f"fidelity-stream-{uuid.uuid4().hex[:8]}", stream=True)
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "counter"}, "label": {"S": "x"}})
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": {"pk": {"S": "never-written"}}}},
                {"Update": {"TableName": name, "Key": {"pk": {"S": "counter"}},
                            "UpdateExpression": "SET n = n + :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            ]
        )  # fmt: skip
    assert item_keys(dynamodb, name) == {"counter"}
    streams = boto3.client(
        "dynamodbstreams",
        region_name=REGION,
        endpoint_url=dynamodb.meta.endpoint_url,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    arn = dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [
        ("INSERT", "counter")
    ]


# --- Stock moto, for comparison (informative) --------------------------------------------


@contextlib.contextmanager
def stock_moto() -> Iterator[Any]:
    """moto in this process, without the emulator's patches, its threads switching often (so
    that a race shows in a few rounds); a DynamoDB client of it."""
    from moto.dynamodb.models import DynamoDBBackend

    assert not getattr(DynamoDBBackend, "_writes_are_atomic", False), "patched in process"
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with mock_aws():
            yield clients_at(None)("dynamodb")
    finally:
        sys.setswitchinterval(interval)


def test_stock_moto_lets_concurrent_conditional_updates_both_pass() -> None:
    """Informative: what the lock is for. moto checks a condition and writes as two steps,
    so more than STOCK updates can pass `available >= 1`; the item then says 0 all the same
    (each wrote what it computed from the item it read). Seen in about 9 rounds of 10."""
    with stock_moto() as dynamodb:
        table = create_table(dynamodb, "stock")
        for _ in range(10):
            put_stock(dynamodb, table)
            outcomes = race(RACERS, lambda _: dynamodb.update_item(**take_one(table)))
            passed = sum(error_code(outcome) is None for outcome in outcomes)
            if passed != STOCK - available(dynamodb, table):
                return
    pytest.fail("stock moto kept every update in 10 rounds: is the DynamoDB lock still needed?")


def test_stock_moto_rollback_erases_concurrent_writes() -> None:
    """Informative: what the transaction rewrite is for. moto undoes a cancelled transaction
    by restoring deep copies of whole tables, taken when it began: writes other callers made
    meanwhile vanish (or the copy fails outright: the table changed while it was copied)."""
    with stock_moto() as dynamodb:
        table = create_table(dynamodb, "stock")
        for index in range(20):
            dynamodb.put_item(TableName=table, Item={"pk": {"S": f"base-{index}"}})
        for round_ in range(10):

            def act(index: int, round_: int = round_) -> None:
                for attempt in range(5):
                    key = f"{round_}-{index}-{attempt}"
                    if index % 2:
                        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"w-{key}"}})
                        continue
                    try:
                        dynamodb.transact_write_items(TransactItems=[
                            {"Put": {"TableName": table, "Item": {"pk": {"S": f"tx-{key}"}}}},
                            {"ConditionCheck": {"TableName": table,
                                                "Key": {"pk": {"S": "base-0"}},
                                                "ConditionExpression": "attribute_exists(nope)"}},
                        ])  # fmt: skip
                    except ClientError as error:
                        if error_code(error) != "TransactionCanceledException":
                            raise

            outcomes = race(20, act)
            crashed = []  # moto's deep copy of a table another thread writes to
            for outcome in outcomes:
                if isinstance(outcome, RuntimeError) and "changed size" in str(outcome):
                    crashed.append(outcome)
                elif isinstance(outcome, Exception):
                    raise outcome
            keys = item_keys(dynamodb, table)
            written = {f"w-{round_}-{i}-{a}" for i in range(1, 20, 2) for a in range(5)}
            if crashed or written - keys or any(k.startswith("tx-") for k in keys):
                return
    pytest.fail("stock moto's rollback erased nothing in 10 rounds: is the rewrite still needed?")
