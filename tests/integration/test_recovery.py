"""Recovering from failures on the running local stack, with the tool an operator runs
(`python -m ops.redrive` / `ops.replay`, as `make redrive LOCAL=1` / `make replay LOCAL=1`):

- a welcome email that cannot be sent (the stage's sender is no longer verified in SES)
  fails Lambda's 3 attempts, and the local runtime puts Lambda's on-failure record in the
  welcome DLQ; once the sender is verified again, `redrive` replays it: one email; the same
  record replayed a second time changes nothing (one email, the profile untouched);
- a users stream batch's on-failure record (as the runtime writes it, for the search
  indexer) is replayed from the stream by its sequence numbers, twice: the index holds the
  user's entries once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from infra.paths import PROJECT_DIR
from local.mailbox import wait_for_code
from tests.integration.test_local_stack import (
    PASSWORD,
    eventually,
    new_email,
    sign_in,
    welcome_mail_to,
)

pytestmark = pytest.mark.integration

STAGE = "dev"


def tool(stack: dict[str, Any], module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command against this stack (what `make redrive LOCAL=1` runs)."""
    command = [sys.executable, "-m", module, *args, "--local", "--stage", STAGE]
    command += ["--state-dir", str(stack["state_dir"])]
    return subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)


def queue_bodies(emulator: Any, name: str) -> list[dict[str, Any]]:
    sqs = emulator("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_a_welcome_that_failed_three_times_is_redriven_once_the_cause_is_fixed(
    api: str, stack: dict[str, Any], emulator: Any
) -> None:
    ses = emulator("ses")
    sender = stack["environment"]["WELCOME_EMAIL_SENDER"]
    email = new_email()
    asked = requests.post(f"{api}/register", json={"email": email, "name": "Recovery"}, timeout=10)
    assert asked.status_code == 202, asked.text
    code = wait_for_code(stack["emulator_url"], email)
    ses.delete_identity(Identity=sender)  # the cause: SES refuses the welcome's sender
    try:
        confirmed = requests.post(
            f"{api}/register/confirm",
            json={"email": email, "code": code, "password": PASSWORD},
            timeout=10,
        )
        assert confirmed.status_code == 201, confirmed.text
        user_id = confirmed.json()["user_id"]

        def failed_record() -> dict[str, Any] | None:
            for body in queue_bodies(emulator, "serverless-app-dev-welcome-dlq"):
                message = json.loads(body["requestPayload"]["Records"][0]["Sns"]["Message"])
                if message["user"]["user_id"] == user_id:
                    return body
            return None

        # 3 attempts, each retry past the function's 10 s timeout (async_retry_delay): ~22 s.
        record = eventually(failed_record, timeout=60)
    finally:
        ses.verify_email_identity(EmailAddress=sender)  # the fix
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(
        ":function:serverless-app-dev-welcome_new_user:$LATEST"
    )
    assert record["responsePayload"]["errorType"] == "MessageRejected"
    assert welcome_mail_to(stack, email) == []

    listed = tool(stack, "ops.redrive")
    assert listed.returncode == 0, listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if "serverless-app-dev-welcome-dlq" in x]
    assert int(line.split()[1]) >= 1 and "replays each failed event" in line

    redriven = tool(stack, "ops.redrive", "welcome-dlq")
    assert redriven.returncode == 0, redriven.stdout + redriven.stderr
    assert "0 failed, 0 left" in redriven.stdout
    assert len(welcome_mail_to(stack, email)) == 1
    profile = requests.get(
        f"{api}/users/{user_id}", headers=sign_in(stack, email), timeout=10
    ).json()
    assert profile["preferences"] == {"newsletter": True, "notifications": True}

    # The same record delivered again (Lambda sends a record at least once; a run may be
    # interrupted between the invoke and the delete): replayed, and nothing happens twice.
    sqs = emulator("sqs")
    dlq = sqs.get_queue_url(QueueName="serverless-app-dev-welcome-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(record))
    again = tool(stack, "ops.redrive", "welcome-dlq")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 replayed, 0 failed, 0 left" in again.stdout
    time.sleep(1)
    assert len(welcome_mail_to(stack, email)) == 1
    after = requests.get(f"{api}/users/{user_id}", headers=sign_in(stack, email), timeout=10)
    assert after.json() == profile  # preferences (and updated_at) untouched


def index_items(emulator: Any, user_id: str) -> list[str]:
    """The search index's items that name the user, as text."""
    dynamodb = emulator("dynamodb")
    table = "serverless-app-dev-search"
    items: list[str] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items += [json.dumps(i, sort_keys=True) for i in page["Items"] if user_id in json.dumps(i)]
    return sorted(items)


def users_stream_record(emulator: Any, stack: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The on-failure record the runtime writes when the search indexer gives up on the
    batch holding the user's insert (local/events/stream_failures.py builds it)."""
    from datetime import UTC, datetime

    from local.events.stream_failures import RETRIES_EXHAUSTED, FailedBatch, on_failure_record

    streams = emulator("dynamodbstreams")
    arn = stack["resources"]["UsersTableStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    numbers: list[str] = []
    while iterator and not numbers:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        numbers = [
            r["dynamodb"]["SequenceNumber"]
            for r in page["Records"]
            if r["eventName"] == "INSERT" and r["dynamodb"]["Keys"]["pk"]["S"] == f"USER#{user_id}"
        ]
        iterator = page.get("NextShardIterator") if page["Records"] else None
    assert numbers, "the user's insert is not on the stream"
    account = emulator("sts").get_caller_identity()["Account"]
    function = (
        f"arn:aws:lambda:{stack['region']}:{account}:"
        "function:serverless-app-dev-index_users_for_search"
    )
    now = datetime.now(UTC)
    failed = FailedBatch(RETRIES_EXHAUSTED, shard["ShardId"], arn, numbers, (now, now), 11, True)
    return on_failure_record(failed, function, "DDBStreamBatchInfo", "seconds")


def test_a_users_stream_batch_is_replayed_from_the_stream_and_duplicates_nothing(
    api: str, stack: dict[str, Any], emulator: Any, admin_headers: dict[str, str]
) -> None:
    from tests.integration.test_local_stack import register

    user = register(api, name="Replay Streamson")
    user_id = user["user_id"]
    indexed = eventually(lambda: index_items(emulator, user_id))
    record = users_stream_record(emulator, stack, user_id)
    sqs = emulator("sqs")
    queue = sqs.get_queue_url(QueueName="serverless-app-dev-users-stream-failures")["QueueUrl"]
    for _ in range(2):  # the same failure replayed twice
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(record))
        replayed = tool(stack, "ops.replay", "users-stream-failures")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "index_users_for_search: shardId" in replayed.stdout
        assert "1 replayed (1 stream records), 0 failed" in replayed.stdout
        assert replayed.stdout.rstrip().endswith("0 left")
    assert index_items(emulator, user_id) == indexed
    found = requests.get(
        f"{api}/users/search", params={"q": "Streamson"}, headers=admin_headers, timeout=10
    ).json()["items"]
    assert [u["user_id"] for u in found].count(user_id) == 1
