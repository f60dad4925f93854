"""Gradual deployments of the packaged template (infra/gradual.py, path A), checked on a small
template shaped like `chalice package`'s output and on its SAM translation (offline): every
function behind the alias `live` with the stage's CodeDeploy configuration and its rollback
alarms, and nothing invoking a function but through that alias."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra import gradual
from infra.package import PackagingError, finalize_template, sam_transform
from infra.paths import PROJECT_DIR

RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
STAGES = list(RESOURCES["Mappings"]["StageSettings"])
NAMES = {
    "APIHandler": "serverless-app-prod",
    "CognitoJwt": "serverless-app-prod-cognito_jwt",
    "OnboardUsers": "serverless-app-prod-onboard_users",
    "ProcessTelemetry": "serverless-app-prod-process_telemetry",
    "EmailOrderUpdate": "serverless-app-prod-email_order_update",
    "SweepStuckOrders": "serverless-app-prod-sweep_stuck_orders",
    "ValidateOrder": "serverless-app-prod-validate_order",
}
NAMED_ARN = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
URI = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"


def alarm(period: int = 300, datapoints: int = 2) -> dict[str, Any]:
    """Shaped like infra/monitoring_alarms.py's: a metric-math rate over `period`."""
    stat = {"Metric": {"Namespace": "AWS/Lambda", "MetricName": "Errors"}, "Period": period}
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "Metrics": [{"Id": "errors", "MetricStat": {**stat, "Stat": "Sum"}},
                        {"Id": "value", "Expression": "errors", "ReturnData": True}],
            "EvaluationPeriods": 3,
            "DatapointsToAlarm": datapoints,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    }  # fmt: skip


def function(handler: str, events: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    properties = {"Handler": handler, "Runtime": "python3.11", "CodeUri": "./deployment.zip"}
    properties |= {"Events": events} if events else {}
    return {"Type": "AWS::Serverless::Function", "Properties": {**properties, **extra}}


def permission(target: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "AWS::Lambda::Permission",
            "Properties": {"FunctionName": target, "Action": "lambda:InvokeFunction",
                           "Principal": "apigateway.amazonaws.com"}}  # fmt: skip


def chalice_like(with_alarms: bool = True) -> dict[str, Any]:
    """What `chalice package --merge-template` gives, in small: functions invoked by API
    Gateway (integration and authorizer), SQS, Kinesis, SNS with an async invoke config, a
    schedule, and a state machine naming its task by an ARN built from the function's name."""
    swagger = {
        "swagger": "2.0",
        "info": {"version": "1.0", "title": "serverless-app"},
        "paths": {"/health": {"get": {"x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST",
            "uri": {"Fn::Sub": URI + "${APIHandler.Arn}/invocations"}}}}},
        "securityDefinitions": {"cognito_jwt": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "token",
                "authorizerUri": {"Fn::Sub": URI + "${CognitoJwt.Arn}/invocations"}}}},
    }  # fmt: skip
    workflow_task = {"Fn::Sub": NAMED_ARN + "serverless-app-${Stage}-validate_order"}
    resources: dict[str, Any] = {
        "APIHandler": function("app.app"),
        "CognitoJwt": function("app.cognito_jwt"),
        "OnboardUsers": function("app.onboard_users", {"OnboardUsersSqsEventSource": {
            "Type": "SQS", "Properties": {"Queue": {"Fn::GetAtt": ["Queue", "Arn"]}}}}),
        "ProcessTelemetry": function("app.process_telemetry", {
            "ProcessTelemetryKinesisEventSource": {"Type": "Kinesis", "Properties": {
                "Stream": {"Fn::GetAtt": ["Stream", "Arn"]}, "StartingPosition": "LATEST"}}}),
        "EmailOrderUpdate": function(
            "app.email_order_update",
            {"EmailOrderUpdateSnsSubscription": {"Type": "SNS",
                                                 "Properties": {"Topic": {"Ref": "Topic"}}}},
            EventInvokeConfig={"MaximumRetryAttempts": 2}),
        "SweepStuckOrders": function("app.sweep_stuck_orders", {"SweepStuckOrdersEvent": {
            "Type": "Schedule", "Properties": {"Schedule": "cron(0 2 * * ? *)"}}}),
        "ValidateOrder": function("app.validate_order"),
        "RestAPI": {"Type": "AWS::Serverless::Api",
                    "Properties": {"StageName": "api", "DefinitionBody": swagger}},
        "APIHandlerInvokePermission": permission({"Ref": "APIHandler"}),
        "CognitoJwtInvokePermission": permission({"Fn::GetAtt": ["CognitoJwt", "Arn"]}),
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Stream": {"Type": "AWS::Kinesis::Stream", "Properties": {"ShardCount": 1}},
        "Topic": {"Type": "AWS::SNS::Topic"},
        "OrderWorkflowRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []},
            "Policies": [{"PolicyName": "order-workflow", "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                               "Resource": [copy.deepcopy(workflow_task)]}]}}]}},
        "OrderWorkflow": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "RoleArn": {"Fn::GetAtt": ["OrderWorkflowRole", "Arn"]},
            "Definition": {"StartAt": "ValidateOrder", "States": {"ValidateOrder": {
                "Type": "Task", "Resource": "${ValidateOrderFunction}", "End": True}}},
            "DefinitionSubstitutions": {"ValidateOrderFunction": workflow_task}}},
    }  # fmt: skip
    if with_alarms:
        for logical_id in NAMES:
            resources[f"{logical_id}ErrorRateAlarm"] = alarm()
            resources[f"{logical_id}ThrottlesAlarm"] = alarm(datapoints=1)
        resources["Api5xxRateAlarm"] = alarm()
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Parameters": {"Stage": {"Type": "String"}},
        "Mappings": copy.deepcopy({"StageSettings": RESOURCES["Mappings"]["StageSettings"]}),
        "Resources": resources,
    }


def rollback_alarm_ids(function_id: str) -> list[str]:
    """infra.monitoring's interface: its own two alarms, plus the API's 5xx for its handler."""
    extra = ["Api5xxRateAlarm"] if function_id == "APIHandler" else []
    return [f"{function_id}ErrorRateAlarm", f"{function_id}ThrottlesAlarm", *extra]


def finalized(stage: str = "prod", template: dict[str, Any] | None = None) -> dict[str, Any]:
    names = {k: v.replace("-prod", f"-{stage}") for k, v in NAMES.items()}
    source = template if template is not None else chalice_like()
    return finalize_template(source, stage, names, rollback_alarm_ids)


@pytest.fixture(scope="module")
def prod() -> tuple[dict[str, Any], dict[str, Any]]:
    template = finalized("prod")
    return template, sam_transform(template)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


# --- the stages' configurations ---------------------------------------------------------


def test_each_stage_names_a_codedeploy_configuration_and_prod_is_a_canary() -> None:
    kinds = {stage: gradual.deployment_type(RESOURCES, stage) for stage in STAGES}
    assert kinds["dev"] == gradual.ALL_AT_ONCE
    assert kinds["prod"].startswith("Canary")
    from samtranslator.model.preferences.deployment_preference_collection import (
        CODEDEPLOY_PREDEFINED_CONFIGURATIONS_LIST as SAM_KNOWS,
    )

    assert set(gradual.BAKE_SECONDS) == set(SAM_KNOWS)


def test_an_unknown_configuration_is_refused() -> None:
    template = chalice_like()
    template["Mappings"]["StageSettings"]["prod"][gradual.SETTING] = "Canary50Percent1Minute"
    with pytest.raises(PackagingError, match="Canary50Percent1Minute"):
        finalized("prod", template)
    del template["Mappings"]["StageSettings"]["prod"][gradual.SETTING]
    with pytest.raises(PackagingError, match=gradual.SETTING):
        finalized("prod", template)


# --- the packaged template ----------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_function_is_published_behind_the_alias_with_its_stages_configuration(
    stage: str,
) -> None:
    template = finalized(stage)
    kind = gradual.deployment_type(RESOURCES, stage)
    for logical_id in NAMES:
        properties = template["Resources"][logical_id]["Properties"]
        assert properties["AutoPublishAlias"] == "live"
        preference = properties["DeploymentPreference"]
        assert preference["Type"] == kind
        wanted = [{"Ref": a} for a in rollback_alarm_ids(logical_id)]
        assert preference["Alarms"] == wanted, logical_id
    assert finalized(stage, template) == template, "finalizing twice changes nothing"


def test_a_conditional_alarm_is_referenced_only_where_it_exists() -> None:
    template = chalice_like()
    template["Resources"]["Api5xxRateAlarm"]["Condition"] = "IsProd"
    alarms = finalized("prod", template)["Resources"]["APIHandler"]["Properties"][
        "DeploymentPreference"
    ]["Alarms"]
    assert alarms[-1] == {"Fn::If": ["IsProd", {"Ref": "Api5xxRateAlarm"}, {"Ref": "AWS::NoValue"}]}


def test_without_monitoring_the_functions_are_published_but_reported_unguarded() -> None:
    template = finalized("prod", chalice_like(with_alarms=False))
    assert not any(template["Resources"][f]["Properties"]["DeploymentPreference"].get("Alarms")
                   for f in NAMES)  # fmt: skip
    assert f"NO rollback alarm for {len(NAMES)} of {len(NAMES)}" in gradual.describe(template)


def test_alarms_for_some_functions_only_are_refused() -> None:
    template = chalice_like()
    del template["Resources"]["ValidateOrderErrorRateAlarm"]
    del template["Resources"]["ValidateOrderThrottlesAlarm"]
    with pytest.raises(PackagingError, match="ValidateOrder"):
        finalized("prod", template)


def test_path_a_only_the_workflow_names_its_tasks_by_alias() -> None:
    """resources.json keeps the name-built ARNs (path B has no alias); the package rewrites
    them, in the definition's substitutions and in the role that may invoke them."""
    source = chalice_like()
    template = finalized("prod", source)
    resources = template["Resources"]
    alias = {"Ref": "ValidateOrderAliaslive"}
    assert resources["OrderWorkflow"]["Properties"]["DefinitionSubstitutions"] == {
        "ValidateOrderFunction": alias
    }
    statement = resources["OrderWorkflowRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert statement["Statement"][0]["Resource"] == [alias]
    assert source["Resources"]["OrderWorkflow"] == chalice_like()["Resources"]["OrderWorkflow"]


# --- the translation: what CloudFormation deploys -----------------------------------------


def test_the_translation_is_complete(prod: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, out = prod
    aliases = of_type(out, "AWS::Lambda::Alias")
    groups = of_type(out, "AWS::CodeDeploy::DeploymentGroup")
    assert set(aliases) == {f"{f}Aliaslive" for f in NAMES}
    assert len(of_type(out, "AWS::Lambda::Version")) == len(NAMES)
    assert set(groups) == {f"{f}DeploymentGroup" for f in NAMES}
    assert len(of_type(out, "AWS::CodeDeploy::Application")) == 1
    role = out["Resources"]["CodeDeployServiceRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": ["codedeploy.amazonaws.com"]
    }
    for logical_id, group in groups.items():
        function_id = logical_id.removesuffix("DeploymentGroup")
        properties = group["Properties"]
        config = {"ConfigName": gradual.deployment_type(RESOURCES, "prod")}
        assert properties["DeploymentConfigName"] == {
            "Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", config]
        }
        assert properties["AlarmConfiguration"] == {
            "Enabled": True,
            "Alarms": [{"Name": {"Ref": a}} for a in rollback_alarm_ids(function_id)],
        }
        assert "DEPLOYMENT_STOP_ON_ALARM" in properties["AutoRollbackConfiguration"]["Events"]
        alias = aliases[f"{function_id}Aliaslive"]
        assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"] == {
            "Ref": logical_id
        }


def test_every_invoker_calls_the_alias(prod: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, out = prod
    assert gradual.unaliased_invocations(out) == []
    resources = out["Resources"]
    body = json.dumps(resources["RestAPI"]["Properties"]["Body"])
    assert "functions/${APIHandlerAliaslive}/invocations" in body  # integration
    assert "functions/${CognitoJwtAliaslive}/invocations" in body  # authorizer
    targets = {
        "APIHandlerInvokePermission": "APIHandler",
        "CognitoJwtInvokePermission": "CognitoJwt",
        "OnboardUsersOnboardUsersSqsEventSource": "OnboardUsers",
        "ProcessTelemetryProcessTelemetryKinesisEventSource": "ProcessTelemetry",
        "EmailOrderUpdateEmailOrderUpdateSnsSubscriptionPermission": "EmailOrderUpdate",
    }
    for logical_id, function_id in targets.items():
        assert resources[logical_id]["Properties"]["FunctionName"] == {
            "Ref": f"{function_id}Aliaslive"
        }, logical_id
    subscription = resources["EmailOrderUpdateEmailOrderUpdateSnsSubscription"]["Properties"]
    assert subscription["Endpoint"] == {"Ref": "EmailOrderUpdateAliaslive"}
    assert resources["EmailOrderUpdateEventInvokeConfig"]["Properties"]["Qualifier"] == "live"
    [rule] = of_type(out, "AWS::Events::Rule").values()
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Ref": "SweepStuckOrdersAliaslive"}
    machine = resources["OrderWorkflow"]["Properties"]["DefinitionSubstitutions"]
    assert machine["ValidateOrderFunction"] == {"Ref": "ValidateOrderAliaslive"}


@pytest.mark.parametrize(
    ("where", "undo"),
    [
        ("permission", lambda r: r["APIHandlerInvokePermission"]["Properties"].update(
            FunctionName={"Ref": "APIHandler"})),
        ("swagger", lambda r: r["RestAPI"]["Properties"]["DefinitionBody"]["paths"]["/health"]
            ["get"]["x-amazon-apigateway-integration"].update(
                uri={"Fn::Sub": URI + "${APIHandler.Arn}/invocations"})),
        ("workflow", lambda r: r["OrderWorkflow"]["Properties"]["DefinitionSubstitutions"].update(
            ValidateOrderFunction={"Fn::Sub": NAMED_ARN + "serverless-app-prod-validate_order"})),
        ("rule", lambda r: r.update(Extra={"Type": "AWS::Events::Rule", "Properties": {
            "Targets": [{"Id": "x", "Arn": {"Fn::GetAtt": ["SweepStuckOrders", "Arn"]}}]}})),
    ],
)  # fmt: skip
def test_a_direct_invoker_fails_the_check(
    prod: tuple[dict[str, Any], dict[str, Any]], where: str, undo: Any
) -> None:
    template = copy.deepcopy(prod[0])
    undo(template["Resources"])
    problems = gradual.unaliased_invocations(sam_transform(template))
    assert len(problems) == 1 and "not its alias" in problems[0], (where, problems)


def test_a_function_without_alias_fails_the_check(
    prod: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    out = copy.deepcopy(prod[1])
    del out["Resources"]["ValidateOrderAliaslive"]
    assert "ValidateOrder has no alias" in gradual.unaliased_invocations(out)


# --- rollback alarms must be able to fire before the traffic has moved --------------------


def test_an_alarm_slower_than_the_canary_is_refused() -> None:
    template = finalized("prod")
    assert gradual.slow_alarms(template, "prod") == []
    assert gradual.time_to_fire(alarm(300, 2)) == 300 * 3 + 60
    template["Mappings"]["StageSettings"]["prod"][gradual.SETTING] = "Canary10Percent10Minutes"
    slow = gradual.slow_alarms(template, "prod")
    assert any(p.startswith("APIHandlerErrorRateAlarm needs 960 s") for p in slow), slow
    template["Resources"]["APIHandlerErrorRateAlarm"]["Properties"]["Metrics"][0]["MetricStat"][
        "Period"
    ] = {"Ref": "Period"}
    assert any("unknown" in p for p in gradual.slow_alarms(template, "prod"))
    template["Mappings"]["StageSettings"]["prod"][gradual.SETTING] = "AllAtOnce"
    assert gradual.slow_alarms(template, "prod") == []


def test_the_real_rollback_alarms_can_fire_within_the_prod_canary() -> None:
    """infra/monitoring.json's rollback alarms against prod's configuration, where both exist."""
    path = PROJECT_DIR / "infra" / "monitoring.json"
    monitoring = pytest.importorskip("infra.monitoring")
    if not path.exists():
        pytest.skip("infra/monitoring.json not generated")
    alarms = json.loads(path.read_text())["Resources"]
    kind = gradual.deployment_type(RESOURCES, "prod")
    ids = {a for f in NAMES for a in monitoring.rollback_alarm_ids(f) if a in alarms}
    assert ids, "no rollback alarm of monitoring.json found"
    for alarm_id in ids:
        seconds = gradual.time_to_fire(alarms[alarm_id])
        assert seconds is not None and seconds <= gradual.BAKE_SECONDS[kind], alarm_id
