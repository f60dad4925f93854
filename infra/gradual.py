"""Gradual deployments of the packaged template (path A, `make package`): every function is
published as a version behind the alias `live`, CodeDeploy shifts the alias to a new version
the way the stage's `DeploymentPreferenceType` says (infra/resources.json, StageSettings) and
rolls it back when one of the function's rollback alarms fires (infra/monitoring.py), and
everything that invokes a function invokes the alias: without that the canary would carry
only part of the traffic, or none.

What calls a function, and how it is pointed at the alias here:
- API Gateway (Chalice's swagger: integration and authorizer URIs `${X.Arn}`) and its Lambda
  permissions (`Ref X`): rewritten to the alias SAM generates (`XAliaslive`);
- event sources (SQS, Kinesis, DynamoDB streams, SNS, schedules, EventBridge) and the async
  invoke configs: SAM attaches them to the alias by itself once AutoPublishAlias is set;
- the order workflow (infra/resources.json names its task functions by ARNs built from their
  names, so that path B, which has no alias, works from the same file): in the packaged
  template only, each such ARN, in the definition's substitutions and in the role's policy,
  becomes the alias.
`unaliased_invocations` checks the result on the translated template (what CloudFormation
deploys); packaging fails on anything left calling a function directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
ALIAS = "live"
#: StageSettings key (infra/resources.json) naming the stage's CodeDeploy configuration.
SETTING = "DeploymentPreferenceType"
ALL_AT_ONCE = "AllAtOnce"
#: CodeDeploy's predefined Lambda configurations -> seconds before all traffic has moved:
#: how long a rollback alarm has to fire.
BAKE_SECONDS = {
    ALL_AT_ONCE: 0,
    **{f"Canary10Percent{m}Minutes": 60 * m for m in (5, 10, 15, 30)},
    **{f"Linear10PercentEvery{m}Minute{'s' if m > 1 else ''}": 9 * 60 * m for m in (1, 2, 3, 10)},
}
#: CloudWatch evaluates an alarm about a minute after a period ends.
ALARM_EVALUATION_LAG = 60
_FUNCTION_ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:lambda:\$\{AWS::Region\}:\$\{AWS::AccountId\}:function:([^:]+)$"
)
_SUB_FUNCTION_ARN = re.compile(r"\$\{(\w+)\.Arn\}")


class GradualError(ValueError):
    """The gradual deployment cannot be set up safely; the message says why."""


def deployment_type(template: dict[str, Any], stage: str) -> str:
    """The stage's CodeDeploy configuration (StageSettings `DeploymentPreferenceType`)."""
    try:
        value = template["Mappings"]["StageSettings"][stage][SETTING]
    except KeyError:
        raise GradualError(f"StageSettings of {stage} has no {SETTING}") from None
    if value not in BAKE_SECONDS:
        raise GradualError(f"{SETTING} {value!r} of {stage} is none of {sorted(BAKE_SECONDS)}")
    return str(value)


def monitoring_rollback_alarms() -> Callable[[str], list[str]]:
    """infra.monitoring's rollback_alarm_ids (imported here: it imports the app)."""
    from infra.monitoring import rollback_alarm_ids

    return rollback_alarm_ids


def rollback_alarms(
    template: dict[str, Any], function_id: str, alarm_ids: Callable[[str], list[str]]
) -> list[Any]:
    """`Alarms` of a DeploymentPreference: Refs of the function's rollback alarms; an alarm
    that exists only under a Condition is referenced only where it holds."""
    resources = template["Resources"]
    found: list[Any] = []
    for alarm_id in dict.fromkeys(alarm_ids(function_id)):
        alarm = resources.get(alarm_id)
        if alarm is None:
            continue
        if alarm.get("Type") != "AWS::CloudWatch::Alarm":
            raise GradualError(f"rollback alarm {alarm_id} of {function_id} is no alarm")
        ref = {"Ref": alarm_id}
        condition = alarm.get("Condition")
        found.append({"Fn::If": [condition, ref, {"Ref": "AWS::NoValue"}]} if condition else ref)
    return found


def alias_id(function_id: str) -> str:
    """The logical id SAM gives a function's alias (`<function>Alias<name>`, documented).
    Used rather than SAM's `X.Alias` shorthand, which cfn-lint does not resolve in Fn::Sub."""
    return f"{function_id}Alias{ALIAS}"


def functions(template: dict[str, Any]) -> list[str]:
    return [k for k, v in template["Resources"].items() if v.get("Type") == SERVERLESS_FUNCTION]


def add_gradual_deployments(
    template: dict[str, Any],
    stage: str,
    names: dict[str, str],
    alarm_ids: Callable[[str], list[str]] | None = None,
) -> list[str]:
    """Give every function its alias and deployment preference and point every invoker at
    the alias, in place (idempotent). Returns the functions left without a rollback alarm.

    `names`: logical id -> deployed function name (ARNs built from names are recognised by
    them). `alarm_ids`: a function's rollback alarm ids (default: infra.monitoring's)."""
    kind = deployment_type(template, stage)
    alarm_ids = alarm_ids if alarm_ids is not None else monitoring_rollback_alarms()
    ids = functions(template)
    unguarded = []
    for logical_id in ids:
        properties = template["Resources"][logical_id]["Properties"]
        alarms = rollback_alarms(template, logical_id, alarm_ids)
        if not alarms:
            unguarded.append(logical_id)
        properties["AutoPublishAlias"] = ALIAS
        properties["DeploymentPreference"] = {
            "Type": kind,
            **({"Alarms": alarms} if alarms else {}),
        }
    by_name = {names[i]: i for i in ids if i in names}
    for logical_id, resource in template["Resources"].items():
        if logical_id in ids:
            continue
        if resource.get("Type") == "AWS::Serverless::Api":
            _alias_api_uris(resource, set(ids))
        elif resource.get("Type") == "AWS::Lambda::Permission":
            _alias_permission(resource, set(ids))
        template["Resources"][logical_id] = alias_named_arns(resource, stage, by_name)
    guarded = [i for i in ids if i not in unguarded]
    if guarded and unguarded:
        raise GradualError(
            f"rollback alarms exist for {guarded} but not for {unguarded}: "
            "infra/monitoring.json out of date?"
        )
    return unguarded


def _alias_api_uris(api: dict[str, Any], function_ids: set[str]) -> None:
    """`${X.Arn}` in the swagger's Fn::Sub strings (integration and authorizer URIs) -> the
    alias's ARN."""

    def rewrite(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"${{{alias_id(name)}}}" if name in function_ids else match.group(0)

    for node in _dicts(api.get("Properties", {}).get("DefinitionBody", {})):
        sub = node.get("Fn::Sub")
        if isinstance(sub, str):
            node["Fn::Sub"] = _SUB_FUNCTION_ARN.sub(rewrite, sub)
        elif isinstance(sub, list) and sub and isinstance(sub[0], str):
            sub[0] = _SUB_FUNCTION_ARN.sub(rewrite, sub[0])


def _alias_permission(permission: dict[str, Any], function_ids: set[str]) -> None:
    properties = permission.get("Properties", {})
    target = _function_of(properties.get("FunctionName"), function_ids)
    if target:
        properties["FunctionName"] = {"Ref": alias_id(target)}


def _function_of(value: Any, function_ids: set[str]) -> str | None:
    """The function a `Ref X` or `Fn::GetAtt [X, Arn]` names, if X is one."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    if "Ref" in value and value["Ref"] in function_ids:
        return str(value["Ref"])
    att = value.get("Fn::GetAtt")
    if isinstance(att, list) and len(att) == 2 and att[1] == "Arn" and att[0] in function_ids:
        return str(att[0])
    return None


def alias_named_arns(value: Any, stage: str, by_name: dict[str, str]) -> Any:
    """Every `Fn::Sub` ARN built from a function's deployed name -> the alias's Ref (its ARN)."""
    if isinstance(value, list):
        return [alias_named_arns(v, stage, by_name) for v in value]
    if not isinstance(value, dict):
        return value
    sub = value.get("Fn::Sub")
    if len(value) == 1 and isinstance(sub, str):
        match = _FUNCTION_ARN.match(sub)
        if match:
            target = by_name.get(match.group(1).replace("${Stage}", stage))
            if target:
                return {"Ref": alias_id(target)}
        return value
    return {k: alias_named_arns(v, stage, by_name) for k, v in value.items()}


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def describe(template: dict[str, Any]) -> str:
    """One line for the packaging summary: the alias, the configuration, what is unguarded."""
    preferences = {
        i: template["Resources"][i]["Properties"].get("DeploymentPreference", {})
        for i in functions(template)
    }
    kinds = sorted({str(p.get("Type")) for p in preferences.values()})
    unguarded = [i for i, p in preferences.items() if not p.get("Alarms")]
    alarms = len({a for p in preferences.values() for a in _refs(p.get("Alarms", []))})
    guard = (
        f"NO rollback alarm for {len(unguarded)} of {len(preferences)} function(s)"
        if unguarded
        else f"{alarms} rollback alarm(s) guard all {len(preferences)} functions"
    )
    return f"alias {ALIAS}, {'/'.join(kinds)}; {guard}"


# --- checks, on the packaged template and on its translation ------------------------------


def slow_alarms(template: dict[str, Any], stage: str) -> list[str]:
    """Rollback alarms that cannot fire before the stage's deployment has moved all traffic:
    they would roll back nothing. Worst case to fire: one partial period, then
    DatapointsToAlarm breaching ones, then CloudWatch's evaluation lag."""
    kind = deployment_type(template, stage)
    if kind == ALL_AT_ONCE:
        return []  # nothing to wait for: alarms only stop a deployment already failing
    resources = template["Resources"]
    problems = []
    for function_id in functions(template):
        preference = resources[function_id]["Properties"].get("DeploymentPreference", {})
        for alarm_id in sorted(_refs(preference.get("Alarms", []))):
            seconds = time_to_fire(resources[alarm_id])
            if seconds is None or seconds > BAKE_SECONDS[kind]:
                problems.append(
                    f"{alarm_id} needs {seconds or 'an unknown number of'} s to fire; "
                    f"{kind} moves all of {function_id}'s traffic after {BAKE_SECONDS[kind]} s"
                )
    return problems


def time_to_fire(alarm: dict[str, Any]) -> int | None:
    properties = alarm.get("Properties", {})
    periods = [
        m["MetricStat"]["Period"] for m in properties.get("Metrics", []) if "MetricStat" in m
    ]
    periods += [properties["Period"]] if "Period" in properties else []
    datapoints = properties.get("DatapointsToAlarm", properties.get("EvaluationPeriods"))
    values = [*periods, datapoints]
    if not periods or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    period = max(periods)
    return int(period * (datapoints + 1) + ALARM_EVALUATION_LAG)


def _refs(value: Any) -> set[str]:
    return {d["Ref"] for d in _dicts(value) if set(d) == {"Ref"} and d["Ref"] != "AWS::NoValue"}


#: Translated resource types that name a function without invoking it.
_NOT_INVOKERS = {
    "AWS::Lambda::Function", "AWS::Lambda::Version", "AWS::Lambda::Alias",
    "AWS::CodeDeploy::Application", "AWS::CodeDeploy::DeploymentGroup",
    "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::Logs::LogGroup",
}  # fmt: skip


def unaliased_invocations(transformed: dict[str, Any]) -> list[str]:
    """Where the translated template (what CloudFormation deploys) still lets something invoke
    a function other than through its alias: a Ref/GetAtt/${} of the function itself, or an
    unqualified function ARN, anywhere but in resources that only name it; an async invoke
    config on another qualifier. Empty when every invoker calls the alias."""
    resources = transformed["Resources"]
    function_ids = {k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Function"}
    aliases = {k for k, v in resources.items() if v["Type"] == "AWS::Lambda::Alias"}
    problems = [f"{f} has no alias" for f in sorted(function_ids)
                if not any(resources[a]["Properties"]["FunctionName"] == {"Ref": f}
                           for a in aliases)]  # fmt: skip
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        properties = resource.get("Properties", {})
        if kind == "AWS::Lambda::EventInvokeConfig":
            if properties.get("Qualifier") != ALIAS:
                problems.append(f"{logical_id} configures {properties.get('Qualifier')}")
            continue
        if kind in _NOT_INVOKERS:
            continue
        for found in _direct_references(properties, function_ids):
            problems.append(f"{logical_id} ({kind}) invokes {found}, not its alias")
    return problems


def _direct_references(value: Any, function_ids: set[str]) -> Iterator[str]:
    for node in _dicts(value):
        target = _function_of(node, function_ids)
        if target:
            yield target
        sub = node.get("Fn::Sub")
        text = sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) and sub else ""
        if not isinstance(text, str):
            continue
        for name in re.findall(r"\$\{(\w+)(?:\.Arn)?\}", text):
            if name in function_ids:
                yield name
        if _FUNCTION_ARN.match(text):
            yield text
