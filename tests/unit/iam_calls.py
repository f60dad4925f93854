"""Every AWS call a function makes in the moto tests, checked against that function's policy.

The `client` fixture (tests/conftest.py) records, while the Chalice test client runs a
function (a route: the API's handler; `client.lambda_.invoke(name)`: that function), each
call the app's boto3 session makes, and at the end of the test checks that the function's
generated policy (.chalice/policy-dev*.json) allows each one on the resource it named. So the
policies follow what the code really calls, not what someone listed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from infra.wiring import API_HANDLER, CHALICE_DIR, policy_file

STAGE = "dev"
STAGE_PREFIX = f"serverless-app-{STAGE}"  # resources' names start with it
#: Operations authorised as another action than their name, or as none.
ACTION_OF = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "DeleteObjects"): "s3:DeleteObject",  # authorised per key (below)
    ("sns", "PublishBatch"): "sns:Publish",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("sts", "GetCallerIdentity"): "",  # needs no permission
    # `generate_presigned_post` builds its URL through CreateBucket's model and calls
    # nothing; the browser's POST then needs s3:PutObject on its key (the images' needs).
    ("s3", "CreateBucket"): "",
}
TRANSACT_ACTIONS = {"Put": "PutItem", "Delete": "DeleteItem", "Update": "UpdateItem",
                    "ConditionCheck": "ConditionCheckItem"}  # fmt: skip


class Recorder:
    """Which function runs now, and the calls each made."""

    def __init__(self) -> None:
        self.function: str | None = None
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def before_parameter_build(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.function is not None:
            service = model.service_model.endpoint_prefix
            self.calls.append((self.function, service, model.name, dict(params)))


def needed(
    service: str, operation: str, params: dict[str, Any], region: str, account: str
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(action, resource ARN, condition context) triples the call needs."""
    action = ACTION_OF.get((service, operation), f"{service}:{operation}")
    if not action:
        return
    table = f"arn:aws:dynamodb:{region}:{account}:table/"
    if service == "dynamodb":
        if operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                ((kind, body),) = item.items()
                yield f"dynamodb:{TRANSACT_ACTIONS[kind]}", table + body["TableName"], {}
        elif "RequestItems" in params:
            for name in params["RequestItems"]:
                yield action, table + name, {}
        else:
            index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
            yield action, table + params["TableName"] + index, {}
    elif service == "sqs":
        name = params.get("QueueName") or params["QueueUrl"].rsplit("/", 1)[-1]
        yield action, f"arn:aws:sqs:{region}:{account}:{name}", {}
    elif service == "sns":
        yield action, params["TopicArn"], {}
    elif service == "s3" and operation == "DeleteObjects":
        for listed in params["Delete"]["Objects"]:
            yield action, f"arn:aws:s3:::{params['Bucket']}/{listed['Key']}", {}
    elif service == "s3":
        key = f"/{params['Key']}" if "Key" in params else ""
        yield action, f"arn:aws:s3:::{params['Bucket']}{key}", {}
    elif service == "kinesis":
        name = params.get("StreamName") or params["StreamARN"].rsplit("/", 1)[-1]
        yield action, f"arn:aws:kinesis:{region}:{account}:stream/{name}", {}
    elif service == "states":  # Step Functions: the call names the ARN itself
        yield action, params.get("stateMachineArn") or params["executionArn"], {}
    elif service == "ssm":
        yield action, f"arn:aws:ssm:{region}:{account}:parameter{params['Name']}", {}
    elif service in ("email", "ses"):
        domain = params["Source"].rsplit("@", 1)[-1]
        yield (
            "ses:SendEmail",
            f"arn:aws:ses:{region}:{account}:identity/{domain}",
            {"ses:FromAddress": params["Source"]},
        )
    elif service == "cognito-idp":
        pool = f"arn:aws:cognito-idp:{region}:{account}:userpool/{params['UserPoolId']}"
        tags = {"aws:ResourceTag/app": "serverless-app", "aws:ResourceTag/stage": STAGE}
        yield action, pool, tags
    elif service == "athena":
        if "WorkGroup" in params:  # StartQueryExecution names its workgroup
            yield action, f"arn:aws:athena:{region}:{account}:workgroup/{params['WorkGroup']}", {}
        else:
            # GetQueryExecution, GetQueryResults, StopQueryExecution name only the execution
            # id; IAM authorises them on the workgroup the query ran in, which the call does
            # not show. The app runs its queries in the dev analytics workgroup only.
            workgroup = f"{STAGE_PREFIX}-analytics"
            yield action, f"arn:aws:athena:{region}:{account}:workgroup/{workgroup}", {}
    else:  # Rekognition and other services without resource-level permissions
        yield action, "*", {}


@cache
def policy(function: str) -> dict[str, Any]:
    return json.loads((CHALICE_DIR / policy_file(STAGE, function)).read_text())


def allows(document: dict[str, Any], action: str, arn: str, context: dict[str, str]) -> bool:
    def listed(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else list(value)

    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action.lower(), a.lower()) for a in listed(statement["Action"]))
        and any(fnmatchcase(arn, r) for r in listed(statement["Resource"]))
        and all(
            context.get(key) == value
            for key, value in statement.get("Condition", {}).get("StringEquals", {}).items()
        )
        for statement in document["Statement"]
    )


def denied(recorder: Recorder, region: str, account: str) -> Iterator[str]:
    for function, service, operation, params in recorder.calls:
        for action, arn, context in needed(service, operation, params, region, account):
            if not allows(policy(function), action, arn, context):
                yield f"{function}: {action} on {arn} ({operation})"


def watch(test_client: Any, recorder: Recorder) -> None:
    """Attribute what the Chalice test client runs to the function Lambda would run."""
    http, lambda_ = test_client.http, test_client.lambda_
    request, invoke = http.request, lambda_.invoke

    def request_as_api(*args: Any, **kwargs: Any) -> Any:
        recorder.function = API_HANDLER
        try:
            return request(*args, **kwargs)
        finally:
            recorder.function = None

    def invoke_as(function_name: str, *args: Any, **kwargs: Any) -> Any:
        recorder.function = function_name
        try:
            return invoke(function_name, *args, **kwargs)
        finally:
            recorder.function = None

    http.request = request_as_api
    lambda_.invoke = invoke_as
