"""TransactWriteItems' ClientRequestToken in the local emulator (`local/fidelity.py`), as
DynamoDB honours it: the same token again within 10 minutes succeeds without applying the
transaction twice, and the same token with another request is refused. botocore sends one
token per call, the same on each of its retries, so a retry after an answer lost to a
timeout (`make soak`'s `timeout` fault) finds its transaction done, not its own conditions
failed (which left an image claimed and never analysed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.runtime_helpers import emulator
from tests.unit.test_fidelity_dynamodb import clients_at


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    with emulator() as url:
        client = clients_at(url)("dynamodb")
        client.create_table(
            TableName="tokens",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def claim(pk: str, version: str = "1") -> list[dict[str, Any]]:
    item = {"pk": {"S": pk}, "version": {"N": version}}
    return [{"Put": {"TableName": "tokens", "Item": item,
                     "ConditionExpression": "attribute_not_exists(pk)"}}]  # fmt: skip


def test_a_retry_with_the_same_token_succeeds_without_applying_again(dynamodb: Any) -> None:
    pk, token = uuid.uuid4().hex, uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=token)
    dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=token)
    item = dynamodb.get_item(TableName="tokens", Key={"pk": {"S": pk}})["Item"]
    assert item["version"] == {"N": "1"}


def test_another_token_or_none_meets_the_condition(dynamodb: Any) -> None:
    pk = uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=uuid.uuid4().hex)
    for token in (uuid.uuid4().hex, None):
        extra = {"ClientRequestToken": token} if token else {}
        with pytest.raises(ClientError) as refused:
            dynamodb.transact_write_items(TransactItems=claim(pk), **extra)
        assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"


def test_the_same_token_with_another_request_is_a_mismatch(dynamodb: Any) -> None:
    pk, token = uuid.uuid4().hex, uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=token)
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(TransactItems=claim(pk, "2"), ClientRequestToken=token)
    assert refused.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"


def test_a_cancelled_transaction_is_not_remembered(dynamodb: Any) -> None:
    """Only a transaction that succeeded is answered again: a retry of a cancelled one runs."""
    pk, token = uuid.uuid4().hex, uuid.uuid4().hex
    dynamodb.put_item(TableName="tokens", Item={"pk": {"S": pk}, "version": {"N": "0"}})
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=token)
    dynamodb.delete_item(TableName="tokens", Key={"pk": {"S": pk}})
    dynamodb.transact_write_items(TransactItems=claim(pk), ClientRequestToken=token)
    item = dynamodb.get_item(TableName="tokens", Key={"pk": {"S": pk}})["Item"]
    assert item["version"] == {"N": "1"}
