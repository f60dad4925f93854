"""Deleting and exporting a user through the app's own functions (Chalice's test client,
moto provisioned like the stack; every AWS call checked against the function's policy):
`DELETE /users/{id}`, the stream's `user-deleted`, the erasure queue's `erase_users`, and
`GET /users/{id}/export`."""

from __future__ import annotations

import json
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
    kept = stored_order(order["order_id"])
    assert kept["owner_id"] != user_id and kept["shipping_address"] == {"country": "DE"}
    assert user_id not in json.dumps(kept)

    # The pass sent its follow-up (tokens issued before the deletion are valid for a while).
    sqs = boto3.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=aws["UserErasureQueueUrl"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) == 1


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
