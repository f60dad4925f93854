"""Each stage's dashboard, alarms, log groups and operations topic, generated from what the app
declares: `python -m infra.monitoring` writes infra/monitoring.json (`make wiring` runs it).

What it reads:
- the functions: Chalice's own list (`infra/wiring.py` imports app.py), with the logical ids
  Chalice gives them (`APIHandler`, `ProcessTelemetry`, ...) and the names both deploy paths
  give them (`serverless-app-<stage>-<name>`, the API's handler `serverless-app-<stage>`);
  which of them read a stream (Kinesis or DynamoDB) comes from their event sources;
- infra/resources.json: the queues (a dead-letter queue is a `RedrivePolicy` target), the
  streams, the state machines and each stage's thresholds (`StageSettings`);
- infra/functions.json: the on-failure destinations (also failure queues);
- the app's EMF metrics (`BUSINESS_METRICS` below; a test runs the code that emits them and
  fails if one is missing here).

Every failure queue must say what on-call does about it (`Metadata.AlarmDescription` on the
queue in resources.json); any other queue saying so is alarmed too (the quarantine). A queue
that keeps its messages on purpose (`Metadata.KeepsMessages: true`: nothing drains it) is
alarmed on new messages, not on holding some, or its alarm would stay on until someone
purged it and hide the next arrival; a dead-letter queue, emptied by redriving, on not empty.

The output is one CloudFormation fragment merged into the resources on both deploy paths and
by local provisioning (`merged`), like infra/api-responses.json. `--check` exits 1 when the
file is out of date (a unit test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.paths import PROJECT_DIR

MONITORING_FILE = PROJECT_DIR / "infra" / "monitoring.json"
RESOURCES_FILE = PROJECT_DIR / "infra" / "resources.json"
API_RESPONSES_FILE = PROJECT_DIR / "infra" / "api-responses.json"
FUNCTIONS_FILE = PROJECT_DIR / "infra" / "functions.json"
CONFIG_FILE = PROJECT_DIR / ".chalice" / "config.json"
APP = "serverless-app"
OPERATIONS_TOPIC = "OperationsTopic"
OPERATIONS_KEY = "OperationsTopicKey"
API_ALARM = "Api5xxRateAlarm"
API_ACCESS_LOG_GROUP = "ApiAccessLogGroup"
DASHBOARD = "Dashboard"
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
#: Chalice's logical id of the REST API's handler (its function is `api_handler`).
API_HANDLER_LOGICAL_ID = "APIHandler"


@dataclass(frozen=True)
class MetricGroup:
    """EMF metrics the app emits with one extra dimension (Powertools adds `service`)."""

    title: str
    dimension: str
    #: The dimension's value, or None when it varies (the API's `route`): shown by SEARCH.
    value: str | None
    names: tuple[str, ...]
    stat: str = "Sum"


#: Every metric the app emits (chalicelib: core/http.py, telemetry/processor.py,
#: orders/sweep.py), in the stage's PowertoolsMetricsNamespace. tests/unit/test_monitoring*
#: run that code and fail on a metric missing here.
BUSINESS_METRICS = (
    MetricGroup("API requests by route (app)", "route", None,
                ("Requests", "ClientErrors", "ServerErrors")),
    MetricGroup("API latency by route (app, p99)", "route", None, ("Latency",), "p99"),
    MetricGroup("Telemetry records", "pipeline", "telemetry",
                ("TelemetryRecords", "TelemetryFailedRecords", "TelemetryQuarantined",
                 "TelemetryErasedUserEventsDropped", "TelemetryDuplicateEventsDropped",
                 "TelemetryUserActivities", "TelemetrySystemMetrics", "TelemetryTransactions")),
    MetricGroup("Telemetry alerts", "pipeline", "telemetry",
                ("TelemetryAnomalies", "TelemetryFraudAlerts", "TelemetryFraudAlertsSuppressed",
                 "TelemetryAlertsPublished")),
    MetricGroup("Stuck-order sweep", "job", "sweep_stuck_orders",
                ("StuckOrdersExamined", "StuckOrdersCompleted", "StuckOrdersFailed",
                 "StuckOrdersCancelled", "StuckOrdersStillRunning", "StuckOrdersNeedsAttention",
                 "StuckOrdersErrors", "StuckOrdersOutOfTime")),
)  # fmt: skip


@dataclass(frozen=True)
class AppFunction:
    logical_id: str
    #: The name both deploy paths give it, with `${Stage}` for the stage (an Fn::Sub string).
    deployed: str
    reads_stream: bool


@dataclass(frozen=True)
class Queue:
    logical_id: str
    name: str  # an Fn::Sub string
    #: What on-call does when it holds messages (None: a work queue, not alarmed).
    alarm_description: str | None
    #: Nothing drains it (`Metadata.KeepsMessages`): alarmed on arrivals, not on depth.
    keeps_messages: bool = False


@dataclass(frozen=True)
class Inventory:
    """What the app declares that is watched."""

    functions: tuple[AppFunction, ...]
    work_queues: tuple[Queue, ...]
    failure_queues: tuple[Queue, ...]
    streams: tuple[tuple[str, str], ...]  # (logical id, name)
    state_machines: tuple[tuple[str, str], ...]
    api_name: str  # an Fn::Sub string (`serverless-app-${Stage}`)
    api_stage: str


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def setting(name: str) -> dict[str, Any]:
    return {"Fn::FindInMap": ["StageSettings", {"Ref": "Stage"}, name]}


def app_functions() -> tuple[AppFunction, ...]:
    """The app's functions, from Chalice's own declarations (imports app.py)."""
    from chalice.utils import to_cfn_resource_name

    from infra import wiring

    readers = {wiring.KINESIS_READER, wiring.DYNAMODB_STREAM_READER}
    found = []
    for name, function in wiring.app_functions(wiring.load_app()).items():
        logical_id = (
            API_HANDLER_LOGICAL_ID if name == wiring.API_HANDLER else to_cfn_resource_name(name)
        )
        reads = any(actions in readers for actions, _, _ in function.source_grants)
        found.append(AppFunction(logical_id, wiring.function_name("${Stage}", name), reads))
    return tuple(found)


def failure_queue_ids(resources: dict[str, Any], functions: dict[str, Any]) -> list[str]:
    """Queues that hold what failed: redrive targets and on-failure destinations."""
    found = []
    for resource in resources.values():
        redrive = resource.get("Properties", {}).get("RedrivePolicy", {})
        if "deadLetterTargetArn" in redrive:
            found.append(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
    for resource in functions.values():
        properties = resource.get("Properties", {})
        configs = [e.get("Properties", {}) for e in properties.get("Events", {}).values()]
        configs.append(properties.get("EventInvokeConfig", {}))
        for config in configs:
            target = config.get("DestinationConfig", {}).get("OnFailure", {})
            if target.get("Type") == "SQS":
                found.append(target["Destination"]["Fn::GetAtt"][0])
    return list(dict.fromkeys(found))


def inventory(functions: tuple[AppFunction, ...] | None = None) -> Inventory:
    template = load(RESOURCES_FILE)
    resources = template["Resources"]
    failing = failure_queue_ids(resources, load(FUNCTIONS_FILE)["Resources"])
    work, failure = [], []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::SQS::Queue":
            continue
        metadata = resource.get("Metadata", {})
        description = metadata.get("AlarmDescription")
        keeps = metadata.get("KeepsMessages") is True
        if logical_id in failing and not description:
            raise ValueError(
                f"{logical_id} holds failed work: give it Metadata.AlarmDescription in "
                "infra/resources.json (what on-call does when it is not empty)"
            )
        if keeps and (logical_id in failing or not description):
            raise ValueError(
                f"{logical_id}: Metadata.KeepsMessages is for a queue nothing drains, with an "
                "AlarmDescription; a dead-letter or failure queue is redriven (alarmed on depth)"
            )
        name = resource["Properties"]["QueueName"]["Fn::Sub"]
        queue = Queue(logical_id, name, description, keeps)
        (failure if description else work).append(queue)

    def named(kind: str, prop: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            (lid, r["Properties"][prop]["Fn::Sub"])
            for lid, r in resources.items()
            if r["Type"] == kind
        )

    config = load(CONFIG_FILE)
    stages = {s.get("api_gateway_stage", config.get("api_gateway_stage", "api"))
              for s in config["stages"].values()}  # fmt: skip
    if len(stages) != 1:
        raise ValueError(f"one API Gateway stage name for every stage expected, not {stages}")
    return Inventory(
        functions=functions if functions is not None else app_functions(),
        work_queues=tuple(work),
        failure_queues=tuple(failure),
        streams=named("AWS::Kinesis::Stream", "Name"),
        state_machines=named("AWS::StepFunctions::StateMachine", "StateMachineName"),
        api_name=api_name(),
        api_stage=stages.pop(),
    )


def api_name() -> str:
    """The REST API's name, per stage (`Name` of infra/api-responses.json, which both deploy
    paths give it): its metrics' ApiName, so stages in one account do not share them."""
    properties = load(API_RESPONSES_FILE)["Resources"]["RestAPI"]["Properties"]
    return str(properties["Name"]["Fn::Sub"])


def log_group_dependencies(template: dict[str, Any]) -> dict[str, Any]:
    """`template` (a packaged one, path A) with each function depending on its log group
    (`<Function>LogGroup`, added to any DependsOn it has): a function invoked before its group
    exists (a mapping, a schedule) makes Lambda create `/aws/lambda/<name>`, and the stack
    then fails on "already exists". Changes `template` in place; applying it twice changes
    nothing."""
    resources = template.get("Resources", {})
    for logical_id, resource in resources.items():
        group = f"{logical_id}LogGroup"
        if resource.get("Type") not in FUNCTION_TYPES or group not in resources:
            continue
        depends = resource.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else list(depends)
        if group not in depends:
            resource["DependsOn"] = [*depends, group]
    return template


def title_rest_api(template: dict[str, Any], stage: str) -> dict[str, Any]:
    """`template` (a packaged one, path A) with the swagger's `info.title` of each REST API
    that has a `Name` (merged from infra/api-responses.json) set to that name for `stage`:
    Chalice writes the app's name there, and an imported definition's title names the API,
    so the two agree rather than one overriding the other. In place; idempotent."""
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        name, info = properties.get("Name"), properties.get("DefinitionBody", {}).get("info")
        if resource.get("Type") != "AWS::Serverless::Api" or name is None or info is None:
            continue
        if isinstance(name, dict):
            name = str(name["Fn::Sub"]).replace("${Stage}", stage)
        info["title"] = name
    return template


def rollback_alarm_ids(function_logical_id: str) -> list[str]:
    """The alarms a gradual deployment of that function rolls back on (logical ids of
    infra/monitoring.json): its error rate and throttles, and for the API's handler the
    API's 5xx rate."""
    ids = [f"{function_logical_id}ErrorRateAlarm", f"{function_logical_id}ThrottlesAlarm"]
    if function_logical_id == API_HANDLER_LOGICAL_ID:
        ids.append(API_ALARM)
    return ids


def rendered(functions: tuple[AppFunction, ...] | None = None) -> dict[str, Any]:
    """infra/monitoring.json's content."""
    from infra.monitoring_alarms import alarms
    from infra.monitoring_dashboard import dashboard

    found = inventory(functions)
    resources: dict[str, Any] = {}
    resources |= operations_topic()
    resources |= log_groups(found)
    every_alarm = alarms(found)
    resources |= every_alarm
    resources[DASHBOARD] = dashboard(found, every_alarm)
    return {
        "Description": (
            "GENERATED by `python -m infra.monitoring` (make wiring) from the app's functions, "
            "infra/resources.json and infra/functions.json: do not edit. Merged into the "
            "resources on both deploy paths and locally."
        ),
        "Resources": resources,
        "Outputs": {
            "OperationsTopicArn": {"Value": {"Ref": OPERATIONS_TOPIC}},
            "DashboardName": {"Value": {"Ref": DASHBOARD}},
        },
    }


def operations_topic() -> dict[str, Any]:
    """The topic every alarm notifies, encrypted with a key CloudWatch may use (the AWS
    managed `alias/aws/sns` key does not let CloudWatch publish: alarms would go nowhere)."""
    root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdministersTheKey", "Effect": "Allow", "Principal": {"AWS": root},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
             "Principal": {"Service": "cloudwatch.amazonaws.com"},
             "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
             "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}},
        ],
    }  # fmt: skip
    return {
        OPERATIONS_KEY: {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": {"Fn::Sub": f"{APP}-${{Stage}}-operations topic"},
                "EnableKeyRotation": True,
                "KeyPolicy": policy,
            },
        },
        OPERATIONS_TOPIC: {
            "Type": "AWS::SNS::Topic",
            "Properties": {
                "TopicName": {"Fn::Sub": f"{APP}-${{Stage}}-operations"},
                "KmsMasterKeyId": {"Fn::GetAtt": [OPERATIONS_KEY, "Arn"]},
            },
        },
    }


def log_groups(found: Inventory) -> dict[str, Any]:
    """Each function's log group (Lambda would create it without a retention) and the API's
    access log, kept `LogRetentionDays` of the stage."""

    def group(name: str) -> dict[str, Any]:
        return {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": name},
                "RetentionInDays": setting("LogRetentionDays"),
                "Tags": [{"Key": "app", "Value": APP}, {"Key": "stage", "Value": {"Ref": "Stage"}}],
            },
        }

    groups = {
        f"{f.logical_id}LogGroup": group(f"/aws/lambda/{f.deployed}") for f in found.functions
    }
    groups[API_ACCESS_LOG_GROUP] = group(f"/aws/apigateway/{APP}-${{Stage}}/access")
    return groups


def merged(template: dict[str, Any]) -> dict[str, Any]:
    """`template` (infra/resources.json's content) with infra/monitoring.json's resources and
    outputs added: what path B's resources stack and the emulator are made of."""
    monitoring = load(MONITORING_FILE)
    result = {**template}
    for section in ("Resources", "Outputs"):
        both = set(template.get(section, {})) & set(monitoring[section])
        if both:
            raise ValueError(f"{sorted(both)} declared in resources.json and monitoring.json")
        result[section] = {**template.get(section, {}), **monitoring[section]}
    return result


def text(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    wanted = text(rendered())
    current = MONITORING_FILE.read_text() if MONITORING_FILE.exists() else ""
    shown = MONITORING_FILE.relative_to(PROJECT_DIR)
    if args.check:
        if current != wanted:
            print(f"out of date: {shown} (run python -m infra.monitoring)")
            return 1
        return 0
    if current != wanted:
        MONITORING_FILE.write_text(wanted)
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
