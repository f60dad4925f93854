"""Path B (`chalice deploy`): infra/deploy.py gives the functions Chalice deployed the settings
`chalice package` merges from infra/functions.json. Checked against moto's Lambda."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import boto3

from infra.deploy import apply_function_settings, chalice_name, stream_arn
from infra.wiring import function_name

STREAM_CONSUMERS = ("publish_user_events", "index_users_for_search")
PARTIAL_BATCH_CONSUMERS = ("process_telemetry",)
#: Functions SNS invokes asynchronously -> their on-failure queue.
#: Functions invoked asynchronously (SNS, EventBridge) -> their dead-letter queue.
ASYNC_FUNCTIONS = {
    "welcome_new_user": "welcome-dlq",
    "email_order_update": "order-updates-dlq",
    "run_daily_analytics": "analytics-dlq",
    "complete_analytics_query": "analytics-dlq",
}


def _code() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def _deploy_like_chalice(aws: dict[str, str]) -> Any:
    """The functions and mappings `chalice deploy` would create, without those settings."""
    iam, lam = boto3.client("iam"), boto3.client("lambda")
    role = iam.create_role(
        RoleName="serverless-app-dev",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    for function in (*STREAM_CONSUMERS, *PARTIAL_BATCH_CONSUMERS, *ASYNC_FUNCTIONS):
        lam.create_function(
            FunctionName=function_name("dev", function),
            Runtime="python3.12",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _code()},
        )
    for function in STREAM_CONSUMERS:
        lam.create_event_source_mapping(
            FunctionName=function_name("dev", function),
            EventSourceArn=aws["UsersTableStreamArn"],
            StartingPosition="TRIM_HORIZON",
        )
    for function in PARTIAL_BATCH_CONSUMERS:
        lam.create_event_source_mapping(
            FunctionName=function_name("dev", function),
            EventSourceArn=aws["TelemetryStreamArn"],
            StartingPosition="TRIM_HORIZON",
        )
    return lam


def test_stream_arn_comes_from_the_resources_stack(aws: dict[str, str]) -> None:
    assert stream_arn(boto3.client("cloudformation"), "dev") == aws["UsersTableStreamArn"]


def test_after_chalice_deploy_streams_and_the_emails_lose_nothing(aws: dict[str, str]) -> None:
    lam = _deploy_like_chalice(aws)
    sqs = boto3.client("sqs")
    done = apply_function_settings("dev", lam, sqs)
    assert len(done) == 3 + len(ASYNC_FUNCTIONS)
    [telemetry] = lam.list_event_source_mappings(
        FunctionName=function_name("dev", "process_telemetry")
    )["EventSourceMappings"]
    assert telemetry["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert telemetry["BisectBatchOnFunctionError"] is True
    failures = sqs.get_queue_attributes(
        QueueUrl=aws["UsersStreamFailureQueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    for function in STREAM_CONSUMERS:
        [mapping] = lam.list_event_source_mappings(FunctionName=function_name("dev", function))[
            "EventSourceMappings"
        ]
        assert mapping["BisectBatchOnFunctionError"] is True
        assert mapping["MaximumRetryAttempts"] == 10
        assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == failures
    for function, queue in ASYNC_FUNCTIONS.items():
        config = lam.get_function_event_invoke_config(FunctionName=function_name("dev", function))
        assert config["MaximumRetryAttempts"] == 2
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]
        assert destination.endswith(f":serverless-app-dev-{queue}")
    assert apply_function_settings("dev", lam, sqs) == done  # applying twice changes nothing


def test_every_function_of_functions_json_is_a_function_of_the_app() -> None:
    """A logical id that no longer names a function would be skipped silently on path B."""
    from infra.deploy import FUNCTION_SETTINGS
    from infra.package import function_names

    deployed = function_names("dev")
    for logical_id in json.loads(FUNCTION_SETTINGS.read_text())["Resources"]:
        assert deployed[logical_id] == function_name("dev", chalice_name(logical_id))
