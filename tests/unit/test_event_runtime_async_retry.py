"""An asynchronous invocation's retry, and the Lambda context the runtime gives: an idempotent
handler (Powertools) whose first attempt lost its record's PutItem answer finds its own
record in progress, which expires with the context's remaining time. The retry succeeds
only if it comes after that (as Lambda's, a minute later, does), so the runtime's context
reports the function's own timeout and its retry waits past it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice import Chalice
from moto import mock_aws

from local.events.core import EventRuntime, Invocation
from tests.unit.runtime_helpers import IN_PROCESS, REGION

TOPIC = "welcome-topic"
TABLE = "fixture-idempotency"
TIMEOUT_S = 1  # the fixture function's timeout: short, so that the test is

app = Chalice(app_name="async-retry-fixture")
sent: list[str] = []
#: how many of the next PutItem calls lose their answer (applied, then retried by "botocore")
lost_answers = [0]
_lock = threading.Lock()


class LosingAnswers:
    """The handler's DynamoDB client, whose PutItem can lose its answer after it was applied:
    the call is applied, then made again, as botocore retries a call that timed out."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **request: Any) -> Any:
        with _lock:
            lose = lost_answers[0] > 0
            lost_answers[0] -= int(lose)
        if lose:
            self._client.put_item(**request)  # applied; its answer is lost
        return self._client.put_item(**request)


@app.on_sns_message(topic=TOPIC)
def send_welcome(event: Any) -> None:
    """Sends the welcome email of the message's user once, whatever the retries."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    client = LosingAnswers(boto3.client("dynamodb", region_name=REGION, config=IN_PROCESS))
    store = DynamoDBPersistenceLayer(table_name=TABLE, boto3_client=client)
    config = IdempotencyConfig(event_key_jmespath="user", expires_after_seconds=3600)
    config.register_lambda_context(event.context)

    @idempotent_function(data_keyword_argument="request", persistence_store=store, config=config)
    def welcome(request: dict[str, str]) -> dict[str, bool]:
        sent.append(request["user"])
        return {"sent": True}

    welcome(request={"user": event.message})


@pytest.fixture
def topic(stage_env: dict[str, str]) -> Iterator[str]:
    with mock_aws():
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        arn = boto3.client("sns", region_name=REGION).create_topic(Name=TOPIC)["TopicArn"]
        sent.clear()
        lost_answers[0] = 0
        yield arn


Started = tuple[EventRuntime, list[Invocation]]


@pytest.fixture
def start_runtime(topic: str) -> Iterator[Callable[..., Started]]:
    """Starts the runtime for the fixture app (its function's timeout `timeout_s`), with
    `async_retry_seconds` as given; stops it after the test."""
    started: list[EventRuntime] = []

    def start(async_retry_seconds: int, timeout_s: int = TIMEOUT_S) -> Started:
        seen: list[Invocation] = []
        runtime = EventRuntime(
            app,
            lambda service: boto3.client(service, region_name=REGION, config=IN_PROCESS),
            REGION,
            on_invocation=seen.append,
            async_retry_seconds=async_retry_seconds,
            function_settings=lambda name: (timeout_s, 128),
        )
        started.append(runtime)
        runtime.start()
        assert runtime.wait_until_ready()
        return runtime, seen

    yield start
    for runtime in started:
        runtime.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Polls a condition: the deadline bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def publish_losing_the_first_answer(topic: str, user: str) -> None:
    lost_answers[0] = 1
    boto3.client("sns", region_name=REGION).publish(TopicArn=topic, Message=user)


def test_retries_inside_the_in_progress_window_give_the_event_up(
    start_runtime: Callable[..., Started], topic: str
) -> None:
    """What dead-lettered welcome emails: every retry came while the first attempt's record
    was still in progress (here: retried at once, as unit tests do with 0, within the 10 s
    the context gave the first attempt)."""
    _, seen = start_runtime(0, timeout_s=10)
    publish_losing_the_first_answer(topic, "ada")
    wait_for(lambda: len(seen) == 3)
    assert all("IdempotencyAlreadyInProgressError" in i.outcome for i in seen)
    assert "moved to local-events-send_welcome-failed" in seen[-1].outcome
    assert sent == []


def test_a_retry_after_the_functions_timeout_finds_the_record_expired_and_succeeds(
    start_runtime: Callable[..., Started], topic: str
) -> None:
    runtime, seen = start_runtime(1)
    assert runtime.async_retry_delay("send_welcome") == TIMEOUT_S + 1
    publish_losing_the_first_answer(topic, "ada")
    wait_for(lambda: len(seen) == 2)
    first, second = seen
    assert "IdempotencyAlreadyInProgressError" in first.outcome
    assert f"retried in {TIMEOUT_S + 1} s" in first.outcome
    assert second.outcome == "ok"
    assert sent == ["ada"]


def test_the_retry_delay_is_the_floor_or_past_the_timeout_and_0_retries_at_once() -> None:
    settings = {"quick": (1, 128), "slow": (10, 128)}
    runtime = EventRuntime(app, boto3.client, REGION, async_retry_seconds=5,
                           function_settings=settings.__getitem__)  # fmt: skip
    assert runtime.async_retry_delay("quick") == 5
    assert runtime.async_retry_delay("slow") == 11
    runtime.async_retry_seconds = 0
    assert runtime.async_retry_delay("slow") == 0


def test_the_context_reports_the_functions_configured_timeout_counting_down() -> None:
    """Every source's invocation goes through `invoke`: its context starts at the function's
    timeout (.chalice/config.json), not at a flat minute."""
    remaining: list[int] = []
    probe = Chalice(app_name="context-probe")

    @probe.lambda_function(name="validate_order")
    def validate_order(event: Any, context: Any) -> None:
        remaining.append(context.get_remaining_time_in_millis())
        time.sleep(0.05)
        remaining.append(context.get_remaining_time_in_millis())

    runtime = EventRuntime(probe, boto3.client, REGION, stage="dev")
    timeout_s, _ = runtime.settings("validate_order")
    assert timeout_s == 10  # .chalice/config.json, dev
    _, invocation = runtime.invoke("validate_order", "aws:sqs", {})
    assert invocation.outcome == "ok"
    assert timeout_s * 1000 - 50 < remaining[0] <= timeout_s * 1000
    assert remaining[1] <= remaining[0] - 40


def test_a_handler_past_its_timeout_is_said_to_be(caplog: pytest.LogCaptureFixture) -> None:
    probe = Chalice(app_name="timeout-probe")

    @probe.lambda_function(name="slow")
    def slow(event: Any, context: Any) -> None:
        time.sleep(0.05)

    runtime = EventRuntime(probe, boto3.client, REGION, function_settings=lambda n: (0, 128))
    with caplog.at_level("WARNING", logger="local.events"):
        _, invocation = runtime.invoke("slow", "aws:sqs", {})
    assert invocation.outcome.startswith("ok (ran 0.")
    assert "past its 0 s timeout" in invocation.outcome
    assert "Lambda would have stopped it" in caplog.text
