"""Create the app's resources in an emulator from the same CloudFormation that deploys to AWS."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from infra import monitoring
from infra.paths import PROJECT_DIR
from local import provision_catalog

#: Where the running stack keeps stack.json and its lock (LOCAL_STATE_DIR moves it: tests).
STATE_DIR = Path(os.environ.get("LOCAL_STATE_DIR") or PROJECT_DIR / ".local")
RESOURCES_TEMPLATE = PROJECT_DIR / "infra" / "resources.json"

#: Credentials and region for the emulator and for moto in tests: never real ones.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def emulator_client(state: dict[str, Any], service: str) -> Any:
    """A boto3 client for the emulator of a running stack (`state` is its stack.json)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=state["emulator_url"],
        region_name=state["region"],
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def stack_name(stage: str) -> str:
    return f"serverless-app-{stage}-resources"


def provision(stage: str, cloudformation: Any) -> dict[str, str]:
    """Create (or find) the resources stack for `stage`; return its outputs by name.

    moto creates stacks synchronously; resource types it cannot emulate (CloudWatch alarms)
    are skipped with a warning, which is silenced here. moto's CloudFormation has no Cognito,
    so the template's Cognito resources are created through the Cognito API first, from the
    same properties, and the stack gets their ids where it refers to them.
    """
    name = stack_name(stage)
    existing = {
        s["StackName"]
        for s in cloudformation.describe_stacks()["Stacks"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    }
    if name not in existing:
        # With the generated dashboard, alarms, log groups and operations topic, as deployed;
        # Fn::If chosen for the stage first (resources created through APIs below have them).
        template = monitoring.merged(json.loads(RESOURCES_TEMPLATE.read_text()))
        template = _choose_branches(template, template, stage)
        _create_cognito_resources(template, stage, cloudformation)
        subscriptions = _take(template, "AWS::SNS::Subscription")
        # moto's CloudFormation skips alarms (slowly: ~20 ms each); nothing local reads them.
        _take(template, "AWS::CloudWatch::Alarm")
        queue_policies = _take(
            template, "AWS::SQS::QueuePolicy"
        )  # moto's CloudFormation skips them
        # moto's CloudFormation reads only DefinitionString, into its non-executing backend.
        for key in _state_machine_outputs(template, stage):
            del template["Outputs"][key]  # the stack does not hold them (below)
        state_machines = _take(template, "AWS::StepFunctions::StateMachine")
        catalog, _ = provision_catalog.take(template, stage)  # moto creates none of them
        moto_log = logging.getLogger("moto")
        level = moto_log.level
        moto_log.setLevel(logging.ERROR)  # "No Moto CloudFormation support for ...Alarm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cloudformation.create_stack(
                StackName=name,
                TemplateBody=json.dumps(template),
                Parameters=[{"ParameterKey": "Stage", "ParameterValue": stage}],
            )
            _subscribe(subscriptions, name, cloudformation)  # describing the stack warns too
            _configure_bucket_notifications(template, name, cloudformation)
            _apply_queue_policies(queue_policies, name, stage, cloudformation)
            _create_state_machines(state_machines, name, stage, cloudformation)
            provision_catalog.create(
                catalog, _stack_resources(name, cloudformation)[1], stage,
                template.get("Mappings", {}), _client_like(cloudformation, "glue"),
                _client_like(cloudformation, "athena"),
            )  # fmt: skip
            provision_catalog.apply_lifecycles(
                template, _stack_resources(name, cloudformation)[1],
                _client_like(cloudformation, "s3"),
            )  # fmt: skip
        moto_log.setLevel(level)
        _verify_email_sender(stage, cloudformation)
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(
            f"stack {name} is {stack['StackStatus']}: {stack.get('StackStatusReason')}"
        )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    listed = _client_like(cloudformation, "stepfunctions").list_state_machines()
    arns = {machine["name"]: machine["stateMachineArn"] for machine in listed["stateMachines"]}
    template = json.loads(RESOURCES_TEMPLATE.read_text())
    for key, machine_name in _state_machine_outputs(template, stage).items():
        outputs[key] = arns[machine_name]
    outputs.update(provision_catalog.take(template, stage)[1])
    return outputs


def stage_environment(stage: str) -> dict[str, str]:
    """Every variable `.chalice/config.json` gives some function of the stage: one process
    runs them all here."""
    from infra.wiring import stage_environment as every_functions_environment

    return every_functions_environment(stage)


# --- What moto's CloudFormation does not create: subscriptions, bucket notifications, SES
# senders, Cognito --------------------------------------------------------------------------


def _client_like(cloudformation: Any, service: str) -> Any:
    """A client for `service` at the same emulator (or in-process moto) as `cloudformation`."""
    import boto3

    endpoint = cloudformation.meta.endpoint_url
    # An emulator serves every service at one URL; AWS (and moto in process) at per-service URLs.
    custom = endpoint if "cloudformation." not in endpoint else None
    return boto3.client(service, endpoint_url=custom, region_name=cloudformation.meta.region_name)


def _stack_resources(
    stack: str, cloudformation: Any
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The stack's resources, and their physical ids by logical id."""
    resources = cloudformation.describe_stack_resources(StackName=stack)["StackResources"]
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in resources
        if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
    }
    return resources, physical


def _take(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Remove and return the template's resources of type `kind`."""
    resources = template["Resources"]
    return {k: resources.pop(k) for k in [k for k, r in resources.items() if r["Type"] == kind]}


def _subscribe(subscriptions: dict[str, dict[str, Any]], stack: str, cloudformation: Any) -> None:
    """Create the template's SNS subscriptions (to queues of the stack) with the SNS API."""
    sns, sqs = _client_like(cloudformation, "sns"), _client_like(cloudformation, "sqs")
    _, physical = _stack_resources(stack, cloudformation)

    def resolve(value: Any) -> str:
        if isinstance(value, dict) and "Ref" in value:
            return physical[value["Ref"]]
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn", f"only queue ARNs are resolved here, not {attribute}"
            return sqs.get_queue_attributes(
                QueueUrl=physical[logical_id], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        return str(value)

    for resource in subscriptions.values():
        properties = resource["Properties"]
        attributes = {
            key: json.dumps(properties[key])
            if isinstance(properties[key], dict)
            else str(properties[key]).lower()
            for key in ("RawMessageDelivery", "FilterPolicy", "RedrivePolicy")
            if key in properties
        }
        sns.subscribe(
            TopicArn=resolve(properties["TopicArn"]),
            Protocol=properties["Protocol"],
            Endpoint=resolve(properties["Endpoint"]),
            Attributes=attributes,
        )


def _configure_bucket_notifications(
    template: dict[str, Any], stack: str, cloudformation: Any
) -> None:
    """Apply the buckets' NotificationConfiguration (S3 -> SQS) with the S3 API: moto's
    CloudFormation creates the bucket without it."""
    s3, sqs = _client_like(cloudformation, "s3"), _client_like(cloudformation, "sqs")
    _, physical = _stack_resources(stack, cloudformation)
    for logical_id, resource in template["Resources"].items():
        settings = resource.get("Properties", {}).get("NotificationConfiguration")
        if resource["Type"] != "AWS::S3::Bucket" or not settings:
            continue
        queues = []
        for target in settings.get("QueueConfigurations", []):
            queue_id, attribute = target["Queue"]["Fn::GetAtt"]
            assert attribute == "Arn", f"only queue ARNs are resolved here, not {attribute}"
            arn = sqs.get_queue_attributes(
                QueueUrl=physical[queue_id], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            rules = target.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            queues.append(
                {
                    "QueueArn": arn,
                    "Events": [target["Event"]],
                    **({"Filter": {"Key": {"FilterRules": rules}}} if rules else {}),
                }
            )
        s3.put_bucket_notification_configuration(
            Bucket=physical[logical_id],
            NotificationConfiguration={"QueueConfigurations": queues},
        )


def _apply_queue_policies(
    policies: dict[str, dict[str, Any]], stack: str, stage: str, cloudformation: Any
) -> None:
    """Give the queues the template's policies with the SQS API, so the emulator holds what
    AWS would (moto does not enforce them, but `get_queue_attributes` shows them)."""
    sqs = _client_like(cloudformation, "sqs")
    resources, physical = _stack_resources(stack, cloudformation)
    queue_arns = {
        (r["LogicalResourceId"], "Arn"): sqs.get_queue_attributes(
            QueueUrl=r["PhysicalResourceId"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        for r in resources
        if r.get("ResourceType") == "AWS::SQS::Queue" and r.get("LogicalResourceId") in physical
    }
    account = next(iter(queue_arns.values()), "arn:aws:sqs:r:000000000000:q").split(":")[4]
    pseudo = {
        "Stage": stage,
        "AWS::Partition": "aws",
        "AWS::Region": cloudformation.meta.region_name,
        "AWS::AccountId": account,
    }
    for logical_id, resource in policies.items():
        properties = _replace_references(resource["Properties"], {**physical, **pseudo}, queue_arns)
        if "Ref" in json.dumps(properties) or "Fn::" in json.dumps(properties):
            raise RuntimeError(f"{logical_id}: a reference the emulator cannot resolve")
        for queue_url in properties["Queues"]:
            sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"Policy": json.dumps(properties["PolicyDocument"])}
            )


def _verify_email_sender(stage: str, cloudformation: Any) -> None:
    """In AWS the senders' domain is verified once per account (README); the emulator's SES
    refuses unverified senders just the same, so verify the stage's senders there."""
    ses = _client_like(cloudformation, "ses")
    for name, sender in stage_environment(stage).items():
        if name.endswith("_EMAIL_SENDER"):
            ses.verify_email_identity(EmailAddress=sender)


def _create_state_machines(
    machines: dict[str, dict[str, Any]], stack: str, stage: str, cloudformation: Any
) -> None:
    """Create the template's state machines with the Step Functions API, their
    `DefinitionSubstitutions` applied as CloudFormation would."""
    if not machines:
        return
    iam = _client_like(cloudformation, "iam")
    sfn = _client_like(cloudformation, "stepfunctions")
    resources, physical = _stack_resources(stack, cloudformation)
    region = cloudformation.meta.region_name
    account = _client_like(cloudformation, "sts").get_caller_identity()["Account"]
    attributes: dict[tuple[str, str], str] = {}
    for r in resources:
        logical_id, kind = r.get("LogicalResourceId"), r.get("ResourceType")
        if kind == "AWS::IAM::Role":
            role = iam.get_role(RoleName=r["PhysicalResourceId"])["Role"]
            attributes[(logical_id, "Arn")] = role["Arn"]
        elif kind == "AWS::Logs::LogGroup":
            group = r["PhysicalResourceId"]
            attributes[(logical_id, "Arn")] = f"arn:aws:logs:{region}:{account}:log-group:{group}:*"
    pseudo = {"Stage": stage, "AWS::Partition": "aws", "AWS::Region": region,
              "AWS::AccountId": account}  # fmt: skip
    for logical_id, resource in machines.items():
        properties = _replace_references(resource["Properties"], {**physical, **pseudo}, attributes)
        definition = json.dumps(properties["Definition"])
        for placeholder, value in properties.get("DefinitionSubstitutions", {}).items():
            definition = definition.replace("${" + placeholder + "}", str(value))
        if "${" in definition or "Fn::" in json.dumps(properties):
            raise RuntimeError(f"{logical_id}: a reference the emulator cannot resolve")
        sfn.create_state_machine(
            name=properties["StateMachineName"],
            definition=definition,
            roleArn=properties["RoleArn"],
            type=properties.get("StateMachineType", "STANDARD"),
            loggingConfiguration=_api_names(properties.get("LoggingConfiguration", {})),
            tracingConfiguration=_api_names(properties.get("TracingConfiguration", {})),
            tags=[{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags", [])],
        )


def _choose_branches(value: Any, template: dict[str, Any], stage: str) -> Any:
    """`Fn::If` resolved for the stage, as CloudFormation would: the state machines and
    Cognito resources are created through their APIs, not by moto's CloudFormation."""
    from infra.deploy_api import resolve

    if isinstance(value, list):
        return [_choose_branches(v, template, stage) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Fn::If"}:
        condition, if_true, if_false = value["Fn::If"]
        chosen = if_true if resolve({"Condition": condition}, stage, template) else if_false
        return _choose_branches(chosen, template, stage)
    return {k: _choose_branches(v, template, stage) for k, v in value.items()}


def _api_names(value: Any) -> Any:
    """CloudFormation's property names as Step Functions' API spells them (`Level` ->
    `level`), at every depth."""
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: _api_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_api_names(v) for v in value]
    return value


def _state_machine_outputs(template: dict[str, Any], stage: str) -> dict[str, str]:
    """Output key -> the name of the state machine whose ARN it gives (`Ref`)."""
    names = {
        logical_id: resource["Properties"]["StateMachineName"]["Fn::Sub"].replace("${Stage}", stage)
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    }
    return {
        key: names[output["Value"]["Ref"]]
        for key, output in template.get("Outputs", {}).items()
        if isinstance(output["Value"], dict) and output["Value"].get("Ref") in names
    }


def create_functions(stage: str, names: list[str], lambda_client: Any, iam: Any) -> None:
    """Lambda functions in the emulator for the app's functions (as `chalice deploy` names
    them), so that invoking one (the Invoke API, a state machine's task) reaches the local
    runtime (`local/fidelity.py`). Their code is a placeholder: the runtime runs the app's."""
    import io
    import zipfile

    from infra.wiring import function_name

    role_name = f"serverless-app-{stage}-local-functions"
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    try:
        role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=role_name)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "# the local runtime runs the app itself\n")
    existing = {f["FunctionName"] for f in lambda_client.list_functions()["Functions"]}
    for name in names:
        deployed = function_name(stage, name)
        if deployed in existing:
            continue
        lambda_client.create_function(
            FunctionName=deployed,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler=f"app.{name}",
            Code={"ZipFile": code.getvalue()},
            Tags={"app": "serverless-app", "stage": stage},
        )


#: CloudFormation property names that differ from the Cognito API's parameter names.
_COGNITO_RENAMES = {"UserPoolName": "PoolName"}


def _create_cognito_resources(template: dict[str, Any], stage: str, cloudformation: Any) -> None:
    """Create the template's Cognito resources with the Cognito API, remove them from the
    template, and put their ids wherever the rest of the template refers to them."""
    region = cloudformation.meta.region_name
    cognito = _client_like(cloudformation, "cognito-idp")
    account = _client_like(cloudformation, "sts").get_caller_identity()["Account"]
    pseudo = {"Stage": stage, "AWS::AccountId": account, "AWS::Region": region}
    resources = template["Resources"]
    physical: dict[str, str] = {}
    attributes: dict[tuple[str, str], str] = {}
    # In dependency order: a client's OAuth scopes are a resource server's.
    for kind in ("AWS::Cognito::UserPool", "AWS::Cognito::UserPoolResourceServer",
                 "AWS::Cognito::UserPoolDomain", "AWS::Cognito::UserPoolClient",
                 "AWS::Cognito::UserPoolGroup"):  # fmt: skip
        for logical_id in [k for k, r in resources.items() if r["Type"] == kind]:
            properties = _replace_references(
                # Fn::If: the app client's password sign-in is dev's only (IsDev).
                _choose_branches(resources.pop(logical_id).get("Properties", {}), template, stage),
                {**physical, **pseudo},
                {},
            )
            params = {_COGNITO_RENAMES.get(k, k): v for k, v in properties.items()}
            if kind == "AWS::Cognito::UserPool":
                pool = cognito.create_user_pool(**params)["UserPool"]
                physical[logical_id] = pool["Id"]
                attributes[(logical_id, "Arn")] = pool["Arn"]
                attributes[(logical_id, "ProviderURL")] = (
                    f"cognito-idp.{region}.amazonaws.com/{pool['Id']}"
                )
            elif kind == "AWS::Cognito::UserPoolResourceServer":
                cognito.create_resource_server(**params)
                physical[logical_id] = params["Identifier"]
            elif kind == "AWS::Cognito::UserPoolDomain":
                cognito.create_user_pool_domain(**params)
                physical[logical_id] = params["Domain"]
            elif kind == "AWS::Cognito::UserPoolClient":
                client = cognito.create_user_pool_client(**params)["UserPoolClient"]
                physical[logical_id] = client["ClientId"]
            else:
                cognito.create_group(**params)
                physical[logical_id] = params["GroupName"]
    for section in ("Resources", "Outputs"):
        template[section] = _replace_references(template.get(section, {}), physical, attributes)


def _replace_references(
    value: Any, physical: dict[str, str], attributes: dict[tuple[str, str], str]
) -> Any:
    """Replace Ref, Fn::GetAtt and ${Name} in Fn::Sub strings that name `physical` ones; an
    Fn::Sub left with nothing to substitute becomes its plain string."""
    if isinstance(value, list):
        return [_replace_references(v, physical, attributes) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"} and value["Ref"] in physical:
        return physical[value["Ref"]]
    if set(value) == {"Fn::GetAtt"} and tuple(value["Fn::GetAtt"]) in attributes:
        return attributes[tuple(value["Fn::GetAtt"])]
    if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"]
        for name, ident in physical.items():
            text = text.replace("${" + name + "}", ident)
        return text if "${" not in text else {"Fn::Sub": text}
    return {k: _replace_references(v, physical, attributes) for k, v in value.items()}
