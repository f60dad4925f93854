"""The deploy path, checked without AWS.

- the packaged template (dev and prod, one `chalice package` run each per session) passes
  cfn-lint and the SAM translator, pins its Stage and runs python3.12;
- config.json and infra/resources.json name the same resources for every stage;
- each stage's IAM policy covers every boto3 call in chalicelib, on that stage's resources
  only, and nothing more.
"""

from __future__ import annotations

import copy
import json
import re
import zipfile
from collections.abc import Callable
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from infra.package import (
    API_HANDLER_LOGICAL_ID,
    SERVERLESS_FUNCTION,
    TARGET_RUNTIME,
    PackageResult,
    PackagingError,
    cfn_lint,
    check_deployment_zip,
    finalize_template,
    merge_document,
    package,
    sam_transform,
)
from infra.package import function_names as package_function_names
from infra.paths import PROJECT_DIR

CHALICELIB = PROJECT_DIR / "chalicelib"
CONFIG = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
STAGES = list(CONFIG["stages"])
PACKAGED_STAGES = ["dev", "prod"]

#: Stage environment variable -> logical id of the resource it names in resources.json.
RESOURCE_ENV = {
    "USERS_TABLE_NAME": "UsersTable",
    "SEARCH_TABLE_NAME": "SearchIndexTable",
    "IDEMPOTENCY_TABLE_NAME": "IdempotencyTable",
    "TELEMETRY_STREAM_NAME": "TelemetryStream",
    "ACTIVITIES_TABLE_NAME": "ActivitiesTable",
    "METRICS_TABLE_NAME": "MetricsTable",
    "BASELINES_TABLE_NAME": "BaselinesTable",
    "TRANSACTIONS_TABLE_NAME": "TransactionsTable",
    "ANOMALY_ALERTS_TOPIC_NAME": "AnomalyAlertsTopic",
    "DATA_LAKE_BUCKET_NAME": "DataLakeBucket",
    "TELEMETRY_QUARANTINE_QUEUE_NAME": "TelemetryQuarantineQueue",
    "USER_CREATED_TOPIC_NAME": "UserCreatedTopic",
    "USER_UPDATED_TOPIC_NAME": "UserUpdatedTopic",
    "ONBOARDING_QUEUE_NAME": "OnboardingQueue",
    "COGNITO_CONFIG_PARAMETER": "CognitoConfigParameter",
    "UPLOADS_BUCKET_NAME": "UploadsBucket",
    "IMAGES_TABLE_NAME": "ImagesTable",
    "IMAGE_LABELS_TABLE_NAME": "ImageLabelsTable",
    "IMAGE_UPLOADS_QUEUE_NAME": "ImageUploadsQueue",
    "THUMBNAILS_QUEUE_NAME": "ThumbnailsQueue",
}
NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SSM::Parameter": "Name",
    "AWS::Kinesis::Stream": "Name",
    "AWS::S3::Bucket": "BucketName",
}

# A concrete region and account, only to test the policies' wildcards against real ARNs.
REGION, ACCOUNT = "eu-west-1", "123456789012"
TABLE = "arn:aws:dynamodb:{region}:{account}:table/{UsersTable}"
LIST_INDEX_ARN = TABLE + "/index/{index}"
USERS_STREAM = TABLE + "/stream/2026-11-26T00:00:00.000"
SEARCH_TABLE = "arn:aws:dynamodb:{region}:{account}:table/{SearchIndexTable}"
IDEMPOTENCY_TABLE = "arn:aws:dynamodb:{region}:{account}:table/{IdempotencyTable}"
STREAM_FAILURES = "arn:aws:sqs:{region}:{account}:{UsersStreamFailureQueue}"
WELCOME_DLQ = "arn:aws:sqs:{region}:{account}:{WelcomeDeadLetterQueue}"
SENDER_IDENTITY = "arn:aws:ses:{region}:{account}:identity/example.com"
TELEMETRY_STREAM = "arn:aws:kinesis:{region}:{account}:stream/{TelemetryStream}"
TELEMETRY_TABLES = [
    "arn:aws:dynamodb:{region}:{account}:table/{" + t + "}"
    for t in ("ActivitiesTable", "MetricsTable", "TransactionsTable")
]
BY_USER_INDEX = "arn:aws:dynamodb:{region}:{account}:table/{TransactionsTable}/index/by-user"
BASELINES = "arn:aws:dynamodb:{region}:{account}:table/{BaselinesTable}"
ALERTS_TOPIC = "arn:aws:sns:{region}:{account}:{AnomalyAlertsTopic}"
ARCHIVE = "arn:aws:s3:::{DataLakeBucket}/telemetry/year=2026/month=11/day=26/hour=04/x.jsonl.gz"
QUARANTINE = "arn:aws:sqs:{region}:{account}:{TelemetryQuarantineQueue}"
TELEMETRY_FAILURES = "arn:aws:sqs:{region}:{account}:{TelemetryStreamFailureQueue}"
CREATED_TOPIC = "arn:aws:sns:{region}:{account}:{UserCreatedTopic}"
UPDATED_TOPIC = "arn:aws:sns:{region}:{account}:{UserUpdatedTopic}"
QUEUE = "arn:aws:sqs:{region}:{account}:{OnboardingQueue}"
# The pool's id is made at deploy time: the policy scopes by the pool's tags instead.
USER_POOL = "arn:aws:cognito-idp:{region}:{account}:userpool/{region}_AbCdEf123"
COGNITO_PARAMETER = "arn:aws:ssm:{region}:{account}:parameter{CognitoConfigParameter}"
IMAGES = "arn:aws:dynamodb:{region}:{account}:table/{ImagesTable}"
IMAGES_BY_OWNER = IMAGES + "/index/by-owner"
IMAGE_LABELS = "arn:aws:dynamodb:{region}:{account}:table/{ImageLabelsTable}"
UPLOAD_OBJECT = "arn:aws:s3:::{UploadsBucket}/uploads/{region}/x.jpg"
THUMBNAIL_OBJECT = "arn:aws:s3:::{UploadsBucket}/thumbnails/u/i/abc-128.jpg"
UPLOADS_QUEUE = "arn:aws:sqs:{region}:{account}:{ImageUploadsQueue}"
THUMBNAILS_QUEUE = "arn:aws:sqs:{region}:{account}:{ThumbnailsQueue}"

#: Every boto3 client operation chalicelib may call -> the (IAM action, resource) pairs it
#: needs. A call found in the code but missing here fails `test_every_aws_call_is_known`.
OPERATION_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    "get_item": [("dynamodb:GetItem", TABLE)],
    "put_item": [("dynamodb:PutItem", TABLE)],
    "delete_item": [("dynamodb:DeleteItem", TABLE)],
    "update_item": [("dynamodb:UpdateItem", TABLE)],
    "query": [("dynamodb:Query", LIST_INDEX_ARN), ("dynamodb:Query", SEARCH_TABLE)],
    # Profiles for a search page (API) and known words (indexer): see FUNCTION_RESOURCES.
    "batch_get_item": [("dynamodb:BatchGetItem", TABLE)],
    "batch_write_item": [("dynamodb:BatchWriteItem", SEARCH_TABLE)],
    # Authorised per item kind: see TRANSACT_ITEM_ACTIONS.
    "transact_write_items": [],
    "publish_batch": [("sns:Publish", CREATED_TOPIC), ("sns:Publish", UPDATED_TOPIC)],
    "delete_message_batch": [("sqs:DeleteMessage", QUEUE)],
    "get_queue_url": [("sqs:GetQueueUrl", QUEUE)],
    # Authorised on the sender's identity, for that one From address (policy Condition).
    "send_email": [("ses:SendEmail", SENDER_IDENTITY)],
    "put_records": [("kinesis:PutRecords", TELEMETRY_STREAM)],
    "put_object": [("s3:PutObject", ARCHIVE)],
    "send_message": [("sqs:SendMessage", QUARANTINE)],
    "send_message_batch": [("sqs:SendMessage", QUARANTINE)],
    # STS GetCallerIdentity needs no permission.
    "get_caller_identity": [],
    "get_parameter": [("ssm:GetParameter", COGNITO_PARAMETER)],
    # `rsa.verify` and `TokenVerifier.verify` (token signatures), not KMS Verify.
    "verify": [],
    "admin_create_user": [("cognito-idp:AdminCreateUser", USER_POOL)],
    "admin_set_user_password": [("cognito-idp:AdminSetUserPassword", USER_POOL)],
    "admin_delete_user": [("cognito-idp:AdminDeleteUser", USER_POOL)],
    "admin_get_user": [("cognito-idp:AdminGetUser", USER_POOL)],
    "admin_update_user_attributes": [("cognito-idp:AdminUpdateUserAttributes", USER_POOL)],
    "head_object": [("s3:GetObject", UPLOAD_OBJECT)],
    "get_object": [("s3:GetObject", UPLOAD_OBJECT)],
    # DetectLabels has no resource-level permissions; it reads S3 with the caller's.
    "detect_labels": [("rekognition:DetectLabels", "*")],
}
#: TransactWriteItems is authorised as the item-level action of each item kind it holds.
TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Delete": "dynamodb:DeleteItem",
    "Update": "dynamodb:UpdateItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
#: Services chalicelib may create clients for (those OPERATION_PERMISSIONS covers).
KNOWN_SERVICES = {
    "dynamodb", "sns", "sqs", "sts", "ssm", "cognito-idp", "ses", "kinesis", "s3", "rekognition"
}  # fmt: skip
#: Services whose operation names are looked for in the code: the known ones and others an
#: app like this commonly adds, so that a call into a new service is noticed too.
SCANNED_SERVICES = sorted(
    KNOWN_SERVICES
    | {"s3", "events", "cloudwatch", "kinesis", "stepfunctions", "secretsmanager", "ssm"}
    | {"lambda", "ses", "sesv2", "logs", "kms", "scheduler", "cognito-idp"}
)
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")


# --- helpers ----------------------------------------------------------------------------


def resolve_name(value: Any, stage: str) -> str:
    """A resource name from resources.json (a literal or an `Fn::Sub` on Stage)."""
    if isinstance(value, dict):
        (function, template), *rest = value.items()
        assert function == "Fn::Sub" and isinstance(template, str) and not rest, value
        value = template.replace("${Stage}", stage)
    assert isinstance(value, str) and "${" not in value, f"unresolved name: {value!r}"
    return value


def resource_names(stage: str) -> dict[str, str]:
    """Logical id -> physical name, for every named table, topic and queue."""
    names = {}
    for logical_id, resource in RESOURCES["Resources"].items():
        prop = NAME_PROPERTY.get(resource["Type"])
        if prop:
            names[logical_id] = resolve_name(resource["Properties"][prop], stage)
    return names


#: Each function's policy file and the boto3 operations its code calls. Every operation in
#: chalicelib belongs to at least one function (`test_every_aws_call_belongs_to_a_function`).
FUNCTION_POLICIES: dict[str, tuple[str, set[str]]] = {
    "APIHandler": (
        "policy-{stage}.json",
        {"get_item", "put_item", "delete_item", "query", "transact_write_items",
         "batch_get_item", "get_caller_identity", "get_parameter", "verify", "put_records",
         "admin_create_user", "admin_set_user_password", "admin_delete_user",
         "admin_get_user", "admin_update_user_attributes"},
    ),
    "CognitoJwt": ("policy-{stage}-authorizer.json", {"get_parameter", "verify"}),
    "PublishUserEvents": (
        "policy-{stage}-publish_user_events.json", {"publish_batch", "get_caller_identity"}
    ),
    "IndexUsersForSearch": (
        "policy-{stage}-index_users_for_search.json", {"batch_get_item", "batch_write_item"}
    ),
    "WelcomeNewUser": (
        "policy-{stage}-welcome_new_user.json", {"get_item", "update_item", "send_email"}
    ),
    "ProcessTelemetry": (
        "policy-{stage}-process_telemetry.json",
        {"batch_write_item", "batch_get_item", "query", "get_item", "update_item",
         "publish_batch", "put_object", "send_message_batch", "get_queue_url",
         "get_caller_identity"},
    ),
    "OnboardUsers": (
        "policy-{stage}-onboard_users.json",
        {"get_item", "update_item", "delete_message_batch", "get_queue_url"},
    ),
    "AnalyzeImage": (
        "policy-{stage}-analyze_image.json",
        {"head_object", "get_object", "detect_labels", "get_item", "transact_write_items",
         "send_message", "get_queue_url", "delete_message_batch"},
    ),
    "MakeThumbnails": (
        "policy-{stage}-make_thumbnails.json",
        {"get_object", "put_object", "get_item", "update_item", "get_queue_url",
         "delete_message_batch"},
    ),
}  # fmt: skip
#: Where a function's call reaches another resource than OPERATION_PERMISSIONS says.
FUNCTION_RESOURCES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "APIHandler": {
        "get_item": [("dynamodb:GetItem", TABLE), ("dynamodb:GetItem", IMAGES)],
        "batch_get_item": [("dynamodb:BatchGetItem", TABLE), ("dynamodb:BatchGetItem", IMAGES)],
        "query": [
            ("dynamodb:Query", LIST_INDEX_ARN),
            ("dynamodb:Query", SEARCH_TABLE),
            ("dynamodb:Query", IMAGES_BY_OWNER),
            ("dynamodb:Query", IMAGE_LABELS),
        ],
    },
    "AnalyzeImage": {
        "get_item": [("dynamodb:GetItem", IMAGES)],
        "transact_write_items": [
            ("dynamodb:PutItem", IMAGES),
            ("dynamodb:PutItem", IMAGE_LABELS),
            ("dynamodb:DeleteItem", IMAGE_LABELS),
        ],
        "send_message": [("sqs:SendMessage", THUMBNAILS_QUEUE)],
        "get_queue_url": [
            ("sqs:GetQueueUrl", THUMBNAILS_QUEUE),
            ("sqs:GetQueueUrl", UPLOADS_QUEUE),
        ],
        "delete_message_batch": [("sqs:DeleteMessage", UPLOADS_QUEUE)],
    },
    "MakeThumbnails": {
        "get_item": [("dynamodb:GetItem", IMAGES)],
        "update_item": [("dynamodb:UpdateItem", IMAGES)],
        "put_object": [("s3:PutObject", THUMBNAIL_OBJECT)],
        "get_queue_url": [("sqs:GetQueueUrl", THUMBNAILS_QUEUE)],
        "delete_message_batch": [("sqs:DeleteMessage", THUMBNAILS_QUEUE)],
    },
    "IndexUsersForSearch": {"batch_get_item": [("dynamodb:BatchGetItem", SEARCH_TABLE)]},
    "ProcessTelemetry": {
        "batch_write_item": [("dynamodb:BatchWriteItem", t) for t in TELEMETRY_TABLES],
        "query": [("dynamodb:Query", BY_USER_INDEX)],
        "batch_get_item": [("dynamodb:BatchGetItem", BASELINES)],
        "get_item": [("dynamodb:GetItem", BASELINES)],
        "update_item": [("dynamodb:UpdateItem", BASELINES)],
        "publish_batch": [("sns:Publish", ALERTS_TOPIC)],
        "get_queue_url": [("sqs:GetQueueUrl", QUARANTINE)],
    },
}
#: What a function needs beyond its own calls: its event source mapping's reads, and the
#: calls libraries make for it (Powertools' idempotency records).
STREAM_READS = [
    (a, USERS_STREAM)
    for a in ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
              "dynamodb:ListStreams")
] + [("sqs:SendMessage", STREAM_FAILURES)]  # fmt: skip
PLATFORM_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    # Presigned requests act with the signer's permissions: the API's role.
    "APIHandler": [("s3:PutObject", UPLOAD_OBJECT), ("s3:GetObject", UPLOAD_OBJECT),
                   ("s3:GetObject", THUMBNAIL_OBJECT)],
    # HeadObject of a missing key is a 404 only with ListBucket (else 403).
    "AnalyzeImage": [
        ("s3:ListBucket", "arn:aws:s3:::{UploadsBucket}"),
        *[(a, UPLOADS_QUEUE) for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage",
                                       "sqs:GetQueueAttributes")],
    ],
    "MakeThumbnails": [
        (a, THUMBNAILS_QUEUE) for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage",
                                        "sqs:GetQueueAttributes")
    ],
    "PublishUserEvents": STREAM_READS,
    "IndexUsersForSearch": STREAM_READS,
    "WelcomeNewUser": [
        *[(a, IDEMPOTENCY_TABLE) for a in ("dynamodb:GetItem", "dynamodb:PutItem",
                                           "dynamodb:UpdateItem", "dynamodb:DeleteItem")],
        ("sqs:SendMessage", WELCOME_DLQ),
    ],
    "OnboardUsers": [
        (a, QUEUE) for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    ],
    "ProcessTelemetry": [
        *[(a, TELEMETRY_STREAM) for a in ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                                          "kinesis:GetRecords", "kinesis:GetShardIterator",
                                          "kinesis:ListShards", "kinesis:ListStreams",
                                          "kinesis:SubscribeToShard")],
        ("sqs:SendMessage", TELEMETRY_FAILURES),
    ],
}  # fmt: skip


def policy_path(stage: str, logical_id: str = "APIHandler") -> Path:
    return PROJECT_DIR / ".chalice" / FUNCTION_POLICIES[logical_id][0].format(stage=stage)


def load_policy(stage: str, logical_id: str = "APIHandler") -> dict[str, Any]:
    return json.loads(policy_path(stage, logical_id).read_text())


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(policy: dict[str, Any], action: str, resource: str, stage: str) -> bool:
    """Whether the identity policy allows `action` on `resource` of `stage` (Allow-only
    policies; conditions are checked against the request `stage`'s code makes: the tags
    resources.json gives that stage's resources, and the stage's welcome email sender)."""
    context = {
        "aws:ResourceTag/app": "serverless-app",
        "aws:ResourceTag/stage": stage,
        "ses:FromAddress": CONFIG["stages"][stage]["environment_variables"]["WELCOME_EMAIL_SENDER"],
    }
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"]))
        and any(fnmatchcase(resource, r) for r in as_list(statement["Resource"]))
        and all(
            context.get(key) == value
            for key, value in statement.get("Condition", {}).get("StringEquals", {}).items()
        )
        for statement in policy["Statement"]
    )


def source_text(root: Path = CHALICELIB) -> str:
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.py")))


def aws_operations_called(root: Path = CHALICELIB) -> set[str]:
    """boto3 client operations named in the code: `.op(` calls and paginator names."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    operations = {
        xform_name(name)
        for service in SCANNED_SERVICES
        for name in session.get_service_model(service).operation_names
    }
    text = source_text(root)
    called = set(re.findall(r"\.(\w+)\(", text)) & operations
    called |= set(re.findall(r"get_paginator\(\s*[\"'](\w+)[\"']", text))
    return called


def list_index() -> str:
    """The index the repository queries (read from source: importing chalicelib here would
    configure its module-level Logger/Metrics without the stage environment)."""
    source = (CHALICELIB / "users" / "repository.py").read_text()
    [index] = re.findall(r"^LIST_INDEX = \"([\w.-]+)\"$", source, flags=re.M)
    return index


@cache
def function_names(stage: str) -> dict[str, str]:
    return package_function_names(stage)


def required_permissions(stage: str, logical_id: str = "APIHandler") -> set[tuple[str, str]]:
    """(action, concrete ARN) pairs a function needs in `stage`, logs and X-Ray included."""
    fields = {"region": REGION, "account": ACCOUNT, "index": list_index(), **resource_names(stage)}
    called = FUNCTION_POLICIES[logical_id][1]
    resources = {**OPERATION_PERMISSIONS, **FUNCTION_RESOURCES.get(logical_id, {})}
    needed = {
        (action, arn.format(**fields))
        for operation in called
        for action, arn in resources.get(operation, [])
    }
    needed |= {(a, arn.format(**fields)) for a, arn in PLATFORM_PERMISSIONS.get(logical_id, [])}
    if "transact_write_items" in called and logical_id == "APIHandler":
        kinds = set(re.findall(r"[\"'](\w+)[\"']\s*:", source_text(CHALICELIB / "users")))
        kinds &= set(TRANSACT_ITEM_ACTIONS)
        needed |= {(TRANSACT_ITEM_ACTIONS[k], TABLE.format(**fields)) for k in kinds}
    group = (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{function_names(stage)[logical_id]}"
    )
    needed.add(("logs:CreateLogGroup", group))
    needed |= {(a, f"{group}:log-stream:2026/01/01/[$LATEST]abc") for a in LOG_ACTIONS[1:]}
    needed |= {(action, "*") for action in XRAY_ACTIONS}
    return needed


# --- packaging (one `chalice package` per packaged stage per session) -----------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], PackageResult]:
    out_root = tmp_path_factory.mktemp("out")
    done: dict[str, PackageResult] = {}

    def get(stage: str) -> PackageResult:
        if stage not in done:
            done[stage] = package(stage, out_root=out_root)
        return done[stage]

    return get


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == SERVERLESS_FUNCTION}


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_template_passes_cfn_lint_and_sam_transform(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    result = packaged(stage)
    errors, _ = cfn_lint(result.template_path)
    assert errors == []
    transformed = sam_transform(result.template)
    types = {r["Type"] for r in transformed["Resources"].values()}
    assert not [t for t in types if t.startswith("AWS::Serverless::")]
    lambdas = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert lambdas and all(f["Properties"]["Runtime"] == TARGET_RUNTIME for f in lambdas)


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_functions_run_python312_under_chalice_deploy_names(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    template = packaged(stage).template
    found = functions(template)
    assert API_HANDLER_LOGICAL_ID in found
    names = function_names(stage)
    for logical_id, function in found.items():
        assert function["Properties"]["Runtime"] == TARGET_RUNTIME, logical_id
        assert function["Properties"]["FunctionName"] == names[logical_id]
    assert found[API_HANDLER_LOGICAL_ID]["Properties"]["FunctionName"] == f"serverless-app-{stage}"


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_stage_parameter_is_pinned(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    parameter = packaged(stage).template["Parameters"]["Stage"]
    assert parameter["Default"] == stage
    assert parameter["AllowedValues"] == [stage]


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_template_holds_every_resource_unchanged(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    template = packaged(stage).template
    for logical_id, resource in RESOURCES["Resources"].items():
        assert template["Resources"][logical_id] == resource, logical_id
    for name, output in RESOURCES["Outputs"].items():
        assert template["Outputs"][name] == output, name
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_function_has_the_stage_config_and_policy(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    result = packaged(stage)
    stage_config = CONFIG["stages"][stage]
    # A per-function override (lambda_functions.api_handler) wins over the stage's value.
    overrides = stage_config.get("lambda_functions", {}).get("api_handler", {})
    effective = {**stage_config, **overrides}
    properties = functions(result.template)[API_HANDLER_LOGICAL_ID]["Properties"]
    assert properties["Environment"]["Variables"] == stage_config["environment_variables"]
    assert properties["Tracing"] == "Active"
    assert properties["MemorySize"] == effective["lambda_memory_size"]
    assert properties["Timeout"] == effective["lambda_timeout"]
    assert properties.get("ReservedConcurrentExecutions") == effective.get("reserved_concurrency")
    assert stage_config["tags"].items() <= properties["Tags"].items()
    for logical_id in FUNCTION_POLICIES:
        role_id = functions(result.template)[logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        [role_policy] = result.template["Resources"][role_id]["Properties"]["Policies"]
        assert role_policy["PolicyDocument"] == load_policy(stage, logical_id)


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_deployment_zip_holds_the_app_and_no_boto(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    result = packaged(stage)
    code_uri = functions(result.template)[API_HANDLER_LOGICAL_ID]["Properties"]["CodeUri"]
    # `aws cloudformation package` resolves CodeUri relative to the template's directory.
    assert (result.template_path.parent / code_uri).resolve() == result.zip_path.resolve()
    with zipfile.ZipFile(result.zip_path) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {"app.py", "chalicelib", "aws_lambda_powertools", "PIL"} <= top
    check_deployment_zip(result.zip_path)  # Pillow built for python3.12, every requirement
    assert not top & {"boto3", "botocore"}, "Lambda's runtime has boto3; keep it out of the zip"


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_event_sources_lose_nothing(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    """What Chalice cannot express, merged from infra/functions.json (infra/deploy.py applies
    the same after `chalice deploy`)."""
    found = functions(packaged(stage).template)
    for logical_id in ("PublishUserEvents", "IndexUsersForSearch"):
        [source] = found[logical_id]["Properties"]["Events"].values()
        assert source["Type"] == "DynamoDB"
        properties = source["Properties"]
        assert properties["Stream"] == {"Fn::GetAtt": ["UsersTable", "StreamArn"]}
        assert properties["StartingPosition"] == "TRIM_HORIZON"
        assert properties["BisectBatchOnFunctionError"] is True
        assert properties["MaximumRetryAttempts"] == 10
        assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["UsersStreamFailureQueue", "Arn"]
        }
    invoke = found["WelcomeNewUser"]["Properties"]["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": {"Fn::GetAtt": ["WelcomeDeadLetterQueue", "Arn"]},
    }
    [onboarding] = found["OnboardUsers"]["Properties"]["Events"].values()
    assert onboarding["Properties"]["BatchSize"] == 10
    assert onboarding["Properties"]["MaximumBatchingWindowInSeconds"] == 5
    assert onboarding["Properties"]["Queue"] == {"Fn::GetAtt": ["OnboardingQueue", "Arn"]}


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_every_event_source_refers_to_its_resource_so_it_is_created_first(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    """An ARN built as a string (Chalice's `Fn::Sub`) gives CloudFormation no dependency: a
    subscription or mapping could be created before its topic or queue, failing the stack."""
    template = packaged(stage).template
    for logical_id, function in functions(template).items():
        for name, source in function["Properties"].get("Events", {}).items():
            if source["Type"] == "Api":
                continue
            target = next(
                source["Properties"][key] for key in ("Stream", "Queue", "Topic", "Schedule")
                if key in source["Properties"]
            )  # fmt: skip
            if source["Type"] == "Schedule":
                continue
            (function_name, args), *_ = target.items()
            resource = args if function_name == "Ref" else args[0]
            assert function_name in ("Ref", "Fn::GetAtt"), (logical_id, name, target)
            assert resource in template["Resources"], (logical_id, name, resource)


def test_sam_translator_catches_what_cfn_lint_misses(
    packaged: Callable[[str], PackageResult],
) -> None:
    template = copy.deepcopy(packaged("dev").template)
    template["Resources"][API_HANDLER_LOGICAL_ID]["Properties"]["Events"] = {
        "Onboard": {
            "Type": "SQS",
            "Properties": {
                "Queue": {"Fn::GetAtt": ["OnboardingQueue", "Arn"]},
                "FunctionResponseTypez": ["ReportBatchItemFailures"],
            },
        }
    }
    with pytest.raises(PackagingError, match="FunctionResponseTypez"):
        sam_transform(template)


# --- package.py's pure steps (fast) -----------------------------------------------------


def test_cfn_lint_reports_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Resources": {"Typo": {"Properties": {}}}}))
    errors, _ = cfn_lint(bad)
    assert any("E3001" in e for e in errors)


def test_merge_document_pins_stage_without_touching_resources_json() -> None:
    original = copy.deepcopy(RESOURCES)
    document = merge_document("prod", RESOURCES)
    assert document["Parameters"]["Stage"]["Default"] == "prod"
    assert document["Parameters"]["Stage"]["AllowedValues"] == ["prod"]
    api_responses = json.loads((PROJECT_DIR / "infra" / "api-responses.json").read_text())
    settings = json.loads((PROJECT_DIR / "infra" / "functions.json").read_text())
    assert document["Resources"] == {
        **RESOURCES["Resources"],
        **api_responses["Resources"],
        **settings["Resources"],
    }
    assert original == RESOURCES
    with pytest.raises(PackagingError):
        merge_document("qa", RESOURCES)


def _sample_template() -> dict[str, Any]:
    function = {"Type": SERVERLESS_FUNCTION, "Properties": {"Runtime": "python3.11"}}
    return {
        "Parameters": {"Stage": {"Type": "String", "AllowedValues": ["dev", "prod"]}},
        "Resources": {
            "APIHandler": copy.deepcopy(function),
            "Onboard": copy.deepcopy(function),
            "UsersTable": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
        },
    }


def test_finalize_template_is_deterministic_and_idempotent() -> None:
    names = {"APIHandler": "serverless-app-dev", "Onboard": "serverless-app-dev-onboard"}
    template = _sample_template()
    once = finalize_template(template, "dev", names)
    assert template == _sample_template(), "the input must not change"
    assert finalize_template(once, "dev", names) == once
    assert json.dumps(once) == json.dumps(finalize_template(_sample_template(), "dev", names))
    for logical_id, name in names.items():
        properties = once["Resources"][logical_id]["Properties"]
        assert properties == {"Runtime": TARGET_RUNTIME, "FunctionName": name}
    assert once["Resources"]["UsersTable"] == template["Resources"]["UsersTable"]
    assert once["Parameters"]["Stage"]["AllowedValues"] == ["dev"]


def test_finalize_template_refuses_unknown_functions_and_missing_stage() -> None:
    with pytest.raises(PackagingError, match="Onboard"):
        finalize_template(_sample_template(), "dev", {"APIHandler": "serverless-app-dev"})
    template = _sample_template()
    del template["Parameters"]
    with pytest.raises(PackagingError, match="Stage"):
        finalize_template(template, "dev", {})


def test_deployment_zip_check_refuses_other_cpython_extensions(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("pkg/_speedups.cpython-312-x86_64-linux-gnu.so", b"")
        archive.writestr("pkg/_abi3.abi3.so", b"")
        archive.writestr("pkg/__pycache__/mod.cpython-311.pyc", b"")
    check_deployment_zip(good, required=[])
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("pkg/_speedups.cpython-311-x86_64-linux-gnu.so", b"")
    with pytest.raises(PackagingError, match="cpython-311"):
        check_deployment_zip(bad, required=[])


def test_deployment_zip_check_refuses_missing_requirements_and_local_builds(
    tmp_path: Path,
) -> None:
    """Chalice says "Could not install dependencies" and exits 0; or, finding no manylinux
    wheel, compiles one here against this machine's libraries. Both would break on Lambda."""
    wheel = "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n"
    fine = tmp_path / "fine.zip"
    with zipfile.ZipFile(fine, "w") as archive:
        archive.writestr(
            "pillow-13.0.0.dist-info/WHEEL", wheel.format(tag="cp312-cp312-manylinux_2_28_x86_64")
        )
        archive.writestr("PyJWT-2.15.1.dist-info/METADATA", "")
    check_deployment_zip(fine, required=["pillow", "pyjwt"])
    with pytest.raises(PackagingError, match="lacks \\['rsa'\\]"):
        check_deployment_zip(fine, required=["pillow", "rsa"])
    local = tmp_path / "local.zip"
    with zipfile.ZipFile(local, "w") as archive:
        archive.writestr(
            "pillow-13.0.0.dist-info/WHEEL", wheel.format(tag="cp312-cp312-linux_x86_64")
        )
    with pytest.raises(PackagingError, match="compiled on this machine"):
        check_deployment_zip(local, required=["pillow"])


# --- config.json and resources.json agree, for every stage -----------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_resource_env_vars_match_resources_json(stage: str) -> None:
    env = CONFIG["stages"][stage]["environment_variables"]
    names = resource_names(stage)
    for variable, logical_id in RESOURCE_ENV.items():
        assert env[variable] == names[logical_id], variable


def test_every_resource_name_setting_is_checked_for_drift() -> None:
    settings = (CHALICELIB / "core" / "settings.py").read_text()
    read = set(re.findall(r"_required\(\"(\w+_(?:NAME|PARAMETER))\"\)", settings))
    assert read == set(RESOURCE_ENV)


def test_list_index_exists_in_resources_json() -> None:
    table = RESOURCES["Resources"]["UsersTable"]["Properties"]
    assert list_index() in {i["IndexName"] for i in table["GlobalSecondaryIndexes"]}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_config_is_complete(stage: str) -> None:
    stage_config = CONFIG["stages"][stage]
    assert CONFIG["autogen_policy"] is False and "autogen_policy" not in stage_config
    assert stage_config["xray"] is True
    assert stage_config["tags"] == {"app": CONFIG["app_name"], "stage": stage}
    assert stage_config["environment_variables"]["APP_STAGE"] == stage
    assert stage_config["iam_policy_file"] == f"policy-{stage}.json"
    assert isinstance(stage_config["lambda_memory_size"], int)
    assert 128 <= stage_config["lambda_memory_size"] <= 10240
    # API Gateway stops waiting for a REST integration after 29 s.
    assert 1 <= stage_config["lambda_timeout"] <= 29
    assert "manage_iam_role" not in stage_config and "iam_role_arn" not in stage_config


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_packages_python312_functions(stage: str) -> None:
    """Without running chalice: the post-processing every packaged stage goes through."""
    names = function_names(stage)
    template = {
        "Parameters": {"Stage": {"Type": "String"}},
        "Resources": {lid: {"Type": SERVERLESS_FUNCTION, "Properties": {}} for lid in names},
    }
    final = finalize_template(template, stage, names)
    assert {f["Properties"]["Runtime"] for f in functions(final).values()} == {TARGET_RUNTIME}


# --- IAM policies: exactly what the code calls, on the stage's resources ---------------


def test_every_aws_call_is_known() -> None:
    text = source_text()
    services = set(re.findall(r"client\(\s*[\"']([\w-]+)[\"']", text))
    assert services <= KNOWN_SERVICES, "a new service: add its calls to OPERATION_PERMISSIONS"
    assert "boto3.resource" not in text and ".resource(" not in text
    called = aws_operations_called()
    unknown = called - set(OPERATION_PERMISSIONS)
    assert not unknown, f"calls with no IAM mapping: {unknown}; map them and extend the policies"
    assert {"get_item", "query", "transact_write_items", "publish_batch", "send_email"} <= called


def test_every_aws_call_belongs_to_a_function() -> None:
    assigned = set().union(*(calls for _, calls in FUNCTION_POLICIES.values()))
    assert aws_operations_called() <= assigned, "give the new call to the function that makes it"
    assert aws_operations_called(CHALICELIB / "auth") <= FUNCTION_POLICIES["CognitoJwt"][1]


def test_policy_files_are_generated_from_infra_policies() -> None:
    from infra.policies import functions, policy_file, rendered

    assert {p.name for p in rendered()} == {
        FUNCTION_POLICIES[lid][0].format(stage=stage)
        for lid in FUNCTION_POLICIES
        for stage in STAGES
    }
    assert len(functions()) == len(FUNCTION_POLICIES)
    for path, text in rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m infra.policies"
    assert policy_file("dev", "api_handler") == "policy-dev.json"


@pytest.mark.parametrize("stage", STAGES)
def test_welcome_email_may_only_come_from_the_stage_sender(stage: str) -> None:
    [statement] = [
        s
        for s in load_policy(stage, "WelcomeNewUser")["Statement"]
        if "ses:SendEmail" in s["Action"]
    ]
    sender = CONFIG["stages"][stage]["environment_variables"]["WELCOME_EMAIL_SENDER"]
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": sender}}


@pytest.mark.parametrize("logical_id", FUNCTION_POLICIES)
@pytest.mark.parametrize("stage", STAGES)
def test_policy_allows_every_call_the_code_makes(stage: str, logical_id: str) -> None:
    policy = load_policy(stage, logical_id)
    needed = required_permissions(stage, logical_id)
    missing = sorted(p for p in needed if not allows(policy, *p, stage))
    assert not missing, f"{policy_path(stage, logical_id).name} does not allow: {missing}"


@pytest.mark.parametrize("logical_id", FUNCTION_POLICIES)
@pytest.mark.parametrize("stage", STAGES)
def test_policy_grants_nothing_more(stage: str, logical_id: str) -> None:
    policy = load_policy(stage, logical_id)
    granted = {a for s in policy["Statement"] for a in as_list(s["Action"])}
    assert granted == {action for action, _ in required_permissions(stage, logical_id)}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        if "Condition" in statement:  # resources named at deploy time: pinned by tag instead
            condition = statement["Condition"]["StringEquals"]
            assert condition in (
                {"aws:ResourceTag/app": "serverless-app", "aws:ResourceTag/stage": stage},
                {
                    "ses:FromAddress": CONFIG["stages"][stage]["environment_variables"][
                        "WELCOME_EMAIL_SENDER"
                    ]
                },
            ), condition
        assert not any("*" in a for a in as_list(statement["Action"]))
        if "*" in as_list(statement["Resource"]):
            unscoped = (*XRAY_ACTIONS, "rekognition:DetectLabels")  # no resource-level IAM
            assert all(a in unscoped for a in as_list(statement["Action"])), statement
    other_stages = [s for s in STAGES if s != stage]
    for stage_b in other_stages:
        required_b = required_permissions(stage_b, logical_id)
        leaked = [p for p in required_b if p[1] != "*" and allows(policy, *p, stage_b)]
        assert not leaked, f"{policy_path(stage, logical_id).name} allows {stage_b}: {leaked}"


@pytest.mark.parametrize("logical_id", FUNCTION_POLICIES)
@pytest.mark.parametrize("stage", STAGES)
def test_policy_names_only_its_stage_and_no_account_or_region(stage: str, logical_id: str) -> None:
    text = policy_path(stage, logical_id).read_text()
    assert set(re.findall(r"serverless-app[-/]([a-z0-9]+)", text)) == {stage}
    assert not re.search(r"\d{12}", text)
    for statement in load_policy(stage, logical_id)["Statement"]:
        for arn in as_list(statement["Resource"]):
            if arn == "*":
                continue
            parts = arn.split(":")
            assert parts[:2] == ["arn", "aws"], arn
            # S3 ARNs name no region or account; every other ARN leaves both open.
            assert parts[3:5] == (["", ""] if parts[2] == "s3" else ["*", "*"]), arn


def test_user_pool_carries_the_tags_the_policy_condition_expects() -> None:
    tags = RESOURCES["Resources"]["UserPool"]["Properties"]["UserPoolTags"]
    assert tags == {"app": "serverless-app", "stage": {"Ref": "Stage"}}


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_api_gateway_errors_are_shaped_like_the_apps(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    responses = packaged(stage).template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"
    for response in responses.values():
        body = response["ResponseTemplates"]["application/json"]
        assert '"error": {"code": ' in body and "$context.requestId" in body


def test_bytecode_is_stripped_from_the_zip(tmp_path: Path) -> None:
    from infra.package import strip_bytecode

    zip_path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("app.py", "print(1)")
        archive.writestr("chalicelib/__pycache__/x.cpython-311.pyc", b"\0")
        archive.writestr("lib/mod.pyc", b"\0")
    assert strip_bytecode(zip_path) == 2
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["app.py"]
        assert archive.read("app.py") == b"print(1)"
    assert strip_bytecode(zip_path) == 0


@pytest.mark.parametrize("stage", PACKAGED_STAGES)
def test_packaged_zip_holds_no_bytecode(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    with zipfile.ZipFile(packaged(stage).zip_path) as archive:
        names = archive.namelist()
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__/" in n]


def test_cfn_lint_failing_to_run_is_not_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    monkeypatch.setattr("infra.package.DEFAULT_REGION", "nowhere-1")
    with pytest.raises(PackagingError, match="cfn-lint failed"):
        cfn_lint(bad)


@pytest.mark.parametrize("stage", STAGES)
def test_uploads_bucket_allows_the_stages_cors_origins(stage: str) -> None:
    """Browsers post to the presigned upload directly: the bucket's CORS origins are the
    API's (CORS_ALLOW_ORIGINS), kept in a mapping per stage."""
    origins = CONFIG["stages"][stage]["environment_variables"]["CORS_ALLOW_ORIGINS"]
    assert RESOURCES["Mappings"]["StageSettings"][stage]["CorsAllowOrigins"] == origins
    [rule] = RESOURCES["Resources"]["UploadsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert set(rule["AllowedMethods"]) == {"GET", "POST"}


def test_uploads_notify_the_analysis_queue_which_lets_only_that_bucket_send() -> None:
    bucket = RESOURCES["Resources"]["UploadsBucket"]
    assert "ImageUploadsQueuePolicy" in bucket["DependsOn"], "S3 checks the policy on create"
    [target] = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert target["Queue"] == {"Fn::GetAtt": ["ImageUploadsQueue", "Arn"]}
    assert target["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "uploads/"}]
    policy = RESOURCES["Resources"]["ImageUploadsQueuePolicy"]["Properties"]["PolicyDocument"]
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":s3:::serverless-app-${Stage}-uploads")
