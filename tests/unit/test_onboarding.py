"""After a user is created: the welcome email and default preferences (SNS), and the profile
set-up (SQS onboarding queue, dead-letter queue after 3 receives), through the app's own
handlers, against moto provisioned like the real stack."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from chalicelib.users.onboarding import InvalidEvent
from local.events.sqs import lambda_record
from tests.unit.api_helpers import PASSWORD, register_user

REGION = "us-east-1"


def sent_mail() -> list[Any]:
    """The welcome mails SES (moto) was asked to send (not the registration codes)."""
    messages = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    return [m for m in messages if m.subject.startswith("Welcome")]


def register(client: Any, email: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    body = {"email": email, "name": "Ada <Lovelace>", "password": PASSWORD, **extra}
    return register_user(client, body)


def user_created(user: dict[str, Any]) -> str:
    """The message the stream handler publishes for `user` (tests/unit/test_user_events.py)."""
    event = {"event_type": "user-created", "event_id": f"user-created:{user['user_id']}",
             "occurred_at": user["created_at"], "user": user}  # fmt: skip
    return json.dumps(event)


def stored(user_id: str) -> dict[str, Any]:
    from chalicelib.users import users_service

    found = users_service()._users.get(user_id)
    assert found is not None
    return found


def sns_event(message: str) -> dict[str, Any]:
    return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0",
                         "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:t:s",
                         "Sns": {"Type": "Notification", "MessageId": "m-1", "Subject": None,
                                 "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                                 "Message": message, "Timestamp": "2026-11-26T00:00:00.000Z",
                                 "MessageAttributes": {}}}]}  # fmt: skip


# --- welcome (SNS) ------------------------------------------------------------------------


def test_welcome_sends_one_email_and_stores_default_preferences(
    client: Any, aws: dict[str, str]
) -> None:
    user = register(client)
    response = client.lambda_.invoke("welcome_new_user", sns_event(user_created(user)))
    assert response.payload is None, response.payload
    [mail] = sent_mail()
    assert mail.destinations["ToAddresses"] == ["ada@example.com"]
    assert mail.source == "welcome@dev.example.com"
    assert "Ada <Lovelace>" in mail.subject and "Ada &lt;Lovelace&gt;" in mail.body
    profile = stored(user["user_id"])
    assert profile["preferences"] == {"newsletter": True, "notifications": True}
    assert profile["version"] == 2  # a change like any other: concurrent updates see it


def test_a_duplicated_delivery_sends_no_second_email(client: Any, aws: dict[str, str]) -> None:
    user = register(client)
    for _ in range(3):
        assert (
            client.lambda_.invoke("welcome_new_user", sns_event(user_created(user))).payload is None
        )
    assert len(sent_mail()) == 1
    assert stored(user["user_id"])["version"] == 2


def test_preferences_the_user_chose_are_kept(client: Any, aws: dict[str, str]) -> None:
    user = register(client, preferences={"newsletter": False, "dark_mode": True})
    client.lambda_.invoke("welcome_new_user", sns_event(user_created(user)))
    prefs = stored(user["user_id"])["preferences"]
    assert prefs == {"newsletter": False, "dark_mode": True, "notifications": True}


def test_a_failed_send_is_retried_and_then_sent_once(client: Any, aws: dict[str, str]) -> None:
    user = register(client)
    ses = boto3.client("ses")
    ses.delete_identity(Identity="welcome@dev.example.com")  # SES now refuses the sender
    with pytest.raises(ClientError, match="not verified"):  # Lambda retries it, then DLQ
        client.lambda_.invoke("welcome_new_user", sns_event(user_created(user)))
    assert sent_mail() == []
    ses.verify_email_identity(EmailAddress="welcome@dev.example.com")
    assert client.lambda_.invoke("welcome_new_user", sns_event(user_created(user))).payload is None
    assert client.lambda_.invoke("welcome_new_user", sns_event(user_created(user))).payload is None
    assert len(sent_mail()) == 1


def test_a_user_deleted_before_the_welcome_gets_nothing(client: Any, aws: dict[str, str]) -> None:
    user = register(client)
    from chalicelib.users import users_service

    users_service()._users.remove(stored(user["user_id"]))
    assert client.lambda_.invoke("welcome_new_user", sns_event(user_created(user))).payload is None
    assert sent_mail() == []


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[]",
        '{"event_type": "user-updated"}',
        '{"event_type": "user-created", "user": {"user_id": "x"}}',
    ],
)
def test_a_malformed_event_fails_loudly(client: Any, aws: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidEvent):
        client.lambda_.invoke("welcome_new_user", sns_event(message))


# --- onboarding (SQS, DLQ after 3 receives) -----------------------------------------------


def receive(url: str) -> list[dict[str, Any]]:
    """One ReceiveMessage of up to 10, as one poll of Lambda's event source mapping."""
    return (
        boto3.client("sqs")
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        .get("Messages", [])
    )


def lambda_delivers(client: Any, url: str, reports_failures: bool) -> tuple[Any, int]:
    """One SQS poll as Lambda's event source mapping does it, with or without
    ReportBatchItemFailures; returns the handler's answer and the number of messages."""
    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    messages = receive(url)
    if not messages:
        return None, 0
    event = {"Records": [lambda_record(m, arn["QueueArn"], REGION) for m in messages]}
    try:
        payload = client.lambda_.invoke("onboard_users", event).payload
    except Exception as exc:
        return {"errorType": type(exc).__name__}, len(messages)  # an error: Lambda deletes nothing
    failed_ids: set[str] = set()
    if reports_failures and isinstance(payload, dict):
        failed_ids = {f["itemIdentifier"] for f in payload.get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed_ids]
    for m in done:  # a success: Lambda deletes the batch (minus reported failures)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return payload, len(messages)


@pytest.mark.parametrize(
    "reports_failures",
    [False, True],
    ids=["mapping-as-chalice-makes-it", "mapping-with-ReportBatchItemFailures"],
)
def test_a_poison_message_is_dead_lettered_after_3_receives_and_the_rest_succeed(
    client: Any, aws: dict[str, str], reports_failures: bool
) -> None:
    sqs = boto3.client("sqs")
    url, dlq = aws["OnboardingQueueUrl"], aws["OnboardingDeadLetterQueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    users = [register(client, email=f"user{i}@example.com") for i in range(4)]
    for user in users[:2]:
        sqs.send_message(QueueUrl=url, MessageBody=user_created(user))
    sqs.send_message(QueueUrl=url, MessageBody="{poison")
    for user in users[2:]:
        sqs.send_message(QueueUrl=url, MessageBody=user_created(user))

    answers = []
    for _ in range(6):
        answer, count = lambda_delivers(client, url, reports_failures)
        if count:
            answers.append((count, answer and answer.get("errorType")))
    assert answers == [(5, "BatchItemsFailed"), (1, "BatchItemsFailed"), (1, "BatchItemsFailed")]
    assert all(stored(u["user_id"]).get("onboarded_at") for u in users)
    [dead] = receive(dlq)
    assert dead["Body"] == "{poison"  # after 3 deliveries (answers above), not more
    assert receive(url) == []


def test_onboarding_twice_changes_nothing_more(client: Any, aws: dict[str, str]) -> None:
    user = register(client)
    record = {"messageId": "1", "receiptHandle": "r", "body": user_created(user),
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:serverless-app-dev-onboarding",
              "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"}  # fmt: skip
    for _ in range(2):
        assert client.lambda_.invoke("onboard_users", {"Records": [record]}).payload is None
    profile = stored(user["user_id"])
    assert profile["onboarded_at"] and profile["version"] == 2


def test_a_late_duplicate_does_not_undo_the_users_opt_out(client: Any, aws: dict[str, str]) -> None:
    user = register(client)
    client.lambda_.invoke("welcome_new_user", sns_event(user_created(user)))
    from chalicelib.users import users_service

    repo = users_service()._users
    current = stored(user["user_id"])
    repo.replace(current, {**current, "preferences": {}, "version": current["version"] + 1})
    client.lambda_.invoke("welcome_new_user", sns_event(user_created(user)))
    assert stored(user["user_id"])["preferences"] == {}
    assert len(sent_mail()) == 1


def test_ses_is_called_once_per_attempt_never_retried_by_the_client(aws: dict[str, str]) -> None:
    """A retried SendEmail whose first answer was lost would mail twice: the SES client does
    not retry; Lambda's retry, guarded by the idempotency record, does."""
    from botocore.exceptions import ReadTimeoutError

    from chalicelib.core import aws as aws_clients

    ses = aws_clients.client("ses")
    calls: list[str] = []

    def time_out(request: Any, **_: Any) -> None:
        calls.append(request.url)  # sent; its answer never comes back
        raise ReadTimeoutError(endpoint_url=request.url)

    ses.meta.events.register_first("before-send.ses.SendEmail", time_out)
    with pytest.raises(ReadTimeoutError):
        ses.send_email(
            Source="welcome@dev.example.com",
            Destination={"ToAddresses": ["a@example.com"]},
            Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}},
        )
    assert len(calls) == 1
