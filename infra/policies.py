"""The IAM policy of every function, for every stage: `.chalice/policy-<stage>[-<function>].json`.

Chalice (with `autogen_policy: false`) gives each function a role holding its policy file
verbatim, and needs one file per stage. They are generated from the declarations below, so
that a function's permissions are written once, on its own stage's resources only:

    python -m infra.policies          # rewrite the files
    python -m infra.policies --check  # exit 1 if a file is out of date (tests run it)

`tests/unit/test_deploy.py` checks the result against the calls the code makes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.paths import PROJECT_DIR

CHALICE_DIR = PROJECT_DIR / ".chalice"
STAGES = ("dev", "staging", "prod")
APP = "serverless-app"

TABLE = "arn:aws:dynamodb:*:*:table/serverless-app-{stage}-{name}"
TOPIC = "arn:aws:sns:*:*:serverless-app-{stage}-{name}"
QUEUE = "arn:aws:sqs:*:*:serverless-app-{stage}-{name}"
UPLOADS_BUCKET = "arn:aws:s3:::serverless-app-{stage}-uploads"
UPLOADS = UPLOADS_BUCKET + "/uploads/*"
THUMBNAILS = "arn:aws:s3:::serverless-app-{stage}-uploads/thumbnails/*"
TELEMETRY_STREAM = "arn:aws:kinesis:*:*:stream/serverless-app-{stage}-telemetry"
KINESIS_READ = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
    "kinesis:ListStreams",
    "kinesis:SubscribeToShard",
)
STREAM_READ = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
)


@dataclass(frozen=True)
class Grant:
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, Any] | None = None


def _users_stream_readers() -> list[Grant]:
    """What a consumer of the users table's stream needs: read the stream, and send a batch
    that failed every retry to the failure queue (Lambda's on-failure destination)."""
    return [
        Grant(
            "UsersTableStream",
            STREAM_READ,
            (TABLE.format(stage="{stage}", name="users") + "/stream/*",),
        ),
        Grant(
            "UsersStreamFailures",
            ("sqs:SendMessage",),
            (QUEUE.format(stage="{stage}", name="users-stream-failures"),),
        ),
    ]


def _sqs_consumer(queue: str) -> list[Grant]:
    """What an SQS-triggered function needs: its event source mapping receives and deletes
    with the function's role, and `process_sqs_messages` deletes what succeeded."""
    return [
        Grant(
            "EventQueue",
            ("sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
             "sqs:ReceiveMessage"),
            (QUEUE.format(stage="{stage}", name=queue),),
        )
    ]  # fmt: skip


def _grants() -> dict[str, tuple[str, list[Grant]]]:
    """Function (Chalice name) -> (policy file suffix, grants); `{stage}` is filled in later."""
    users = TABLE.format(stage="{stage}", name="users")
    search = TABLE.format(stage="{stage}", name="search")
    idempotency = TABLE.format(stage="{stage}", name="idempotency")
    cognito_config = "arn:aws:ssm:*:*:parameter/serverless-app/{stage}/cognito"
    images = TABLE.format(stage="{stage}", name="images")
    labels = TABLE.format(stage="{stage}", name="image-labels")
    tagged = {"StringEquals": {"aws:ResourceTag/app": APP, "aws:ResourceTag/stage": "{stage}"}}
    return {
        "api_handler": (
            "",
            [
                Grant(
                    "UsersTableItems",
                    ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
                     "dynamodb:UpdateItem"),
                    (users,),
                ),
                Grant("UsersTableListIndex", ("dynamodb:Query",), (users + "/index/by-created",)),
                Grant("SearchResultProfiles", ("dynamodb:BatchGetItem",), (users,)),
                Grant("SearchIndexQueries", ("dynamodb:Query",), (search,)),
                Grant("TelemetryIngest", ("kinesis:PutRecords",), (TELEMETRY_STREAM,)),
                # Presigned uploads and links act with the signer's (this role's) permissions.
                Grant("ImageUploads", ("s3:PutObject",), (UPLOADS,)),
                Grant("ImageLinks", ("s3:GetObject",), (UPLOADS, THUMBNAILS)),
                Grant("ImageRecords", ("dynamodb:BatchGetItem", "dynamodb:GetItem"), (images,)),
                Grant("ImageLists", ("dynamodb:Query",), (images + "/index/by-owner", labels)),
                Grant(
                    "CognitoUsers",
                    ("cognito-idp:AdminCreateUser", "cognito-idp:AdminDeleteUser",
                     "cognito-idp:AdminGetUser", "cognito-idp:AdminSetUserPassword",
                     "cognito-idp:AdminUpdateUserAttributes"),
                    ("arn:aws:cognito-idp:*:*:userpool/*",),
                    tagged,
                ),
                Grant("CognitoConfig", ("ssm:GetParameter",), (cognito_config,)),
            ],
        ),
        "analyze_image": (
            "-analyze_image",
            [
                *_sqs_consumer("image-uploads"),
                Grant("ReadUploads", ("s3:GetObject",), (UPLOADS,)),
                # So that S3 answers a deleted upload's HeadObject with 404, not 403.
                Grant("UploadsBucket", ("s3:ListBucket",), (UPLOADS_BUCKET,)),
                # Rekognition reads the S3 object with the caller's permissions (above).
                Grant("ImageLabels", ("rekognition:DetectLabels",), ("*",)),
                # Record and label entries are written in one transaction (Put, Delete).
                Grant("ImageRecords", ("dynamodb:GetItem", "dynamodb:PutItem"), (images,)),
                Grant("ImageLabelEntries", ("dynamodb:DeleteItem", "dynamodb:PutItem"), (labels,)),
                Grant(
                    "ThumbnailTasks",
                    ("sqs:GetQueueUrl", "sqs:SendMessage"),
                    (QUEUE.format(stage="{stage}", name="thumbnails"),),
                ),
            ],
        ),
        "make_thumbnails": (
            "-make_thumbnails",
            [
                *_sqs_consumer("thumbnails"),
                Grant("ReadUploads", ("s3:GetObject",), (UPLOADS,)),
                Grant("WriteThumbnails", ("s3:PutObject",), (THUMBNAILS,)),
                Grant("ImageRecords", ("dynamodb:GetItem", "dynamodb:UpdateItem"), (images,)),
            ],
        ),
        "cognito_jwt": (
            "-authorizer",
            [Grant("CognitoConfig", ("ssm:GetParameter",), (cognito_config,))],
        ),
        "publish_user_events": (
            "-publish_user_events",
            [
                *_users_stream_readers(),
                Grant(
                    "UserEventTopics",
                    ("sns:Publish",),
                    (TOPIC.format(stage="{stage}", name="user-created"),
                     TOPIC.format(stage="{stage}", name="user-updated")),
                ),
            ],
        ),
        "index_users_for_search": (
            "-index_users_for_search",
            [
                *_users_stream_readers(),
                Grant(
                    "SearchIndexWrites",
                    ("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"),
                    (search,),
                ),
            ],
        ),
        "welcome_new_user": (
            "-welcome_new_user",
            [
                Grant("UsersTableItems", ("dynamodb:GetItem", "dynamodb:UpdateItem"), (users,)),
                Grant(
                    "WelcomeIdempotency",
                    ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
                     "dynamodb:UpdateItem"),
                    (idempotency,),
                ),
                Grant(
                    "WelcomeEmail",
                    ("ses:SendEmail",),
                    ("arn:aws:ses:*:*:identity/*",),
                    {"StringEquals": {"ses:FromAddress": "{sender}"}},
                ),
                # Lambda's own dead-letter queue for this asynchronously invoked function.
                Grant(
                    "WelcomeDeadLetters",
                    ("sqs:SendMessage",),
                    (QUEUE.format(stage="{stage}", name="welcome-dlq"),),
                ),
            ],
        ),
        "process_telemetry": (
            "-process_telemetry",
            [
                # The event source mapping reads the stream with the function's role; a batch
                # that failed every retry goes to the failure queue (on-failure destination).
                Grant("TelemetryStream", KINESIS_READ, (TELEMETRY_STREAM,)),
                Grant(
                    "TelemetryStreamFailures",
                    ("sqs:SendMessage",),
                    (QUEUE.format(stage="{stage}", name="telemetry-stream-failures"),),
                ),
                Grant(
                    "TelemetryTables",
                    ("dynamodb:BatchWriteItem",),
                    (
                        TABLE.format(stage="{stage}", name="activities"),
                        TABLE.format(stage="{stage}", name="metrics"),
                        TABLE.format(stage="{stage}", name="transactions"),
                    ),
                ),
                Grant(
                    "FraudVelocity",
                    ("dynamodb:Query",),
                    (TABLE.format(stage="{stage}", name="transactions") + "/index/by-user",),
                ),
                Grant(
                    "MetricBaselines",
                    ("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
                    (TABLE.format(stage="{stage}", name="baselines"),),
                ),
                Grant(
                    "AnomalyAlerts",
                    ("sns:Publish",),
                    (TOPIC.format(stage="{stage}", name="anomaly-alerts"),),
                ),
                Grant(
                    "DataLakeArchive",
                    ("s3:PutObject",),
                    ("arn:aws:s3:::serverless-app-{stage}-data-lake/telemetry/*",),
                ),
                Grant(
                    "TelemetryQuarantine",
                    ("sqs:GetQueueUrl", "sqs:SendMessage"),
                    (QUEUE.format(stage="{stage}", name="telemetry-quarantine"),),
                ),
            ],
        ),
        "onboard_users": (
            "-onboard_users",
            [
                Grant(
                    "OnboardingQueue",
                    ("sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                     "sqs:ReceiveMessage"),
                    (QUEUE.format(stage="{stage}", name="onboarding"),),
                ),
                Grant("UsersTableItems", ("dynamodb:GetItem", "dynamodb:UpdateItem"), (users,)),
            ],
        ),
    }  # fmt: skip


def function_name(stage: str, function: str) -> str:
    """The name `chalice deploy` gives a function (the API's handler has the app's name)."""
    return f"{APP}-{stage}" if function == "api_handler" else f"{APP}-{stage}-{function}"


def policy_file(stage: str, function: str) -> str:
    return f"policy-{stage}{_grants()[function][0]}.json"


def functions() -> list[str]:
    return list(_grants())


def policy(stage: str, function: str, sender: str) -> dict[str, Any]:
    """The policy document for `function` in `stage`: its grants, its logs and X-Ray."""
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(stage, function)}"
    grants = [
        *_grants()[function][1],
        Grant(
            "FunctionLogs",
            ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"),
            (group, group + ":*"),
        ),
        Grant("XRayTracing", ("xray:PutTelemetryRecords", "xray:PutTraceSegments"), ("*",)),
    ]

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{stage}", stage).replace("{sender}", sender)
        if isinstance(value, dict):
            return {fill(k): fill(v) for k, v in value.items()}
        return [fill(v) for v in value]

    statements = []
    for grant in grants:
        statement: dict[str, Any] = {
            "Sid": grant.sid,
            "Effect": "Allow",
            "Action": sorted(grant.actions),
            "Resource": fill(list(grant.resources)),
        }
        if grant.condition:
            statement["Condition"] = fill(grant.condition)
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def rendered() -> dict[Path, str]:
    """Every policy file's path and text."""
    config = json.loads((CHALICE_DIR / "config.json").read_text())
    files = {}
    for stage in STAGES:
        sender = config["stages"][stage]["environment_variables"]["WELCOME_EMAIL_SENDER"]
        for function in functions():
            text = json.dumps(policy(stage, function, sender), indent=2) + "\n"
            files[CHALICE_DIR / policy_file(stage, function)] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = [p for p, text in rendered().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(PROJECT_DIR)} (run python -m infra.policies)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(rendered()[path])
        print(f"wrote {path.relative_to(PROJECT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
