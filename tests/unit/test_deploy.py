"""The deploy path, checked without AWS.

- the packaged template (dev and prod, one `chalice package` run each per session) passes
  cfn-lint and the SAM translator, pins its Stage and runs python3.12;
- config.json's environments and the policy files are what infra/wiring.py derives from
  infra/resources.json and the code, and name only their own stage's resources;
- every boto3 operation in chalicelib is granted to some function (which function, on which
  resource, is checked by the moto tests themselves: tests/unit/iam_calls.py).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from chalice.utils import to_cfn_resource_name

from chalicelib.core.resources import env_name
from infra import gradual
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
from infra.wiring import API_HANDLER, policy_file, resource_names

CHALICELIB = PROJECT_DIR / "chalicelib"
CONFIG = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
STAGES = list(CONFIG["stages"])
PACKAGED_STAGES = ["dev", "prod"]

#: Services chalicelib may create clients for (those tests/unit/iam_calls.py can check).
KNOWN_SERVICES = {
    "dynamodb", "sns", "sqs", "sts", "ssm", "cognito-idp", "ses", "kinesis", "s3", "rekognition",
    "stepfunctions", "athena",
}  # fmt: skip
#: Services whose operation names are looked for in the code: the known ones and others an
#: app like this commonly adds, so that a call into a new service is noticed too.
SCANNED_SERVICES = sorted(
    KNOWN_SERVICES
    | {"events", "cloudwatch", "stepfunctions", "secretsmanager", "lambda", "sesv2", "logs"}
    | {"kms", "scheduler", "athena", "glue"}
)
XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
#: Operations authorised as another action than their name, or (None) as none or per item.
ACTION_OF_OPERATION = {
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",
    "delete_objects": "s3:DeleteObject",  # per key (iam_calls.py checks each)
    "publish_batch": "sns:Publish",
    "send_message_batch": "sqs:SendMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_caller_identity": None,
    "transact_write_items": None,  # as each item's own action (iam_calls.py checks them)
    "verify": None,  # token signatures (`rsa.verify`), not KMS Verify
}


def source_text(root: Path = CHALICELIB) -> str:
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.py")))


@cache
def operation_services() -> dict[str, str]:
    """boto3 operation name -> the IAM prefix of (one) service that has it."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    found: dict[str, str] = {}
    for service in SCANNED_SERVICES:
        model = session.get_service_model(service)
        for name in model.operation_names:
            found.setdefault(xform_name(name), model.signing_name or service)
    return found


def aws_operations_called(root: Path = CHALICELIB) -> set[str]:
    """boto3 client operations named in the code: `.op(` calls and paginator names."""
    text = source_text(root)
    called = set(re.findall(r"\.(\w+)\(", text)) & set(operation_services())
    called |= set(re.findall(r"get_paginator\(\s*[\"'](\w+)[\"']", text))
    return called


def action_of(operation: str) -> str | None:
    if operation in ACTION_OF_OPERATION:
        return ACTION_OF_OPERATION[operation]
    service = {"email": "ses"}.get(operation_services()[operation], operation_services()[operation])
    return f"{service}:" + "".join(part.title() for part in operation.split("_"))


def load_policy(stage: str, function: str = API_HANDLER) -> dict[str, Any]:
    return json.loads((PROJECT_DIR / ".chalice" / policy_file(stage, function)).read_text())


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@cache
def app_function_names() -> list[str]:
    """The app's functions by Chalice name (config.json lists each, written by infra.wiring)."""
    return list(CONFIG["stages"]["dev"]["lambda_functions"])


def logical_id(function: str) -> str:
    return API_HANDLER_LOGICAL_ID if function == API_HANDLER else to_cfn_resource_name(function)


@cache
def function_names(stage: str) -> dict[str, str]:
    return package_function_names(stage)


def list_index() -> str:
    """The index the repository queries (read from source: importing chalicelib here would
    configure its module-level Logger/Metrics without the stage environment)."""
    source = (CHALICELIB / "users" / "repository.py").read_text()
    [index] = re.findall(r"^LIST_INDEX = \"([\w.-]+)\"$", source, flags=re.M)
    return index


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
def test_packaged_functions_deploy_gradually_and_are_invoked_through_their_alias(
    stage: str, packaged: Callable[[str], PackageResult]
) -> None:
    """infra/gradual.py on the real package (the details: tests/unit/test_gradual_deploy.py)."""
    result = packaged(stage)
    kind = gradual.deployment_type(RESOURCES, stage)
    for logical_id, function in functions(result.template).items():
        properties = function["Properties"]
        assert properties["AutoPublishAlias"] == gradual.ALIAS
        assert properties["DeploymentPreference"]["Type"] == kind
        assert properties["DeploymentPreference"].get("Alarms"), f"{logical_id}: no rollback alarm"
    assert gradual.unaliased_invocations(result.transformed) == []
    assert gradual.slow_alarms(result.template, stage) == []
    written = result.template_path.with_name("cloudformation.json")
    assert json.loads(written.read_text()) == result.transformed


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
    # ...but for function ARNs built from names (the order workflow's): path A's name the alias.
    by_name = {name: lid for lid, name in function_names(stage).items()}
    for logical_id, resource in RESOURCES["Resources"].items():
        wanted = gradual.alias_named_arns(resource, stage, by_name)
        assert template["Resources"][logical_id] == wanted, logical_id
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
    # X-Ray active tracing where the stage turns it on (staging, prod: test_monitoring.py).
    assert properties["Tracing"] == ("Active" if stage_config["xray"] else "PassThrough")
    assert properties["MemorySize"] == effective["lambda_memory_size"]
    assert properties["Timeout"] == effective["lambda_timeout"]
    assert properties.get("ReservedConcurrentExecutions") == effective.get("reserved_concurrency")
    assert stage_config["tags"].items() <= properties["Tags"].items()
    for function in app_function_names():
        resource = functions(result.template)[logical_id(function)]
        variables = resource["Properties"]["Environment"]["Variables"]
        own = stage_config["lambda_functions"][function]["environment_variables"]
        assert variables == {**stage_config["environment_variables"], **own}, function
        role_id = resource["Properties"]["Role"]["Fn::GetAtt"][0]
        [role_policy] = result.template["Resources"][role_id]["Properties"]["Policies"]
        assert role_policy["PolicyDocument"] == load_policy(stage, function)


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
            if source["Type"] in ("Api", "CloudWatchEvent"):  # (an event pattern names nothing)
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
        **json.loads((PROJECT_DIR / "infra" / "monitoring.json").read_text())["Resources"],
    }
    assert original == RESOURCES
    with pytest.raises(PackagingError):
        merge_document("qa", RESOURCES)


def _sample_template() -> dict[str, Any]:
    function = {"Type": SERVERLESS_FUNCTION, "Properties": {"Runtime": "python3.11"}}
    return {
        "Parameters": {"Stage": {"Type": "String", "AllowedValues": ["dev", "prod"]}},
        "Mappings": {"StageSettings": {"dev": {gradual.SETTING: "AllAtOnce"}}},
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
        assert properties == {"Runtime": TARGET_RUNTIME, "FunctionName": name,
                              "AutoPublishAlias": gradual.ALIAS,
                              "DeploymentPreference": {"Type": "AllAtOnce"}}  # fmt: skip
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


# --- config.json and the policies follow from resources.json and the code ---------------


def test_wiring_is_up_to_date() -> None:
    """config.json's environments and the policy files are what `python -m infra.wiring`
    derives from the template and the code (a child process: it imports app.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "infra.wiring", "--check"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_every_name_a_function_is_given_is_its_stages_resource(stage: str) -> None:
    names = {f"{env_name(lid)}_NAME": name for lid, name in resource_names(stage).items()}
    settings = {env_name(k): v for k, v in RESOURCES["Mappings"]["StageSettings"][stage].items()}
    for function, entry in CONFIG["stages"][stage]["lambda_functions"].items():
        for variable, value in entry["environment_variables"].items():
            assert value == {**names, **settings}.get(variable), (function, variable)


@pytest.mark.parametrize("stage", STAGES)
def test_a_function_is_given_only_the_names_it_uses(stage: str) -> None:
    functions = CONFIG["stages"][stage]["lambda_functions"]
    assert set(functions["cognito_jwt"]["environment_variables"]) == {
        "COGNITO_CONFIG_PARAMETER_NAME"
    }
    assert set(functions["onboard_users"]["environment_variables"]) == {
        "ONBOARDING_QUEUE_NAME",  # its own event source, named by its decorator
        "USERS_TABLE_NAME",
    }
    common = CONFIG["stages"][stage]["environment_variables"]
    assert set(common) == {"APP_STAGE", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE",
                           "POWERTOOLS_LOG_LEVEL", "TRACING_SUBSEGMENTS"}  # fmt: skip


def test_list_index_exists_in_resources_json() -> None:
    table = RESOURCES["Resources"]["UsersTable"]["Properties"]
    assert list_index() in {i["IndexName"] for i in table["GlobalSecondaryIndexes"]}


def test_every_logical_id_the_code_names_is_in_the_template() -> None:
    code = source_text() + (PROJECT_DIR / "app.py").read_text()
    named = set(re.findall(r"(?:Resource|source_name)\(\"(\w+)\"\)", code))
    assert named and named <= set(RESOURCES["Resources"]), named - set(RESOURCES["Resources"])
    keys = set(re.findall(r"(?:StageSetting|source_setting)\(\"(\w+)\"\)", code))
    for stage in STAGES:
        assert keys <= set(RESOURCES["Mappings"]["StageSettings"][stage]), stage


@pytest.mark.parametrize("stage", STAGES)
def test_stage_config_is_complete(stage: str) -> None:
    stage_config = CONFIG["stages"][stage]
    assert CONFIG["autogen_policy"] is False and "autogen_policy" not in stage_config
    assert stage_config["xray"] is (stage != "dev")
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
        "Mappings": RESOURCES["Mappings"],
        "Resources": {lid: {"Type": SERVERLESS_FUNCTION, "Properties": {}} for lid in names},
    }
    final = finalize_template(template, stage, names)
    assert {f["Properties"]["Runtime"] for f in functions(final).values()} == {TARGET_RUNTIME}


# --- IAM policies: what the code declares, on the stage's resources only ----------------
# Whether a policy allows every call its function really makes is checked in every moto test
# that runs a function through the Chalice test client (tests/unit/iam_calls.py).


def test_every_aws_call_is_of_a_service_the_policies_know() -> None:
    text = source_text()
    services = set(re.findall(r"client\(\s*[\"']([\w-]+)[\"']", text))
    assert services <= KNOWN_SERVICES, "a new service: teach tests/unit/iam_calls.py its ARNs"
    assert "boto3.resource" not in text and ".resource(" not in text


def test_every_aws_call_is_declared_by_some_need() -> None:
    """A boto3 operation named in chalicelib whose IAM action no `@needs` (nor an event
    source mapping) grants: the code gained a call its factory does not declare."""
    granted = {
        action
        for stage in ["dev"]
        for function in app_function_names()
        for statement in load_policy(stage, function)["Statement"]
        for action in as_list(statement["Action"])
    }
    called = aws_operations_called()
    missing = sorted(op for op in called if (action := action_of(op)) and action not in granted)
    assert not missing, f"no function is granted what these calls need: {missing}"


@pytest.mark.parametrize(
    ("function", "setting"),
    [("welcome_new_user", "WelcomeEmailSender"), ("email_order_update", "OrderEmailSender")],
)
@pytest.mark.parametrize("stage", STAGES)
def test_emails_may_only_come_from_the_stage_sender(
    stage: str, function: str, setting: str
) -> None:
    [statement] = [
        s for s in load_policy(stage, function)["Statement"] if "ses:SendEmail" in s["Action"]
    ]
    sender = RESOURCES["Mappings"]["StageSettings"][stage][setting]
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": sender}}


@pytest.mark.parametrize("function", app_function_names())
@pytest.mark.parametrize("stage", STAGES)
def test_policy_is_least_privilege(stage: str, function: str) -> None:
    for statement in load_policy(stage, function)["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        if "Condition" in statement:  # resources named at deploy time: pinned by tag instead
            condition = statement["Condition"]["StringEquals"]
            settings = RESOURCES["Mappings"]["StageSettings"][stage]
            senders = [{"ses:FromAddress": settings[k]} for k in settings if k.endswith("Sender")]
            assert condition in (
                {"aws:ResourceTag/app": "serverless-app", "aws:ResourceTag/stage": stage},
                *senders,
            ), condition
        assert not any("*" in a for a in as_list(statement["Action"]))
        if "*" in as_list(statement["Resource"]):
            unscoped = (*XRAY_ACTIONS, "rekognition:DetectLabels")  # no resource-level IAM
            assert all(a in unscoped for a in as_list(statement["Action"])), statement


@pytest.mark.parametrize("function", app_function_names())
@pytest.mark.parametrize("stage", STAGES)
def test_policy_names_only_its_stage_and_no_account_or_region(stage: str, function: str) -> None:
    text = json.dumps(load_policy(stage, function))
    assert set(re.findall(r"serverless-app[-/]([a-z0-9]+)", text)) == {stage}
    assert not re.search(r"\d{12}", text)
    for statement in load_policy(stage, function)["Statement"]:
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
    origins = CONFIG["stages"][stage]["lambda_functions"]["api_handler"]["environment_variables"][
        "CORS_ALLOW_ORIGINS"
    ]
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
