"""`make redrive` on dead-letter queues (ops/redrive.py), against moto in process: messages
go back to their source with their attributes, each deleted only once sent, within a bound;
and the stage's failure queues as the templates declare them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from ops import redrive
from ops.failure_queues import ASYNC_FAILURES, DEAD_LETTER, STREAM_FAILURES, failure_queues, find
from ops.replay import Outcome
from ops.session import Target

REGION = "us-east-1"
STAGE = "dev"


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # in-process moto, no server
    with mock_aws():
        yield Target(STAGE)


def make_queues(sqs: Any, stage: str = STAGE) -> tuple[str, str]:
    """The onboarding queue and its dead-letter queue, as the template declares them."""
    dlq = sqs.create_queue(QueueName=f"serverless-app-{stage}-onboarding-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = {"deadLetterTargetArn": arn["QueueArn"], "maxReceiveCount": 3}
    source = sqs.create_queue(
        QueueName=f"serverless-app-{stage}-onboarding",
        Attributes={"RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    return source, dlq


def everything(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return sorted(found.values(), key=lambda m: m["Body"])
        found |= {m["MessageId"]: m for m in messages}


def put(sqs: Any, url: str, count: int) -> None:
    for n in range(count):
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps({"n": f"{n:02d}"}),
            MessageAttributes={
                "event_type": {"DataType": "String", "StringValue": "user-created"},
                "attempt": {"DataType": "Number", "StringValue": str(n)},
                "blob": {"DataType": "Binary", "BinaryValue": bytes([n])},
            },
        )


def test_a_dead_letter_queue_goes_back_to_its_source_with_its_attributes(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = target.client("sqs")
    source, dlq = make_queues(sqs)
    put(sqs, dlq, 23)

    assert redrive.main(["onboarding-dlq", "--stage", STAGE]) == 0

    moved = everything(sqs, source)
    assert [json.loads(m["Body"])["n"] for m in moved] == [f"{n:02d}" for n in range(23)]
    for n, message in enumerate(moved):
        attributes = message["MessageAttributes"]
        assert attributes["event_type"]["StringValue"] == "user-created"
        assert attributes["attempt"] == {"DataType": "Number", "StringValue": str(n)}
        assert attributes["blob"]["BinaryValue"] == bytes([n])
    assert everything(sqs, dlq) == []
    out = capsys.readouterr().out
    assert (
        "serverless-app-dev-onboarding-dlq: 23 moved back to serverless-app-dev-onboarding, "
        "0 failed, 0 left" in out
    )


def test_a_move_is_bounded_and_leaves_the_rest_visible(target: Target) -> None:
    sqs = target.client("sqs")
    source, dlq = make_queues(sqs)
    # Three the source refuses come first: taken, not moved, so hidden until the run ends.
    sqs.set_queue_attributes(QueueUrl=source, Attributes={"MaximumMessageSize": "1024"})
    for n in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"{n}" + "x" * 2000)
    put(sqs, dlq, 12)
    tally = redrive.move_messages(sqs, dlq, source, limit=12)
    assert (tally.handled, tally.failed) == (9, 3)
    assert len(everything(sqs, source)) == 9
    left = everything(sqs, dlq)  # visible at once, not hidden for HIDE_SECONDS
    assert len(left) == 6 and sum(len(m["Body"]) > 2000 for m in left) == 3


def test_messages_the_source_refuses_stay_in_the_dead_letter_queue(target: Target) -> None:
    sqs = target.client("sqs")
    source, dlq = make_queues(sqs)
    put(sqs, dlq, 3)
    # Moto's queue refuses a body over its maximum message size: one of four is refused.
    sqs.set_queue_attributes(QueueUrl=source, Attributes={"MaximumMessageSize": "1024"})
    sqs.send_message(QueueUrl=dlq, MessageBody="x" * 2000)

    tally = redrive.move_messages(sqs, dlq, source, limit=100)

    assert (tally.handled, tally.failed) == (3, 1)
    assert not tally.ok
    [left] = everything(sqs, dlq)
    assert left["Body"] == "x" * 2000
    assert len(everything(sqs, source)) == 3


def test_a_failed_move_exits_non_zero_and_says_so(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = target.client("sqs")
    source, dlq = make_queues(sqs)
    sqs.set_queue_attributes(QueueUrl=source, Attributes={"MaximumMessageSize": "1024"})
    sqs.send_message(QueueUrl=dlq, MessageBody="x" * 2000)
    assert redrive.main(["OnboardingDeadLetterQueue"]) == 1
    assert "0 moved back to serverless-app-dev-onboarding, 1 failed, 1 left" in (
        capsys.readouterr().out
    )


def test_without_a_queue_it_lists_the_stages_queues_with_their_depths(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = target.client("sqs")
    _, dlq = make_queues(sqs, "prod")
    put(sqs, dlq, 2)
    assert redrive.main(["--stage", "prod"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    onboarding = lines["serverless-app-prod-onboarding-dlq"]
    assert onboarding.split()[1] == "2" and "back to serverless-app-prod-onboarding" in onboarding
    assert "NonExistentQueue" in lines["serverless-app-prod-welcome-dlq"]  # not created here


def test_the_failure_queues_are_read_from_the_templates() -> None:
    queues = {q.name: q for q in failure_queues("test")}
    assert queues["serverless-app-test-onboarding-dlq"].kind == DEAD_LETTER
    assert queues["serverless-app-test-onboarding-dlq"].sources == (
        "serverless-app-test-onboarding",
    )
    assert queues["serverless-app-test-welcome-dlq"].kind == ASYNC_FAILURES
    assert queues["serverless-app-test-welcome-dlq"].sources == ("welcome_new_user",)
    users = queues["serverless-app-test-users-stream-failures"]
    assert users.kind == STREAM_FAILURES
    assert set(users.sources) == {"publish_user_events", "index_users_for_search"}
    assert queues["serverless-app-test-telemetry-stream-failures"].sources == ("process_telemetry",)
    listed = list(queues.values())
    prefix = "serverless-app-test-"
    assert find(listed, "welcome-dlq", prefix) == queues[f"{prefix}welcome-dlq"]
    assert find(listed, "WelcomeDeadLetterQueue", prefix) == queues[f"{prefix}welcome-dlq"]
    assert find(listed, "telemetry-quarantine", prefix) is None  # not a failure queue


def test_an_unknown_queue_is_refused_with_the_names(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    assert redrive.main(["nope"]) == 2
    assert "choose one of: onboarding-dlq" in capsys.readouterr().err


class Scripted:
    """A replayer whose outcome for each body is given: "ok", "fail", or an exception."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script, self.seen = script, []

    def replay(self, body: str) -> Outcome:
        self.seen.append(body)
        what = self.script[body]
        if isinstance(what, BaseException):
            raise what
        if what == "ok":
            return Outcome(True, f"{body} replayed", replayed=1)
        return Outcome(False, f"{body} failed again", failed=True)


def test_each_replayed_message_is_deleted_at_once_even_if_the_run_then_dies(
    target: Target,
) -> None:
    sqs = target.client("sqs")
    url = sqs.create_queue(QueueName="failures")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    replayer = Scripted({"a": "ok", "b": "ok", "c": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):  # the operator's Ctrl-C during the third
        redrive.replay_records(sqs, url, replayer, limit=100)  # type: ignore[arg-type]
    assert [m["Body"] for m in everything(sqs, url)] == ["c"]  # a and b not replayed again


class Reappearing:
    """An SQS client on which what the first receive took is visible again at once (its
    hiding ran out mid-run: a replay took longer than it)."""

    def __init__(self, sqs: Any) -> None:
        self.sqs, self.receives, self.sizes = sqs, 0, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)

    def receive_message(self, **kwargs: Any) -> Any:
        self.receives += 1
        self.sizes.append(kwargs["MaxNumberOfMessages"])
        answer = self.sqs.receive_message(**kwargs)
        if self.receives == 1:
            for message in answer.get("Messages", []):
                self.sqs.change_message_visibility(
                    QueueUrl=kwargs["QueueUrl"],
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
        return answer


def test_a_message_seen_again_is_skipped_not_the_end_of_the_run(target: Target) -> None:
    sqs = target.client("sqs")
    url = sqs.create_queue(QueueName="failures")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    replayer = Scripted({"a": "fail", "b": "ok", "c": "ok"})
    client = Reappearing(sqs)

    tally = redrive.replay_records(client, url, replayer, limit=100)  # type: ignore[arg-type]

    assert (tally.handled, tally.failed) == (2, 1)
    assert sorted(replayer.seen) == ["a", "b", "c"]  # each once
    assert set(client.sizes) == {1}  # one at a time: each hidden from just before its replay
    assert [m["Body"] for m in everything(sqs, url)] == ["a"]  # visible again


def test_a_run_that_stops_on_an_error_still_prints_its_summary(
    target: Target, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    sqs = target.client("sqs")
    sqs.create_queue(QueueName="serverless-app-dev-welcome-dlq")

    def stopped(*args: Any) -> redrive.Tally:
        tally = args[-1]
        tally.handled, tally.records = 2, 2
        tally.notes.append("welcome_new_user: event replayed")
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ReceiveMessage")

    monkeypatch.setattr(redrive, "replay_records", stopped)
    assert redrive.main(["welcome-dlq"]) == 1
    captured = capsys.readouterr()
    assert "welcome_new_user: event replayed" in captured.out
    assert "serverless-app-dev-welcome-dlq: 2 replayed, 0 failed, 0 left" in captured.out
    assert "redrive stopped: AccessDenied" in captured.err


def test_a_failure_queue_allows_only_its_functions_and_streams() -> None:
    queues = {q.name: q for q in failure_queues("prod")}
    users = queues["serverless-app-prod-users-stream-failures"]
    assert users.functions() == {
        "serverless-app-prod-publish_user_events",
        "serverless-app-prod-index_users_for_search",
    }
    assert (users.tables, users.kinesis_streams) == (("serverless-app-prod-users",), ())
    telemetry = queues["serverless-app-prod-telemetry-stream-failures"]
    assert telemetry.kinesis_streams == ("serverless-app-prod-telemetry",)
    assert queues["serverless-app-prod-welcome-dlq"].functions() == {
        "serverless-app-prod-welcome_new_user"
    }
    assert queues["serverless-app-prod-onboarding-dlq"].functions() == frozenset()
