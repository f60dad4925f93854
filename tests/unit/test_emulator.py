"""The local emulator's speed-ups must not change what moto answers: the same DynamoDB calls
against the emulator process and against stock moto in process give the same results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.emulator import _is_wire_attribute_value
from tests.unit.runtime_helpers import emulator

ITEM: dict[str, Any] = {
    "pk": {"S": "USER#1"},
    "sk": {"S": "profile"},
    "text": {"S": "héllo"},
    "count": {"N": "42.5"},
    "blob": {"B": b"\x00\xffbinary"},
    "strings": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [b"x", b"y"]},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"BOOL": True}}}]}}},
}
TABLE = "emulator-equivalence"


def exercise(client: Any) -> list[Any]:
    """A round of calls whose answers hold AttributeValues in every position."""
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )
    key = {"pk": ITEM["pk"], "sk": ITEM["sk"]}
    client.put_item(TableName=TABLE, Item=ITEM)
    client.put_item(TableName=TABLE, Item={**ITEM, "sk": {"S": "second"}})
    answers = [
        client.get_item(TableName=TABLE, Key=key),
        client.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": ITEM["pk"]},
            Limit=1,
        ),
        client.scan(TableName=TABLE),
        client.update_item(
            TableName=TABLE,
            Key=key,
            UpdateExpression="SET #c = #c + :one",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        ),
        client.batch_get_item(RequestItems={TABLE: {"Keys": [key]}}),
        client.transact_get_items(TransactItems=[{"Get": {"TableName": TABLE, "Key": key}}]),
        client.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD"),
    ]
    for answer in answers:
        answer.pop("ResponseMetadata", None)
    return answers


@pytest.fixture
def emulator_url() -> Iterator[str]:
    with emulator() as url:
        yield url


def test_emulator_answers_like_stock_moto(stage_env: dict[str, str], emulator_url: str) -> None:
    with mock_aws():
        stock = exercise(boto3.client("dynamodb"))
    tuned = exercise(boto3.client("dynamodb", endpoint_url=emulator_url))
    assert tuned == stock
    assert tuned[0]["Item"]["blob"] == {"B": b"\x00\xffbinary"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"S": "x"}, True),
        ({"N": "1"}, True),
        ({"N": 1}, False),
        ({"N": Decimal(1)}, False),
        ({"B": b"x"}, False),
        ({"SS": ["a"]}, True),
        ({"BS": [b"a"]}, False),
        ({"M": {"a": {"L": [{"BOOL": True}, {"NULL": True}]}}}, True),
        ({"M": {"a": {"B": b"x"}}}, False),
        ({"S": "x", "N": "1"}, False),
        ({"X": "x"}, False),
        ("S", False),
    ],
)
def test_only_wire_ready_values_pass_through(value: object, expected: bool) -> None:
    assert _is_wire_attribute_value(value) is expected


def test_pass_through_check_is_total(stage_env: dict[str, str]) -> None:
    check: Callable[[object], bool] = _is_wire_attribute_value
    assert check({"L": []}) and check({"M": {}}) and not check({})
