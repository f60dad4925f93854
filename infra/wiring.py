"""Each function's environment and IAM policy, derived from the resources template and the code.

A resource is declared once, in infra/resources.json; each stage's settings (CORS origins,
the welcome email's sender, batch sizes, log level) are its `StageSettings` mapping. The code
says what it does with which resource where it does it (`@needs` in chalicelib, see
`chalicelib/core/resources.py`), and app.py says which function calls what. From those three
this module writes, for every stage:

- `.chalice/config.json`: the stage's `environment_variables` (what every function reads)
  and each function's own (only the names and settings it uses), and its `iam_policy_file`;
- `.chalice/policy-<stage>[-<function>].json`: the function's grants on its own stage's
  resources, its event source's reads, its failure destination, its logs and X-Ray.

    python -m infra.wiring          # rewrite the files
    python -m infra.wiring --check  # exit 1 if a file is out of date (a test runs it)

Generated rather than derived at run time because Chalice reads environments and policies
from files when it packages or deploys, and because a reviewer should see in a diff what a
change grants. Adding a queue and its consumer touches the template, app.py and the domain
code; this command writes the rest.
"""

from __future__ import annotations

import argparse
import ast
import dis
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from infra.paths import PROJECT_DIR

CHALICE_DIR = PROJECT_DIR / ".chalice"
CONFIG_FILE = CHALICE_DIR / "config.json"
TEMPLATE_FILE = PROJECT_DIR / "infra" / "resources.json"
FUNCTIONS_FILE = PROJECT_DIR / "infra" / "functions.json"
APP = "serverless-app"
API_HANDLER = "api_handler"
#: Read by every function when its logging, metrics and tracing start (`core.observability`).
COMMON_SETTINGS = (
    "PowertoolsServiceName",
    "PowertoolsMetricsNamespace",
    "PowertoolsLogLevel",
    "TracingSubsegments",
)
NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SSM::Parameter": "Name",
    "AWS::Kinesis::Stream": "Name",
    "AWS::S3::Bucket": "BucketName",
    "AWS::Cognito::UserPool": "UserPoolName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Athena::WorkGroup": "Name",
    "AWS::Glue::Database": "DatabaseInput.Name",
}
#: A resource's ARN from its name. `*` for region and account: the policies never name either.
ARN_FORMAT = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:*:*:table/{name}",
    "AWS::SNS::Topic": "arn:aws:sns:*:*:{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:*:*:{name}",
    "AWS::SSM::Parameter": "arn:aws:ssm:*:*:parameter{name}",
    "AWS::Kinesis::Stream": "arn:aws:kinesis:*:*:stream/{name}",
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::StepFunctions::StateMachine": "arn:aws:states:*:*:stateMachine:{name}",
    "AWS::Athena::WorkGroup": "arn:aws:athena:*:*:workgroup/{name}",
    "AWS::Glue::Database": "arn:aws:glue:*:*:database/{name}",
}
#: Parts of a resource whose ARNs do not extend the resource's own: (type, `within`) -> ARN.
PART_ARN_FORMAT = {
    ("AWS::StepFunctions::StateMachine", "/executions"): "arn:aws:states:*:*:execution:{name}:*",
    ("AWS::Glue::Database", "/tables"): "arn:aws:glue:*:*:table/{name}/*",
}
#: Resources whose ARN holds an id made at deploy time: granted by the app's and stage's tags.
TAGGED_ARN = {"AWS::Cognito::UserPool": "arn:aws:cognito-idp:*:*:userpool/*"}
#: What an event source mapping does with the function's role, by Chalice event source kind.
SQS_CONSUMER = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                "sqs:GetQueueUrl", "sqs:ReceiveMessage")  # fmt: skip
KINESIS_READER = ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                  "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards",
                  "kinesis:ListStreams", "kinesis:SubscribeToShard")  # fmt: skip
DYNAMODB_STREAM_READER = ("dynamodb:DescribeStream", "dynamodb:GetRecords",
                          "dynamodb:GetShardIterator", "dynamodb:ListStreams")  # fmt: skip


# --- the template ------------------------------------------------------------------------


def template() -> dict[str, Any]:
    return json.loads(TEMPLATE_FILE.read_text())


def stages() -> list[str]:
    return list(template()["Parameters"]["Stage"]["AllowedValues"])


def resource_names(stage: str) -> dict[str, str]:
    """Logical id -> the stage's physical name, for every named resource."""
    names = {}
    for logical_id, resource in template()["Resources"].items():
        prop = NAME_PROPERTY.get(resource["Type"])
        if prop:
            value = resource["Properties"]
            for part in prop.split("."):  # a nested property: "DatabaseInput.Name"
                value = value[part]
            if isinstance(value, dict):
                value = value["Fn::Sub"].replace("${Stage}", stage)
            names[logical_id] = value
    return names


def stage_settings(stage: str) -> dict[str, str]:
    return dict(template()["Mappings"]["StageSettings"][stage])


def template_environment(stage: str) -> dict[str, str]:
    """Every variable the code could read in `stage`: each named resource's and setting's."""
    from chalicelib.core.resources import Resource, env_name

    env = {Resource(lid).env_name: name for lid, name in resource_names(stage).items()}
    env |= {env_name(key): value for key, value in stage_settings(stage).items()}
    return {"APP_STAGE": stage, **env}


# --- the app: which function calls what ------------------------------------------------


@dataclass
class Function:
    """One Lambda function of the app: what its code needs and what invokes it."""

    name: str
    needs: list[Any] = field(default_factory=list)
    #: What its own decorator in app.py reads (`source_name`, `source_setting`).
    source_env: list[str] = field(default_factory=list)
    #: (IAM actions, logical id, ARN suffix) its event source mapping uses.
    source_grants: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)


def load_app() -> ModuleType:
    """app.py, imported with the dev stage's whole environment (which names the event sources
    of every stage alike: they are mapped back to logical ids)."""
    os.environ.update(template_environment("dev"))
    os.environ.pop("USERS_TABLE_STREAM_ARN", None)
    sys.path.insert(0, str(PROJECT_DIR))
    return importlib.import_module("app")


def referenced(code: Any, namespace: dict[str, Any]) -> Iterator[Any]:
    """The objects a function's code names: globals, attributes of modules, and what it
    imports inside its body (`from chalicelib.search import search_service`)."""
    module: Any = None
    for instruction in dis.get_instructions(code):
        name = instruction.argval
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            value = namespace.get(name)
            module = value if isinstance(value, ModuleType) else None
            if module is None and value is not None:
                yield value
        elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and module is not None:
            yield getattr(module, name, None)
            module = None
        elif instruction.opname == "IMPORT_NAME":
            module = importlib.import_module(name)
        elif instruction.opname == "IMPORT_FROM" and module is not None:
            yield getattr(module, name, None)
    for const in code.co_consts:
        if hasattr(const, "co_code"):  # nested functions and lambdas
            yield from referenced(const, namespace)


def needs_of(function: Any, namespace: dict[str, Any]) -> list[Any]:
    code = function.__code__ if isinstance(function, FunctionType) else function
    found = []
    for value in referenced(code, namespace):
        found.extend(getattr(value, "__needs__", ()))
    return found


def app_functions(app_module: ModuleType, stage: str = "dev") -> dict[str, Function]:
    """Every function Chalice deploys for the app, by Chalice name."""
    app = app_module.app
    namespace = vars(app_module)
    by_name = {name: lid for lid, name in resource_names(stage).items()}
    # The API's middleware is registered by module-level code (`http.install(app)`).
    api = Function(API_HANDLER, needs_of(_module_code(app_module), namespace))
    for methods in app.routes.values():
        for route in methods.values():
            # The view as written in app.py (`core.http` wraps each one; `functools.wraps`).
            view = inspect.unwrap(route.view_function)
            api.needs.extend(needs_of(view, namespace))
    found = {API_HANDLER: api}
    for authorizer in app.builtin_auth_handlers:
        func = namespace[authorizer.name].func
        found[authorizer.name] = Function(authorizer.name, needs_of(func, namespace))
    for source in app.event_sources:
        func = namespace[source.name].func
        function = Function(source.name, needs_of(func, namespace))
        kind = type(source).__name__
        if kind == "SQSEventConfig":
            function.source_grants.append((SQS_CONSUMER, by_name[source.queue], ""))
        elif kind == "KinesisEventConfig":
            function.source_grants.append((KINESIS_READER, by_name[source.stream], ""))
        elif kind == "DynamoDBEventConfig":
            [table] = re.findall(r":table/([^/]+)/stream", source.stream_arn)
            function.source_grants.append(
                (DYNAMODB_STREAM_READER, by_name.get(table, table), "/stream/*")
            )
        found[source.name] = function
    for pure in app.pure_lambda_functions:  # @app.lambda_function: invoked by name
        found[pure.name] = Function(pure.name, needs_of(pure.func, namespace))
    decorator_env = _decorator_environment(app_module)
    for name, function in found.items():
        function.source_grants.extend(_failure_destinations(name))
        function.source_env.extend(decorator_env.get(name, ()))
    return found


def _decorator_environment(app_module: ModuleType) -> dict[str, list[str]]:
    """Function -> the variables its decorator's `source_name("...")` and
    `source_setting("...")` read: a function keeps its own source's name and settings."""
    from chalicelib.core.resources import Resource, env_name

    readers = {"source_name": lambda a: Resource(a).env_name, "source_setting": env_name}
    tree = ast.parse(Path(app_module.__file__ or "").read_text())
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for call in (n for d in node.decorator_list for n in ast.walk(d)):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in readers
                and isinstance(call.args[0], ast.Constant)
            ):
                found.setdefault(node.name, []).append(readers[call.func.id](call.args[0].value))
    return found


def _module_code(app_module: ModuleType) -> Any:
    """The calls app.py makes at module level (`http.install(app)`), compiled alone."""
    tree = ast.parse(Path(app_module.__file__ or "").read_text())
    calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    return compile(ast.Module(body=calls, type_ignores=[]), "app.py", "exec")


def _failure_destinations(function: str) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """A function's on-failure queues (infra/functions.json): Lambda sends with its role."""
    logical_id = "".join(part.title() for part in function.split("_"))
    resource = json.loads(FUNCTIONS_FILE.read_text())["Resources"].get(logical_id, {})
    properties = resource.get("Properties", {})
    configs = [e.get("Properties", {}) for e in properties.get("Events", {}).values()]
    configs.append(properties.get("EventInvokeConfig", {}))
    for config in configs:
        destination = config.get("DestinationConfig", {}).get("OnFailure", {})
        if destination.get("Type") == "SQS":
            queue = destination["Destination"]["Fn::GetAtt"][0]
            yield ("sqs:SendMessage",), queue, ""


# --- what is written ---------------------------------------------------------------------


def policy_file(stage: str, function: str) -> str:
    return f"policy-{stage}.json" if function == API_HANDLER else f"policy-{stage}-{function}.json"


def function_name(stage: str, function: str) -> str:
    """The name `chalice deploy` gives a function (the API's handler has the app's name)."""
    return f"{APP}-{stage}" if function == API_HANDLER else f"{APP}-{stage}-{function}"


def _sid(*words: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", " ".join(words)))


def policy(stage: str, function: Function) -> dict[str, Any]:
    """The function's policy document in `stage`: one statement per resource (or ARN pattern
    and condition), with every action granted on it."""
    resources = template()["Resources"]
    names = resource_names(stage)
    settings = stage_settings(stage)
    statements: dict[tuple[str, str], dict[str, Any]] = {}

    def grant(sid: str, actions: Iterable[str], arn: str, condition: dict | None = None) -> None:
        key = (arn, json.dumps(condition, sort_keys=True))
        statement = statements.setdefault(
            key, {"Sid": sid, "Effect": "Allow", "Action": [], "Resource": [arn]}
        )
        statement["Action"] = sorted(set(statement["Action"]) | set(actions))
        if condition:
            statement["Condition"] = condition

    def arn_of(logical_id: str, within: str) -> str:
        kind = resources[logical_id]["Type"]
        if (kind, within) in PART_ARN_FORMAT:
            return PART_ARN_FORMAT[(kind, within)].format(name=names[logical_id])
        return ARN_FORMAT[kind].format(name=names[logical_id]) + within

    for need in function.needs:
        if not need.actions:
            continue
        if need.scope == "name":
            grant(
                _sid(need.resource, need.within), need.actions, arn_of(need.resource, need.within)
            )
        elif need.scope == "tags":
            tags = {"aws:ResourceTag/app": APP, "aws:ResourceTag/stage": stage}
            arn = TAGGED_ARN[resources[need.resource]["Type"]]
            grant(_sid(need.resource, "ByTags"), need.actions, arn, {"StringEquals": tags})
        elif need.scope == "any":
            grant("AnyResource", need.actions, "*")
        else:
            equals = {key: settings[s] for key, s in need.condition}
            condition = {"StringEquals": equals} if equals else None
            service = need.within.split(":")[2]
            grant(_sid(service, need.within.split(":")[-1]), need.actions, need.within, condition)
    for actions, logical_id, within in function.source_grants:
        grant(_sid(logical_id, within), actions, arn_of(logical_id, within))
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(stage, function.name)}"
    ordered = sorted(statements.values(), key=lambda s: s["Sid"])
    for statement in ordered:
        if [s["Sid"] for s in ordered].count(statement["Sid"]) > 1:
            raise ValueError(f"{function.name}: two statements named {statement['Sid']}")
    ordered.append(
        {
            "Sid": "FunctionLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [group, group + ":*"],
        }
    )
    ordered.append(
        {
            "Sid": "XRayTracing",
            "Effect": "Allow",
            "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
            "Resource": ["*"],
        }
    )
    return {"Version": "2012-10-17", "Statement": ordered}


def environment(stage: str, function: Function) -> dict[str, str]:
    """The variables `function` reads beyond the stage's common ones, with their values."""
    available = template_environment(stage)
    wanted = sorted(
        {name for need in function.needs for name in need.env} | set(function.source_env)
    )
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValueError(f"{function.name} reads {missing}: not in infra/resources.json")
    return {name: available[name] for name in wanted}


def common_environment(stage: str) -> dict[str, str]:
    from chalicelib.core.resources import env_name

    settings = stage_settings(stage)
    return {"APP_STAGE": stage, **{env_name(k): settings[k] for k in COMMON_SETTINGS}}


def rendered(app_module: ModuleType | None = None) -> dict[Path, str]:
    """Every generated file's path and text: config.json and the policy files."""
    functions = app_functions(app_module or load_app())
    config = json.loads(CONFIG_FILE.read_text())
    files: dict[Path, str] = {}
    for stage in stages():
        stage_config = config["stages"][stage]
        stage_config["environment_variables"] = common_environment(stage)
        stage_config["iam_policy_file"] = policy_file(stage, API_HANDLER)
        configured = stage_config.setdefault("lambda_functions", {})
        unknown = sorted(set(configured) - set(functions))
        if unknown:
            raise ValueError(f".chalice/config.json configures {unknown}: not in app.py")
        for name, function in functions.items():
            entry = configured.setdefault(name, {})
            entry["environment_variables"] = environment(stage, function)
            if name != API_HANDLER:
                entry["iam_policy_file"] = policy_file(stage, name)
            text = json.dumps(policy(stage, function), indent=2) + "\n"
            files[CHALICE_DIR / policy_file(stage, name)] = text
        stage_config["lambda_functions"] = {n: configured[n] for n in functions}
    files[CONFIG_FILE] = json.dumps(config, indent=2) + "\n"
    return files


def stale_policy_files(files: dict[Path, str]) -> list[Path]:
    """Policy files no function has any more."""
    return sorted(p for p in CHALICE_DIR.glob("policy-*.json") if p not in files)


def stage_environment(stage: str) -> dict[str, str]:
    """Every variable some function of `stage` is given (.chalice/config.json): what one
    process running all the functions (`make run`, the tests, `chalice local`) needs."""
    stage_config = json.loads(CONFIG_FILE.read_text())["stages"][stage]
    env = dict(stage_config.get("environment_variables", {}))
    for function in stage_config.get("lambda_functions", {}).values():
        env.update(function.get("environment_variables", {}))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    files = rendered()
    changed = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    gone = stale_policy_files(files)
    if args.check:
        for path in changed + gone:
            print(f"out of date: {path.relative_to(PROJECT_DIR)} (run python -m infra.wiring)")
        return 1 if changed or gone else 0
    for path in changed:
        path.write_text(files[path])
        print(f"wrote {path.relative_to(PROJECT_DIR)}")
    for path in gone:
        path.unlink()
        print(f"removed {path.relative_to(PROJECT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
