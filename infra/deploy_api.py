"""Path B, the REST API's part: after `chalice deploy`, give the API what `make package` merges
into it from infra/api-responses.json, read from that same file so both paths agree:

- the API's name for the stage (`Name`, `serverless-app-<stage>`: the ApiName of its metrics,
  which the stage's alarms and dashboard watch), by `update_rest_api`: `chalice deploy`
  overwrites the API from its swagger (`put_rest_api`, mode overwrite) and the swagger's
  title, the app's name, renames it `serverless-app` on every deploy, so it is renamed back
  every time (a bare `chalice deploy` leaves it misnamed until the next `make deploy`);
- API Gateway's own error responses (401, 403, 404, 429, 413, 504, DEFAULT_4XX/5XX) in the
  app's JSON error shape with the stage's CORS origin (`put_gateway_response`, then a new
  deployment of the stage: gateway responses only take effect once deployed, and `chalice
  deploy` overwrites the API from its swagger, which has none, so they are put every time);
- the stage's throttling, rate and burst for every method (`update_stage`, `/*/*/throttling`);
- where the association's `Condition` holds (prod), the web ACL of the resources stack
  (`ApiWebAcl` in infra/resources.json, found by its name) associated with the API's stage
  (`wafv2.associate_web_acl`: the stage's ARN exists only once `chalice deploy` has run);
- the stage's access log (`AccessLogSetting`: one JSON line per request into the resources
  stack's `ApiAccessLogGroup`, infra/monitoring.json) and X-Ray tracing (`TracingEnabled`,
  on where the stage's `StageSettings` Tracing is), by `update_stage`.

The template's values are resolved for the stage by `resolve` (Ref of the Stage parameter,
Fn::FindInMap, Fn::Select, Fn::Split, Fn::Sub, Fn::Equals, Fn::If: what these files use).
Applying it all twice changes nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from infra.paths import PROJECT_DIR

API_RESPONSES = PROJECT_DIR / "infra" / "api-responses.json"
MONITORING = PROJECT_DIR / "infra" / "monitoring.json"
RESOURCES = PROJECT_DIR / "infra" / "resources.json"
CHALICE_DIR = PROJECT_DIR / ".chalice"
REST_API = "RestAPI"
ASSOCIATION = "ApiWebAclAssociation"
#: list_web_acls pages looked at, at most (100 web ACLs a page): a bound, not a wait.
MAX_PAGES = 20


class DeployError(RuntimeError):
    """Path B cannot apply the API's settings; the message says why."""


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def resolve(
    value: Any,
    stage: str,
    template: dict[str, Any] | None = None,
    known: dict[str, str] | None = None,
) -> Any:
    """`value` with the intrinsic functions these templates use evaluated for `stage`;
    `known`: what `${Name}` in an Fn::Sub stands for besides the stage (pseudo parameters,
    a resource's physical name)."""
    template = template if template is not None else load(RESOURCES)
    known = known or {}
    if isinstance(value, list):
        return [resolve(v, stage, template, known) for v in value]
    if not isinstance(value, dict):
        return value
    key = next(iter(value), "")
    if len(value) != 1 or not (key in ("Ref", "Condition") or key.startswith("Fn::")):
        return {k: resolve(v, stage, template, known) for k, v in value.items()}
    (function, args), *_ = value.items()
    if function == "Ref":
        if args != "Stage":
            raise DeployError(f"cannot resolve Ref {args!r} outside CloudFormation")
        return stage
    if function == "Condition":
        return resolve(template["Conditions"][args], stage, template, known)
    if function == "Fn::If":
        condition, if_true, if_false = args
        chosen = if_true if resolve({"Condition": condition}, stage, template) else if_false
        return resolve(chosen, stage, template, known)
    args = resolve(args, stage, template, known)
    if function == "Fn::FindInMap":
        mapping, key, name = args
        return template["Mappings"][mapping][key][name]
    if function == "Fn::Select":
        index, items = args
        return items[int(index)]
    if function == "Fn::Split":
        separator, text = args
        return text.split(separator)
    if function == "Fn::Equals":
        left, right = args
        return left == right
    if function == "Fn::Sub":
        text, names = (args, {}) if isinstance(args, str) else args
        names = {"Stage": stage, **known, **names}

        def substitute(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                raise DeployError(f"cannot resolve ${{{match.group(1)}}} outside CloudFormation")
            return str(names[match.group(1)])

        return re.sub(r"\$\{([\w:.]+)\}", substitute, text)
    raise DeployError(f"cannot resolve {function} outside CloudFormation")


def condition_holds(resource: dict[str, Any], stage: str, template: dict[str, Any]) -> bool:
    name = resource.get("Condition")
    return name is None or bool(resolve({"Condition": name}, stage, template))


def gateway_responses(stage: str) -> list[dict[str, Any]]:
    """put_gateway_response's arguments for every response of infra/api-responses.json."""
    template = load(RESOURCES)
    properties = load(API_RESPONSES)["Resources"][REST_API]["Properties"]
    found = []
    for kind, response in properties["GatewayResponses"].items():
        response = resolve(response, stage, template)
        headers = response.get("ResponseParameters", {}).get("Headers", {})
        arguments: dict[str, Any] = {
            "responseType": kind,
            "responseParameters": {f"gatewayresponse.header.{k}": v for k, v in headers.items()},
            "responseTemplates": response["ResponseTemplates"],
        }
        if "StatusCode" in response:
            arguments["statusCode"] = response["StatusCode"]
        found.append(arguments)
    return found


def _method_key(resource_path: str, http_method: str) -> str:
    """A method setting's path in update_stage: `/*/*`, or `/~1register/POST`."""
    resource = "*" if resource_path == "/*" else resource_path.replace("/", "~1")
    return f"/{resource}/{http_method}"


def throttling_operations(stage: str) -> list[dict[str, str]]:
    """update_stage's patch operations for the stage's MethodSettings (throttling)."""
    template = load(RESOURCES)
    properties = load(API_RESPONSES)["Resources"][REST_API]["Properties"]
    operations = []
    for setting in resolve(properties["MethodSettings"], stage, template):
        key = _method_key(setting["ResourcePath"], setting["HttpMethod"])
        for name, path in (("ThrottlingRateLimit", "rateLimit"), ("ThrottlingBurstLimit",
                                                                   "burstLimit")):  # fmt: skip
            if name in setting:
                operations.append(
                    {
                        "op": "replace",
                        "path": f"{key}/throttling/{path}",
                        "value": str(setting[name]),
                    }
                )
    return operations


def api_name(stage: str) -> str:
    """The REST API's name for `stage` (`Name` of infra/api-responses.json)."""
    properties = load(API_RESPONSES)["Resources"][REST_API]["Properties"]
    return str(resolve(properties["Name"], stage))


def tracing_enabled(stage: str) -> bool:
    """Whether the stage's API has X-Ray active tracing (`TracingEnabled`)."""
    properties = load(API_RESPONSES)["Resources"][REST_API]["Properties"]
    return bool(resolve(properties["TracingEnabled"], stage))


def access_log_operations(
    stage: str, account: str, partition: str = "aws", region: str = "us-east-1"
) -> list[dict[str, str]]:
    """update_stage's patch operations for the stage's access log (`AccessLogSetting`), its
    destination the resources stack's access log group (infra/monitoring.json)."""
    setting = load(API_RESPONSES)["Resources"][REST_API]["Properties"]["AccessLogSetting"]
    group = load(MONITORING)["Resources"]["ApiAccessLogGroup"]["Properties"]["LogGroupName"]
    known = {"AWS::Partition": partition, "AWS::Region": region, "AWS::AccountId": account,
             "ApiAccessLogGroup": resolve(group, stage)}  # fmt: skip
    resolved = resolve(setting, stage, known=known)
    return [
        {"op": "replace", "path": "/accessLogSettings/destinationArn",
         "value": resolved["DestinationArn"]},
        {"op": "replace", "path": "/accessLogSettings/format", "value": resolved["Format"]},
    ]  # fmt: skip


def web_acl_name(stage: str) -> str | None:
    """The name of the web ACL the stage's API is associated with, or None (not prod)."""
    template = load(RESOURCES)
    association = load(API_RESPONSES)["Resources"][ASSOCIATION]
    if not condition_holds(association, stage, template):
        return None
    logical_id, _attribute = association["Properties"]["WebACLArn"]["Fn::GetAtt"]
    web_acl = template["Resources"][logical_id]
    return str(resolve(web_acl["Properties"]["Name"], stage, template))


def find_web_acl_arn(wafv2: Any, name: str) -> str:
    """The ARN of the REGIONAL web ACL `name` (created by the resources stack)."""
    marker: str | None = None
    for _ in range(MAX_PAGES):
        page = wafv2.list_web_acls(
            Scope="REGIONAL", Limit=100, **({"NextMarker": marker} if marker else {})
        )
        for web_acl in page.get("WebACLs", []):
            if web_acl["Name"] == name:
                return str(web_acl["ARN"])
        marker = page.get("NextMarker")
        if not marker or not page.get("WebACLs"):
            break
    raise DeployError(f"no REGIONAL web ACL named {name}: deploy the resources stack first")


def rest_api_id(stage: str, chalice_dir: Path = CHALICE_DIR) -> str:
    """The id of the REST API `chalice deploy` created for `stage` (.chalice/deployed/)."""
    deployed = chalice_dir / "deployed" / f"{stage}.json"
    if not deployed.exists():
        raise DeployError(f"{deployed} not found: run chalice deploy --stage {stage} first")
    for resource in load(deployed).get("resources", []):
        if resource.get("resource_type") == "rest_api":
            return str(resource["rest_api_id"])
    raise DeployError(f"{deployed} names no REST API")


def stage_arn(apigateway: Any, api_id: str, api_stage: str) -> str:
    meta = apigateway.meta
    return (
        f"arn:{meta.partition}:apigateway:{meta.region_name}::/restapis/{api_id}/stages/{api_stage}"
    )


def _account(apigateway: Any) -> str:
    import boto3

    sts = boto3.client("sts", region_name=apigateway.meta.region_name)
    return str(sts.get_caller_identity()["Account"])


def apply_api_settings(
    stage: str,
    apigateway: Any,
    wafv2: Any,
    api_id: str,
    chalice_config: dict[str, Any],
    account: str | None = None,
) -> list[str]:
    """Give the deployed REST API `api_id` its gateway responses, throttling, access log,
    tracing and (prod) web ACL; returns what was done, one line each. `account`: the AWS
    account's id (the access log group's ARN), asked of STS when not given."""
    stage_config = chalice_config["stages"][stage]
    api_stage = stage_config.get(
        "api_gateway_stage", chalice_config.get("api_gateway_stage", "api")
    )
    done = []
    name = api_name(stage)
    rename = [{"op": "replace", "path": "/name", "value": name}]
    apigateway.update_rest_api(restApiId=api_id, patchOperations=rename)
    done.append(f"{api_id}: named {name}")
    responses = gateway_responses(stage)
    for arguments in responses:
        apigateway.put_gateway_response(restApiId=api_id, **arguments)
    apigateway.create_deployment(
        restApiId=api_id,
        stageName=api_stage,
        tracingEnabled=tracing_enabled(stage),
        description="gateway responses (infra/deploy_api.py)",
    )
    done.append(f"{api_id}/{api_stage}: {len(responses)} gateway responses, deployed")
    operations = throttling_operations(stage)
    apigateway.update_stage(restApiId=api_id, stageName=api_stage, patchOperations=operations)
    limits = ", ".join(f"{o['path']}={o['value']}" for o in operations)
    done.append(f"{api_id}/{api_stage}: throttling {limits}")
    meta = apigateway.meta
    logging = access_log_operations(stage, account or _account(apigateway), meta.partition,
                                    meta.region_name)  # fmt: skip
    traced = tracing_enabled(stage)
    tracing = [{"op": "replace", "path": "/tracingEnabled", "value": str(traced).lower()}]
    apigateway.update_stage(
        restApiId=api_id, stageName=api_stage, patchOperations=[*logging, *tracing]
    )
    done.append(f"{api_id}/{api_stage}: access log to {logging[0]['value']}, tracing {traced}")
    acl = web_acl_name(stage)
    if acl is not None:
        web_acl_arn = find_web_acl_arn(wafv2, acl)
        resource_arn = stage_arn(apigateway, api_id, api_stage)
        current = wafv2.get_web_acl_for_resource(ResourceArn=resource_arn).get("WebACL") or {}
        if current.get("ARN") != web_acl_arn:
            wafv2.associate_web_acl(WebACLArn=web_acl_arn, ResourceArn=resource_arn)
        done.append(f"{api_id}/{api_stage}: web ACL {acl}")
    return done
