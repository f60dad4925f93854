"""Path B: `chalice deploy`, made loss-proof. `make deploy STAGE=prod` runs it.

`chalice deploy` cannot express some settings the app relies on, which `chalice package`
merges from `infra/functions.json`. This applies that same file after `chalice deploy`, with
the Lambda API, so both paths deploy the same functions:

- the users table's stream ARN, which the app's stream consumers name when Chalice loads it
  (read from the resources stack's output `UsersTableStreamArn`, given to `chalice deploy` as
  `USERS_TABLE_STREAM_ARN`);
- each event source's settings (`Events.<name>.Properties`): ReportBatchItemFailures,
  BisectBatchOnFunctionError, MaximumRetryAttempts, the on-failure destination;
- each function's `EventInvokeConfig` (retries and on-failure destination of asynchronous
  invocations).

Chalice does not touch these settings when it deploys again, and applying them twice changes
nothing. Then the REST API gets what `make package` merges from infra/api-responses.json
(gateway responses, stage throttling, access log, tracing, in prod the web ACL):
`infra/deploy_api.py`.

The resources stack deployed before is infra/resources.json plus the generated
infra/monitoring.json (dashboard, alarms, log groups, operations topic):
`python -m infra.deploy --resources-template out/resources-stack.json` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra import deploy_api, monitoring
from infra.paths import PROJECT_DIR
from infra.wiring import function_name

APP = "serverless-app"
FUNCTION_SETTINGS = PROJECT_DIR / "infra" / "functions.json"
RESOURCES = PROJECT_DIR / "infra" / "resources.json"
#: Event source mapping settings the Lambda API takes as SAM names them; others (`Stream`)
#: are set by `chalice deploy` itself.
MAPPING_SETTINGS = ("FunctionResponseTypes", "BisectBatchOnFunctionError", "MaximumRetryAttempts")
#: The kind of source a SAM event name ends with -> what its mapping's ARN contains.
SOURCE_KINDS = {"DynamodbEventSource": ":dynamodb:", "KinesisEventSource": ":kinesis:",
                "SqsEventSource": ":sqs:"}  # fmt: skip


def resources_stack(stage: str) -> str:
    return f"{APP}-{stage}-resources"


def stream_arn(cloudformation: Any, stage: str) -> str:
    stack = cloudformation.describe_stacks(StackName=resources_stack(stage))["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return outputs["UsersTableStreamArn"]


def chalice_name(logical_id: str) -> str:
    """`ProcessTelemetry` -> `process_telemetry` (Chalice's logical ids, reversed)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", logical_id).lower()


class _Destinations:
    """Resolves `{"Fn::GetAtt": [<queue>, "Arn"]}` of functions.json to the stage's queue ARN."""

    def __init__(self, stage: str, sqs: Any) -> None:
        self._stage = stage
        self._sqs = sqs
        self._resources = json.loads(RESOURCES.read_text())["Resources"]

    def arn(self, reference: Any) -> str:
        logical_id, attribute = reference["Fn::GetAtt"]
        name = self._resources[logical_id]["Properties"]["QueueName"]["Fn::Sub"]
        assert attribute == "Arn", reference
        url = self._sqs.get_queue_url(QueueName=name.replace("${Stage}", self._stage))
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=url["QueueUrl"], AttributeNames=["QueueArn"]
        )
        return str(attributes["Attributes"]["QueueArn"])

    def config(self, properties: dict[str, Any]) -> dict[str, Any]:
        target = properties["DestinationConfig"]["OnFailure"]["Destination"]
        return {"OnFailure": {"Destination": self.arn(target)}}


def apply_function_settings(stage: str, lambda_client: Any, sqs: Any) -> list[str]:
    """Give the deployed functions the settings of infra/functions.json; returns what was
    set, one line each."""
    destinations = _Destinations(stage, sqs)
    done = []
    for logical_id, resource in json.loads(FUNCTION_SETTINGS.read_text())["Resources"].items():
        name = function_name(stage, chalice_name(logical_id))
        properties = resource.get("Properties", {})
        for event_name, source in properties.get("Events", {}).items():
            wanted = {k: v for k, v in source["Properties"].items() if k in MAPPING_SETTINGS}
            if "DestinationConfig" in source["Properties"]:
                wanted["DestinationConfig"] = destinations.config(source["Properties"])
            if not wanted:
                continue
            kind = next(v for k, v in SOURCE_KINDS.items() if event_name.endswith(k))
            mappings = lambda_client.list_event_source_mappings(FunctionName=name)
            matching = [m for m in mappings["EventSourceMappings"] if kind in m["EventSourceArn"]]
            if not matching:
                raise RuntimeError(f"{name} has no {kind.strip(':')} mapping: run chalice deploy")
            for mapping in matching:
                lambda_client.update_event_source_mapping(UUID=mapping["UUID"], **wanted)
                done.append(f"{name} ({kind.strip(':')}): {', '.join(sorted(wanted))}")
        invoke = properties.get("EventInvokeConfig")
        if invoke:
            lambda_client.put_function_event_invoke_config(
                FunctionName=name,
                MaximumRetryAttempts=invoke["MaximumRetryAttempts"],
                DestinationConfig=destinations.config(invoke),
            )
            done.append(f"{name}: asynchronous retries and on-failure destination")
    return done


def write_resources_template(path: Path) -> None:
    """The resources stack's template: infra/resources.json with infra/monitoring.json."""
    template = monitoring.merged(json.loads(RESOURCES.read_text()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(template, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=False)
    parser.add_argument(
        "--resources-template",
        type=Path,
        help="only write the resources stack's template to this file (no AWS call)",
    )
    args = parser.parse_args(argv)
    if args.resources_template:
        write_resources_template(args.resources_template)
        size = args.resources_template.stat().st_size
        # Over 51,200 bytes CloudFormation takes a template only from S3 (--s3-bucket).
        print(f"wrote {args.resources_template} ({size:,} bytes); deploy it with:\n"
              f"  aws cloudformation deploy --template-file {args.resources_template} "
              f"--s3-bucket <an artifacts bucket> --stack-name {resources_stack('<stage>')} "
              "--parameter-overrides Stage=<stage>")  # fmt: skip
        return 0
    if not args.stage:
        parser.error("--stage is required")
    import boto3

    arn = stream_arn(boto3.client("cloudformation"), args.stage)
    env = {**os.environ, "USERS_TABLE_STREAM_ARN": arn}
    # Chalice builds for TARGET_RUNTIME whatever Python runs it (infra/chalice_cli.py).
    chalice = [sys.executable, "-m", "infra.chalice_cli"]
    subprocess.run(
        [*chalice, "deploy", "--stage", args.stage], env=env, check=True, cwd=PROJECT_DIR
    )
    for line in apply_function_settings(args.stage, boto3.client("lambda"), boto3.client("sqs")):
        print(line)
    api = deploy_api.rest_api_id(args.stage)
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    clients = boto3.client("apigateway"), boto3.client("wafv2")
    for line in deploy_api.apply_api_settings(args.stage, *clients, api, config):
        print(line)
    print(json.dumps({"stage": args.stage, "users_table_stream_arn": arn}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
