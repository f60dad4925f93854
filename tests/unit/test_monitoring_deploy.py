"""What the monitoring needs from both deploy paths: the REST API named per stage (its
metrics' ApiName, so one stage's 5xx cannot fire another stage's rollback alarm), each packaged
function created after its log group (path A), and alarms whose text says what they count."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra import deploy_api, monitoring
from infra.package import finalize_template, sam_transform
from infra.paths import PROJECT_DIR

RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
MONITORING = json.loads((PROJECT_DIR / "infra" / "monitoring.json").read_text())
STAGES = list(RESOURCES["Mappings"]["StageSettings"])
NAMES = {"APIHandler": "serverless-app-prod", "OnboardUsers": "serverless-app-prod-onboard_users"}


def api_dimensions(stage: str) -> set[tuple[str, str]]:
    properties = MONITORING["Resources"][monitoring.API_ALARM]["Properties"]
    return {
        (d["Name"], deploy_api.resolve(d["Value"], stage, RESOURCES))
        for m in properties["Metrics"]
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
    }


@pytest.mark.parametrize("stage", STAGES)
def test_the_api_alarm_watches_its_own_stages_api(stage: str) -> None:
    assert api_dimensions(stage) == {("ApiName", f"serverless-app-{stage}"), ("Stage", "api")}
    assert deploy_api.api_name(stage) == f"serverless-app-{stage}"  # path B renames it so
    assert len({deploy_api.api_name(s) for s in STAGES}) == len(STAGES)


def test_the_api_handlers_error_rate_says_it_counts_no_view_exception() -> None:
    """Chalice answers a view's exception with a 500 (a successful invocation): the handler's
    Lambda errors are timeouts, crashes and init failures; the 5xx alarm covers the rest."""
    text = MONITORING["Resources"]["APIHandlerErrorRateAlarm"]["Properties"]["AlarmDescription"]
    description = text["Fn::Sub"][0]
    assert "timeouts, crashes or init failures only" in description
    assert "api-5xx-rate" in description
    other = MONITORING["Resources"]["OnboardUsersErrorRateAlarm"]["Properties"]
    assert "dead-lettered" in other["AlarmDescription"]["Fn::Sub"][0]


def test_keeps_messages_on_a_dead_letter_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead-letter queue is emptied by redriving: alarmed on depth, never on arrivals."""
    template = copy.deepcopy(RESOURCES)
    template["Resources"]["OnboardingDeadLetterQueue"]["Metadata"]["KeepsMessages"] = True

    def load(path: Any) -> dict[str, Any]:
        return template if path == monitoring.RESOURCES_FILE else json.loads(path.read_text())

    monkeypatch.setattr(monitoring, "load", load)
    with pytest.raises(ValueError, match="OnboardingDeadLetterQueue"):
        monitoring.inventory(functions=())


def chalice_like() -> dict[str, Any]:
    """A packaged template's shape: functions (one with a DependsOn of its own), their log
    groups (infra/monitoring.json) and the REST API with Chalice's swagger."""

    def function(**extra: Any) -> dict[str, Any]:
        properties = {"Handler": "app.app", "Runtime": "python3.11", "CodeUri": "./d.zip"}
        return {"Type": "AWS::Serverless::Function", "Properties": properties, **extra}

    group = {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "/aws/lambda/x"}}
    swagger = {"swagger": "2.0", "info": {"version": "1.0", "title": "serverless-app"},
               "paths": {}}  # fmt: skip
    api_responses = json.loads((PROJECT_DIR / "infra" / "api-responses.json").read_text())
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Parameters": {"Stage": {"Type": "String"}},
        "Mappings": {"StageSettings": RESOURCES["Mappings"]["StageSettings"]},
        "Resources": {
            "APIHandler": function(),
            "OnboardUsers": function(DependsOn="OnboardingQueue"),
            "OnboardingQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "APIHandlerLogGroup": copy.deepcopy(group),
            "OnboardUsersLogGroup": copy.deepcopy(group),
            "RestAPI": {
                "Type": "AWS::Serverless::Api",
                "Properties": {
                    "StageName": "api",
                    "DefinitionBody": swagger,
                    "Name": api_responses["Resources"]["RestAPI"]["Properties"]["Name"],
                },
            },
        },
    }


def test_packaged_functions_depend_on_their_log_groups_and_the_api_is_named() -> None:
    """Path A: without the dependency a mapping or schedule could invoke a function before
    CloudFormation creates its group; Lambda would create it and the stack fail on "already
    exists". The swagger's title (which names an imported API) is the stage's name too."""
    template = finalize_template(chalice_like(), "prod", NAMES, lambda lid: [])
    resources = template["Resources"]
    assert resources["APIHandler"]["DependsOn"] == ["APIHandlerLogGroup"]
    assert resources["OnboardUsers"]["DependsOn"] == ["OnboardingQueue", "OnboardUsersLogGroup"]
    assert resources["RestAPI"]["Properties"]["DefinitionBody"]["info"]["title"] == (
        "serverless-app-prod"
    )
    assert finalize_template(template, "prod", NAMES, lambda lid: []) == template
    transformed = sam_transform(template)["Resources"]
    lambdas = {k: v for k, v in transformed.items() if v["Type"] == "AWS::Lambda::Function"}
    assert {lid: set(v["DependsOn"]) >= {f"{lid}LogGroup"} for lid, v in lambdas.items()} == {
        "APIHandler": True,
        "OnboardUsers": True,
    }
    [api] = [v for v in transformed.values() if v["Type"] == "AWS::ApiGateway::RestApi"]
    assert api["Properties"]["Name"] == {"Fn::Sub": "serverless-app-${Stage}"}
    assert api["Properties"]["Body"]["info"]["title"] == "serverless-app-prod"


def test_a_function_without_a_log_group_is_left_alone() -> None:
    template = {"Resources": {"Lone": {"Type": "AWS::Lambda::Function", "DependsOn": "X"}}}
    assert monitoring.log_group_dependencies(copy.deepcopy(template)) == template
