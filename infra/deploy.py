"""Path B: `chalice deploy`, made loss-proof. `make deploy STAGE=prod` runs it.

`chalice deploy` cannot express four things the app relies on, which `chalice package` gets
from infra/functions.json; this applies the same settings after it, with the Lambda API:

1. the users table's stream ARN, which the app's stream consumers name when Chalice loads it
   (read from the resources stack's output `UsersTableStreamArn`, given as
   `USERS_TABLE_STREAM_ARN`);
2. on each stream consumer's event source mapping: split a failing batch
   (BisectBatchOnFunctionError), 10 retries, then the batch's position to the
   `...-users-stream-failures` queue, instead of blocking the shard until the records expire;
3. on the telemetry processor's Kinesis mapping: ReportBatchItemFailures (its handler answers
   with `batchItemFailures`: without it, Lambda would drop the failed records), bisect, 10
   retries, then the `...-telemetry-stream-failures` queue;
4. the welcome function's on-failure destination (`...-welcome-dlq`) for events that failed
   all 3 of Lambda's asynchronous attempts.

Chalice does not touch these settings when it deploys again, and applying them twice changes
nothing. The onboarding queue needs nothing here: its handler settles partial batches itself
(chalicelib/core/sqs_batch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from infra.policies import function_name

APP = "serverless-app"
STREAM_CONSUMERS = ("publish_user_events", "index_users_for_search")
ASYNC_DEAD_LETTERS = {"welcome_new_user": "welcome-dlq"}
STREAM_FAILURES_QUEUE = "users-stream-failures"
STREAM_RETRIES = 10
#: Kinesis consumers whose handlers answer with `batchItemFailures`, and their failure queue.
PARTIAL_BATCH_CONSUMERS = {"process_telemetry": "telemetry-stream-failures"}


def resources_stack(stage: str) -> str:
    return f"{APP}-{stage}-resources"


def stream_arn(cloudformation: Any, stage: str) -> str:
    stack = cloudformation.describe_stacks(StackName=resources_stack(stage))["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return outputs["UsersTableStreamArn"]


def queue_arn(sqs: Any, stage: str, name: str) -> str:
    url = sqs.get_queue_url(QueueName=f"{APP}-{stage}-{name}")["QueueUrl"]
    return str(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )


def apply_function_settings(stage: str, lambda_client: Any, sqs: Any) -> list[str]:
    """Steps 2 to 4 of the module docstring; returns what was set, one line each."""
    done = []
    failures = queue_arn(sqs, stage, STREAM_FAILURES_QUEUE)
    for function in STREAM_CONSUMERS:
        name = function_name(stage, function)
        mappings = lambda_client.list_event_source_mappings(FunctionName=name)
        streams = [
            m for m in mappings["EventSourceMappings"] if ":dynamodb:" in m["EventSourceArn"]
        ]
        if not streams:
            raise RuntimeError(f"{name} has no DynamoDB stream mapping: was `chalice deploy` run?")
        for mapping in streams:
            lambda_client.update_event_source_mapping(
                UUID=mapping["UUID"],
                BisectBatchOnFunctionError=True,
                MaximumRetryAttempts=STREAM_RETRIES,
                DestinationConfig={"OnFailure": {"Destination": failures}},
            )
            done.append(f"{name}: bisect on error, {STREAM_RETRIES} retries, then {failures}")
    for function, queue in PARTIAL_BATCH_CONSUMERS.items():
        name = function_name(stage, function)
        target = queue_arn(sqs, stage, queue)
        mappings = lambda_client.list_event_source_mappings(FunctionName=name)
        kinesis = [m for m in mappings["EventSourceMappings"] if ":kinesis:" in m["EventSourceArn"]]
        if not kinesis:
            raise RuntimeError(f"{name} has no Kinesis mapping: was `chalice deploy` run?")
        for mapping in kinesis:
            lambda_client.update_event_source_mapping(
                UUID=mapping["UUID"],
                FunctionResponseTypes=["ReportBatchItemFailures"],
                BisectBatchOnFunctionError=True,
                MaximumRetryAttempts=STREAM_RETRIES,
                DestinationConfig={"OnFailure": {"Destination": target}},
            )
            done.append(f"{name}: partial batch responses, bisect, {STREAM_RETRIES} retries")
    for function, queue in ASYNC_DEAD_LETTERS.items():
        name = function_name(stage, function)
        target = queue_arn(sqs, stage, queue)
        lambda_client.put_function_event_invoke_config(
            FunctionName=name,
            MaximumRetryAttempts=2,
            DestinationConfig={"OnFailure": {"Destination": target}},
        )
        done.append(f"{name}: 2 retries, then on-failure destination {target}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    args = parser.parse_args(argv)
    import boto3

    arn = stream_arn(boto3.client("cloudformation"), args.stage)
    env = {**os.environ, "USERS_TABLE_STREAM_ARN": arn}
    chalice = os.path.join(os.path.dirname(sys.executable), "chalice")
    subprocess.run([chalice, "deploy", "--stage", args.stage], env=env, check=True)
    for line in apply_function_settings(args.stage, boto3.client("lambda"), boto3.client("sqs")):
        print(line)
    print(json.dumps({"stage": args.stage, "users_table_stream_arn": arn}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
