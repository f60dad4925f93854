"""Deleting and exporting a user through the app's own functions (Chalice's test client,
moto provisioned like the stack; every AWS call checked against the function's policy):
`DELETE /users/{id}`, the stream's `user-deleted`, the erasure queue's `erase_users`, and
`GET /users/{id}/export`."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import boto3
import pytest

from chalicelib.core import clock
from chalicelib.core.dynamo import from_item
from chalicelib.core.sqs_batch import BatchItemsFailed
from chalicelib.orders import model
from chalicelib.orders.records import DynamoOrders
from local.events.sqs import lambda_record
from tests.unit.orders_aws import ORDERS, new_order
from tests.unit.streams import stream_record, user_item

REGION = "us-east-1"


def receive(url: str) -> list[dict[str, Any]]:
    return (
        boto3.client("sqs")
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        .get("Messages", [])
    )


def deliver(client: Any, url: str) -> list[dict[str, Any]]:
    """One poll of the erasure queue, handed to `erase_users` as Lambda would; the bodies."""
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    messages = receive(url)
    for message in messages:
        event = {"Records": [lambda_record(message, arn["QueueArn"], REGION)]}
        assert client.lambda_.invoke("erase_users", event).payload is None
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(m["Body"]) for m in messages]


def cognito_user_exists(aws: dict[str, str], user_id: str) -> bool:
    idp = boto3.client("cognito-idp")
    try:
        idp.admin_get_user(UserPoolId=aws["UserPoolId"], Username=user_id)
    except idp.exceptions.UserNotFoundException:
        return False
    return True


def stored_order(order_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=ORDERS, Key={"pk": {"S": f"ORDER#{order_id}"}}, ConsistentRead=True
    )["Item"]
    return from_item(item)


def test_delete_closes_the_account_and_the_erasure_removes_the_rest(
    api: Any, accounts: Any, client: Any, aws: dict[str, str]
) -> None:
    user, token = accounts.register(name="Ada Lovelace", phone="+14155550123")
    user_id = user["user_id"]
    order = new_order(user_id)
    DynamoOrders(ORDERS).create(order, ("checkout-1", "fingerprint"))
    DynamoOrders(ORDERS).update(order["order_id"], status=model.COMPLETED)
    stored_user = api.get(f"/users/{user_id}").json_body

    assert api.as_(token).delete(f"/users/{user_id}").status_code == 204
    assert not cognito_user_exists(aws, user_id)  # nobody signs in as the user any more
    assert api.get(f"/users/{user_id}").status_code == 404

    # The removal on the stream: user-deleted, to the erasure queue.
    removed = stream_record("REMOVE", old=user_item({**stored_user, "version": 1}))
    removed["dynamodb"]["ApproximateCreationDateTime"] = clock.now().timestamp()
    assert client.lambda_.invoke("publish_user_events", {"Records": [removed]}).payload is None
    [event] = deliver(client, aws["UserErasureQueueUrl"])
    assert event["event_type"] == "user-deleted" and event["user_id"] == user_id
    # Handed on at once with the user's random pseudonym: the first pass.
    [first_pass] = deliver(client, aws["UserErasureQueueUrl"])
    same = ("event_type", "event_id", "user_id", "deleted_at")
    assert first_pass == {
        **{k: event[k] for k in same},
        "pass": 1,
        "pseudonym": first_pass["pseudonym"],
    }
    kept = stored_order(order["order_id"])
    assert kept["owner_id"] == f"erased-{first_pass['pseudonym']}"
    assert kept["shipping_address"] == {"country": "DE"}
    assert user_id not in json.dumps(kept)

    # The pass sent its follow-up (tokens issued before the deletion are valid for a while).
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws["UserErasureQueueUrl"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 1


def erase_until_idle(client: Any, aws: dict[str, str], user: dict[str, Any]) -> None:
    """The user's removal announced, then every pass the erasure queue has ready run."""
    removed = stream_record("REMOVE", old=user_item({**user, "version": 1}))
    removed["dynamodb"]["ApproximateCreationDateTime"] = clock.now().timestamp()
    assert client.lambda_.invoke("publish_user_events", {"Records": [removed]}).payload is None
    for _ in range(5):  # the follow-ups 15 minutes away are not ready: they wait
        if not deliver(client, aws["UserErasureQueueUrl"]):
            return
    raise AssertionError("the erasure does not settle")


def test_erased_orders_cannot_be_found_again_from_the_users_id(
    client: Any, aws: dict[str, str]
) -> None:
    """The attack: someone who has the id of an erased user (a log line, an old object of
    the data lake) recomputes the orders' pseudonym from it and queries the owner index.
    The pseudonym is random: neither the code's old derivation nor a plain digest finds
    the orders (lines, amounts, dates) again."""
    user_id = str(uuid.uuid4())
    orders = [new_order(user_id) for _ in range(2)]
    for order in orders:
        DynamoOrders(ORDERS).create(order, None)
        DynamoOrders(ORDERS).update(order["order_id"], status=model.COMPLETED)
    profile = {"user_id": user_id, "email": "ada@example.com", "name": "Ada",
               "created_at": "2026-11-26T00:00:01.000000Z"}  # fmt: skip
    erase_until_idle(client, aws, profile)  # deleted (the account: other tests)

    kept = [stored_order(o["order_id"])["owner_id"] for o in orders]
    assert kept[0] == kept[1] and kept[0].startswith("erased-")  # still countable together
    candidates = {
        "erased-" + hashlib.sha256(f"order-owner:{user_id}".encode()).hexdigest()[:32],
        *("erased-" + hashlib.new(name, user_id.encode()).hexdigest()[:32]
          for name in ("sha256", "sha1", "md5")),
    }  # fmt: skip
    dynamodb = boto3.client("dynamodb")
    for guess in candidates:
        found = dynamodb.query(
            TableName=ORDERS,
            IndexName="by-owner",
            KeyConditionExpression="owner_id = :owner",
            ExpressionAttributeValues={":owner": {"S": guess}},
        )["Items"]
        assert found == [], f"the erased orders are found again as {guess}"
    assert kept[0] not in candidates


def test_a_message_the_erasure_cannot_take_is_retried_then_dead_lettered(
    client: Any, aws: dict[str, str]
) -> None:
    sqs = boto3.client("sqs")
    url = aws["UserErasureQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sqs.send_message(QueueUrl=url, MessageBody='{"event_type": "user-deleted"}')
    failures = 0
    while messages := receive(url):
        event = {"Records": [lambda_record(messages[0], arn["QueueArn"], REGION)]}
        with pytest.raises(BatchItemsFailed):  # raised: Lambda keeps the message
            client.lambda_.invoke("erase_users", event)
        failures += 1
    assert failures == 5  # the queue's maxReceiveCount
    [dead] = receive(aws["UserErasureDeadLetterQueueUrl"])
    assert dead["Body"] == '{"event_type": "user-deleted"}'


def test_the_export_is_an_attachment_for_the_owner_or_an_admin(
    api: Any, accounts: Any, aws: dict[str, str]
) -> None:
    user, token = accounts.register(name="Ada Lovelace", phone="+14155550123", bio="Notes")
    user_id = user["user_id"]
    order = new_order(user_id)
    DynamoOrders(ORDERS).create(order, None)

    answer = api.as_(token).get(f"/users/{user_id}/export")
    assert answer.status_code == 200, answer.body
    assert answer.headers["Content-Disposition"] == (
        f'attachment; filename="user-{user_id}-export.json"'
    )
    assert answer.headers["Content-Type"] == "application/json"
    document = json.loads(answer.body)
    assert document["profile"]["phone"] == "+14155550123"
    assert document["profile"]["name"] == "Ada Lovelace"
    assert "version" not in document["profile"] and "pk" not in document["profile"]
    assert [o["order_id"] for o in document["orders"]] == [order["order_id"]]
    assert document["images"] == [] and document["activities"] == []
    assert document["transactions"] == []

    assert api.get(f"/users/{user_id}/export").status_code == 200  # an admin
    _, stranger = accounts.register()
    assert api.as_(stranger).get(f"/users/{user_id}/export").status_code == 403
    assert api.get("/users/6b1f0000-0000-4000-8000-00000000dead/export").status_code == 404
    assert api.as_(token).delete(f"/users/{user_id}").status_code == 204
    assert api.get(f"/users/{user_id}/export").status_code == 404
