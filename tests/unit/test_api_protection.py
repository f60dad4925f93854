"""The REST API's protection on both deploy paths: stage throttling per stage, API Gateway's own
errors in the app's shape with the stage's CORS origin, and in prod a WAF web ACL on the
stage (per-client rate limits on the public routes, AWS managed rules).

Path A is checked on the template `make package` builds (one `chalice package` per stage,
then the SAM transform), path B (infra/deploy_api.py, after `chalice deploy`) against moto's
API Gateway and WAFv2.
"""

from __future__ import annotations

import json
import posixpath
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import deploy_api
from infra.deploy_api import DeployError, apply_api_settings, resolve
from infra.package import PackageResult, package, sam_transform
from infra.paths import PROJECT_DIR

CONFIG = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
STAGES = list(CONFIG["stages"])
THROTTLING = {"dev": (50, 100), "staging": (200, 400), "prod": (1000, 2000)}
#: Gateway responses that must exist, with the status and code each answers.
GATEWAY_RESPONSES = {
    "UNAUTHORIZED": ("401", "unauthorized"),
    "ACCESS_DENIED": ("403", "forbidden"),
    "THROTTLED": ("429", "too_many_requests"),
    "WAF_FILTERED": ("403", "forbidden"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "not_found"),
    "DEFAULT_4XX": (None, "bad_request"),
    "DEFAULT_5XX": (None, "internal_error"),
}
MANAGED_GROUPS = {
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
}
WEB_ACL = RESOURCES["Resources"]["ApiWebAcl"]


def first_origin(stage: str) -> str:
    return str(RESOURCES["Mappings"]["StageSettings"][stage]["CorsAllowOrigins"].split(",")[0])


# --- path A: the packaged template ------------------------------------------------------


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Any]]:
    """(packaged template, the same after the SAM transform) of a stage, packaged once."""
    out_root = tmp_path_factory.mktemp("out")
    done: dict[str, tuple[Any, Any]] = {}

    def get(stage: str) -> tuple[Any, Any]:
        if stage not in done:
            result: PackageResult = package(stage, out_root=out_root)  # cfn-lint runs too
            done[stage] = (result.template, sam_transform(result.template))
        return done[stage]

    return get


def of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


@pytest.mark.parametrize("stage", STAGES)
def test_packaged_stage_is_throttled_from_its_stage_settings(
    stage: str, packaged: Callable[[str], tuple[Any, Any]]
) -> None:
    template, transformed = packaged(stage)
    [api_stage] = of_type(transformed, "AWS::ApiGateway::Stage").values()
    [setting] = resolve(api_stage["Properties"]["MethodSettings"], stage, template)
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    rate, burst = THROTTLING[stage]
    assert float(setting["ThrottlingRateLimit"]) == rate
    assert int(setting["ThrottlingBurstLimit"]) == burst
    assert rate <= burst


@pytest.mark.parametrize("stage", STAGES)
def test_packaged_gateway_errors_carry_the_stages_origin_and_the_error_shape(
    stage: str, packaged: Callable[[str], tuple[Any, Any]]
) -> None:
    """A browser can read an authorizer's 401, a throttled 429 or a WAF 403 only if the
    response allows its origin: the stage's own, never `*` or the caller's Origin echoed."""
    template, transformed = packaged(stage)
    [api] = of_type(transformed, "AWS::ApiGateway::RestApi").values()
    responses = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert set(GATEWAY_RESPONSES) <= set(responses)
    for kind, response in responses.items():
        headers = resolve(response["responseParameters"], stage, template)
        origin = headers["gatewayresponse.header.Access-Control-Allow-Origin"]
        assert origin == f"'{first_origin(stage)}'", kind
        assert headers["gatewayresponse.header.Vary"] == "'Origin'"
        status, code = GATEWAY_RESPONSES.get(kind, (response.get("statusCode"), None))
        assert response.get("statusCode") == status, kind
        body = rendered(response["responseTemplates"]["application/json"])
        assert set(body["error"]) == {"code", "message", "request_id"}, kind
        assert body["error"]["request_id"] == "req-1"
        if code is not None:
            assert body["error"]["code"] == code, kind


def rendered(template: str) -> dict[str, Any]:
    """A gateway response's body as API Gateway fills it in (messageString is quoted)."""
    text = template.replace("$context.error.messageString", json.dumps('Say "no"'))
    return dict(json.loads(text.replace("$context.requestId", "req-1")))


@pytest.mark.parametrize("stage", STAGES)
def test_only_prod_puts_a_web_acl_on_the_stage_chalice_packaged(
    stage: str, packaged: Callable[[str], tuple[Any, Any]]
) -> None:
    template, transformed = packaged(stage)
    associations = of_type(transformed, "AWS::WAFv2::WebACLAssociation")
    web_acls = of_type(transformed, "AWS::WAFv2::WebACL")
    assert set(associations) == {"ApiWebAclAssociation"} and set(web_acls) == {"ApiWebAcl"}
    [association] = associations.values()
    on = resolve({"Condition": association["Condition"]}, stage, template)
    assert on is (stage == "prod")
    assert web_acls["ApiWebAcl"]["Condition"] == association["Condition"]
    properties = association["Properties"]
    assert properties["WebACLArn"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    arn = properties["ResourceArn"]["Fn::Sub"]
    [stage_id] = of_type(transformed, "AWS::ApiGateway::Stage")
    assert arn.endswith(f"::/restapis/${{RestAPI}}/stages/${{{stage_id}}}"), arn
    assert transformed["Resources"][stage_id]["Properties"]["RestApiId"] == {"Ref": "RestAPI"}


def test_web_acl_is_regional_with_managed_rules_and_everything_visible() -> None:
    properties = WEB_ACL["Properties"]
    assert properties["Scope"] == "REGIONAL" and properties["DefaultAction"] == {"Allow": {}}
    rules = properties["Rules"]
    groups = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in rules
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert groups == MANAGED_GROUPS
    assert len({r["Priority"] for r in rules}) == len(rules)
    for visibility in [properties["VisibilityConfig"]] + [r["VisibilityConfig"] for r in rules]:
        assert visibility["CloudWatchMetricsEnabled"] is True
        assert visibility["SampledRequestsEnabled"] is True


def rate_rules() -> dict[str, dict[str, Any]]:
    return {
        r["Name"]: r
        for r in WEB_ACL["Properties"]["Rules"]
        if "RateBasedStatement" in r["Statement"]
    }


def test_rate_limited_answers_are_429s_in_the_apis_shape_for_the_stages_origin() -> None:
    bodies = resolve(WEB_ACL["Properties"]["CustomResponseBodies"], "prod")
    assert rate_rules()
    for name, rule in rate_rules().items():
        statement = rule["Statement"]["RateBasedStatement"]
        assert statement["AggregateKeyType"] == "IP", name  # not a header a client sets
        response = resolve(rule["Action"]["Block"]["CustomResponse"], "prod")
        assert response["ResponseCode"] == 429
        body = bodies[response["CustomResponseBodyKey"]]
        assert body["ContentType"] == "APPLICATION_JSON"
        assert json.loads(body["Content"])["error"]["code"] == "too_many_requests"
        headers = {h["Name"]: h["Value"] for h in response["ResponseHeaders"]}
        assert headers["Access-Control-Allow-Origin"] == first_origin("prod")
        assert int(headers["Retry-After"]) > 0


def waf_view(path: str, transformations: list[dict[str, Any]]) -> str:
    """A URI path after WAF's text transformations (those the rules use)."""
    for step in sorted(transformations, key=lambda t: t["Priority"]):
        if step["Type"] == "URL_DECODE":
            path = urllib.parse.unquote(path)
        elif step["Type"] == "NORMALIZE_PATH":
            path = posixpath.normpath(re.sub("/+", "/", path)) + ("/" if path.endswith("/") else "")
        elif step["Type"] == "LOWERCASE":
            path = path.lower()
        else:
            assert step["Type"] == "NONE", step
    return path


def counted(rule: dict[str, Any], method: str, path: str) -> bool:
    """Whether a request falls in the rate rule's scope (the statements the rules use)."""
    scope = rule["Statement"]["RateBasedStatement"].get("ScopeDownStatement")
    return scope is None or matches(scope, method, path)


def matches(statement: dict[str, Any], method: str, path: str) -> bool:
    if "OrStatement" in statement:
        return any(matches(s, method, path) for s in statement["OrStatement"]["Statements"])
    if "RegexMatchStatement" in statement:
        regex = statement["RegexMatchStatement"]
        assert regex["FieldToMatch"] == {"UriPath": {}}
        seen = waf_view(path, regex["TextTransformations"])
        return re.search(regex["RegexString"], seen) is not None
    byte_match = statement["ByteMatchStatement"]
    assert byte_match["FieldToMatch"] == {"Method": {}}
    assert byte_match["PositionalConstraint"] == "EXACTLY"
    return method == byte_match["SearchString"]


PUBLIC_REQUESTS = [
    ("POST", "/api/register"),
    ("POST", "/register"),  # a custom domain without the stage in the path
    ("POST", "/api/register/confirm"),
    ("POST", "/api/register/"),
    ("POST", "/api//register"),  # the same route, written to dodge a naive match
    ("POST", "/api/./register"),
    ("POST", "/api/regist%65r/confirm"),
    ("POST", "/api/REGISTER"),
]


@pytest.mark.parametrize(("method", "path"), PUBLIC_REQUESTS)
def test_registration_floods_from_one_address_are_rate_limited_however_spelt(
    method: str, path: str
) -> None:
    assert counted(rate_rules()["RegisterRateLimit"], method, path)


def test_every_public_route_of_the_app_is_rate_limited_per_client() -> None:
    """Routes without an authorizer (read from app.py: another engineer's new public route
    fails this until it is covered), CORS preflights included."""
    source = (PROJECT_DIR / "app.py").read_text()
    routes = re.findall(r"@app\.route\(\s*\"([^\"]+)\",\s*methods=\[([^\]]*)\]([^)]*)\)", source)
    public = [(path, methods) for path, methods, rest in routes if "authorizer" not in rest]
    assert ("/health", '"GET"') in public and ("/register", '"POST"') in public
    scoped = [r for r in rate_rules().values() if "ScopeDownStatement" in r["Statement"][
        "RateBasedStatement"]]  # fmt: skip
    for path, methods in public:
        for method in re.findall(r"\"(\w+)\"", methods):
            assert any(counted(r, method, f"/api{path}") for r in scoped), (method, path)
    preflight = ("OPTIONS", "/api/users/1234")
    assert any(counted(r, *preflight) for r in scoped)
    for method, path in [("GET", "/api/users/1234"), ("POST", "/api/orders")]:
        assert not any(counted(r, method, path) for r in scoped), path
    [everything] = [r for r in rate_rules().values() if r not in scoped]
    assert counted(everything, "GET", "/api/users/1234")


def test_bodies_the_app_accepts_are_not_blocked_by_the_common_rule_set() -> None:
    """The common rule set blocks bodies over 8 KiB; a telemetry batch may be 4 MiB (the app
    bounds bodies itself, 413)."""
    [common] = [
        r["Statement"]["ManagedRuleGroupStatement"]
        for r in WEB_ACL["Properties"]["Rules"]
        if r["Name"] == "AWSManagedRulesCommonRuleSet"
    ]
    overrides = {o["Name"]: o["ActionToUse"] for o in common["RuleActionOverrides"]}
    assert overrides == {"SizeRestrictions_BODY": {"Count": {}}}


def test_path_b_resolves_what_cloudformation_would() -> None:
    assert resolve({"Fn::Sub": "a-${Stage}-b"}, "prod") == "a-prod-b"
    origin = {"Fn::Select": [0, {"Fn::Split": [",", {"Fn::FindInMap": [
        "StageSettings", {"Ref": "Stage"}, "CorsAllowOrigins"]}]}]}  # fmt: skip
    assert resolve(origin, "dev") == "http://localhost:3000"
    assert resolve({"Condition": "IsProd"}, "prod") is True
    assert resolve({"Condition": "IsProd"}, "staging") is False
    with pytest.raises(DeployError, match="RestAPI"):
        resolve({"Ref": "RestAPI"}, "dev")
    with pytest.raises(DeployError, match="AWS::Region"):
        resolve({"Fn::Sub": "${AWS::Region}"}, "dev")


# --- path B: after `chalice deploy` (moto) -----------------------------------------------


def chalice_deployed_api(tmp_path: Path, stage: str) -> tuple[Any, str]:
    """A REST API with a method, deployed to the stage `chalice deploy` names, and the
    .chalice/deployed/<stage>.json that records it."""
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    api_id = apigateway.create_rest_api(name="serverless-app")["id"]
    root = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(
        restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE"
    )
    apigateway.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="api")
    deployed = tmp_path / "deployed"
    deployed.mkdir()
    record = {"resources": [{"name": "rest_api", "resource_type": "rest_api",
                             "rest_api_id": api_id}]}  # fmt: skip
    (deployed / f"{stage}.json").write_text(json.dumps(record))
    assert deploy_api.rest_api_id(stage, tmp_path) == api_id
    return apigateway, api_id


def create_resources_stack_web_acl(wafv2: Any, stage: str) -> str:
    """What the resources stack creates: the template's web ACL, as the WAFv2 API takes it
    (botocore validates every rule against the service model on the way)."""
    properties = resolve(WEB_ACL["Properties"], stage)
    return str(wafv2.create_web_acl(**properties)["Summary"]["ARN"])


@pytest.fixture
def moto(stage_env: dict[str, str]) -> Any:
    with mock_aws():
        yield


def test_path_b_gives_prod_its_errors_throttling_and_web_acl(moto: None, tmp_path: Path) -> None:
    apigateway, api_id = chalice_deployed_api(tmp_path, "prod")
    wafv2 = boto3.client("wafv2", region_name="us-east-1")
    web_acl_arn = create_resources_stack_web_acl(wafv2, "prod")
    done = apply_api_settings("prod", apigateway, wafv2, api_id, CONFIG)
    responses = {r["responseType"]: r for r in apigateway.get_gateway_responses(
        restApiId=api_id)["items"]}  # fmt: skip
    assert set(GATEWAY_RESPONSES) <= set(responses)
    for kind, (status, code) in GATEWAY_RESPONSES.items():
        response = responses[kind]
        parameters = response["responseParameters"]
        origin = parameters["gatewayresponse.header.Access-Control-Allow-Origin"]
        assert origin == "'https://app.example.com'"
        assert response.get("statusCode") == status
        body = rendered(response["responseTemplates"]["application/json"])
        assert body["error"]["code"] == code
    settings = apigateway.get_stage(restApiId=api_id, stageName="api")["methodSettings"]
    assert settings["*/*"]["throttlingRateLimit"] == 1000.0
    assert settings["*/*"]["throttlingBurstLimit"] == 2000
    stage_arn = f"arn:aws:apigateway:us-east-1::/restapis/{api_id}/stages/api"
    assert wafv2.get_web_acl_for_resource(ResourceArn=stage_arn)["WebACL"]["ARN"] == web_acl_arn
    deployments = apigateway.get_deployments(restApiId=api_id)["items"]
    assert len(deployments) == 2, "gateway responses take effect once the stage is deployed"
    assert apply_api_settings("prod", apigateway, wafv2, api_id, CONFIG) == done  # idempotent
    assert wafv2.get_web_acl_for_resource(ResourceArn=stage_arn)["WebACL"]["ARN"] == web_acl_arn


def test_path_b_dev_is_throttled_with_its_own_origin_and_no_web_acl(
    moto: None, tmp_path: Path
) -> None:
    apigateway, api_id = chalice_deployed_api(tmp_path, "dev")
    wafv2 = boto3.client("wafv2", region_name="us-east-1")
    done = apply_api_settings("dev", apigateway, wafv2, api_id, CONFIG)
    assert not [line for line in done if "web ACL" in line]
    settings = apigateway.get_stage(restApiId=api_id, stageName="api")["methodSettings"]
    assert (settings["*/*"]["throttlingRateLimit"], settings["*/*"]["throttlingBurstLimit"]) == (
        50.0,
        100,
    )
    response = apigateway.get_gateway_response(restApiId=api_id, responseType="THROTTLED")
    origin = response["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
    assert origin == "'http://localhost:3000'"
    stage_arn = f"arn:aws:apigateway:us-east-1::/restapis/{api_id}/stages/api"
    assert "WebACL" not in wafv2.get_web_acl_for_resource(ResourceArn=stage_arn)


def test_path_b_prod_without_the_resources_stacks_web_acl_fails_loudly(
    moto: None, tmp_path: Path
) -> None:
    apigateway, api_id = chalice_deployed_api(tmp_path, "prod")
    wafv2 = boto3.client("wafv2", region_name="us-east-1")
    with pytest.raises(DeployError, match="serverless-app-prod-api"):
        apply_api_settings("prod", apigateway, wafv2, api_id, CONFIG)


def test_path_b_needs_chalice_deploy_first(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="chalice deploy"):
        deploy_api.rest_api_id("prod", tmp_path)
