"""The emulator's outbox (`/_local/outbox`): what SES and SNS sent, read from moto's memory."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.outbox import OutboxEndpoint, outbox


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def send_mails(count: int) -> None:
    ses = boto3.client("ses")
    ses.verify_email_identity(EmailAddress="from@example.com")
    for n in range(count):
        ses.send_email(
            Source="from@example.com",
            Destination={"ToAddresses": [f"to{n}@example.com"]},
            Message={"Subject": {"Data": f"hello {n}"}, "Body": {"Html": {"Data": "<p>hi</p>"}}},
        )


def test_it_holds_the_mails_and_each_topics_messages_newest_last(moto: None) -> None:
    send_mails(3)
    sns = boto3.client("sns")
    arn = sns.create_topic(Name="app-dev-anomaly-alerts")["TopicArn"]
    sns.create_topic(Name="app-dev-quiet")
    sns.publish(TopicArn=arn, Message='{"alert": 1}', Subject="first")
    sns.publish(TopicArn=arn, Message='{"alert": 2}')
    sent = outbox(limit=2)
    assert [m["subject"] for m in sent["mails"]] == ["hello 1", "hello 2"]
    assert sent["mails"][-1]["destinations"]["ToAddresses"] == ["to2@example.com"]
    assert (
        sent["mails"][-1]["source"] == "from@example.com"
        and "<p>hi</p>" in sent["mails"][-1]["body"]
    )
    alerts = sent["published"]["app-dev-anomaly-alerts"]
    assert [(a["message"], a["subject"]) for a in alerts] == [
        ('{"alert": 1}', "first"),
        ('{"alert": 2}', None),
    ]
    assert sent["published"]["app-dev-quiet"] == []


def call(app: Any, path: str, query: str = "", method: str = "GET") -> tuple[str, Any]:
    answered: list[str] = []
    body = app(
        {
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "wsgi.input": io.BytesIO(),
        },
        lambda status, headers: answered.append(status),
    )
    return answered[0], b"".join(body)


def test_the_endpoint_answers_its_path_and_hands_on_every_other(moto: None) -> None:
    send_mails(1)

    def moto_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"moto"]

    app = OutboxEndpoint(moto_app)
    status, body = call(app, "/_local/outbox", "limit=5")
    assert status == "200 OK" and json.loads(body)["mails"][0]["subject"] == "hello 0"
    assert call(app, "/anything") == ("200 OK", b"moto")
    assert call(app, "/_local/outbox", "limit=0")[0] == "400 Bad Request"
    assert call(app, "/_local/outbox", "limit=x")[0] == "400 Bad Request"
    assert call(app, "/_local/outbox", method="POST")[0] == "405 Method Not Allowed"
