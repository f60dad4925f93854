"""Build and check the one deployable template of a stage: `python -m infra.package --stage dev`.

Writes out/<stage>/sam.json and out/<stage>/deployment.zip, without talking to AWS:

1. Merge document: infra/resources.json with its `Stage` parameter pinned to the stage
   (`Default` = stage, `AllowedValues` = [stage]), so the packaged template cannot be deployed
   with another stage's resource names under this stage's function config; plus
   infra/api-responses.json (the REST API's error responses with CORS, its stage's throttling
   and, in prod, the web ACL's association with that stage) and infra/functions.json
   (settings Chalice cannot express). `make deploy` applies the same (infra/deploy*.py).
2. `chalice package --stage <stage> --merge-template <merge document> out/<stage>`
   (out/<stage> is emptied first).
3. Post-processing of sam.json (`finalize_template`, deterministic and idempotent): every
   AWS::Serverless::Function gets
   - `Runtime: python3.12`, which `infra/chalice_cli.py` already makes Chalice build for,
     whatever Python runs it (Chalice would otherwise take that Python's version). The zip
     is checked (`check_deployment_zip`) for extension modules of another CPython and for
     wheels built on this machine instead of manylinux ones: neither would load on Lambda.
   - `FunctionName`: the name `chalice deploy` gives the function (`serverless-app-<stage>`
     for the API handler). Both deploy paths then create the same function, hence the same
     log group `/aws/lambda/<name>`, which is what `.chalice/policy-<stage>.json` allows.
4. Checks: cfn-lint (any error fails; warnings are printed) and the SAM translator
   (aws-sam-translator), run on a copy whose local CodeUri is replaced by an S3 URI, as
   `aws cloudformation package` does before a deploy.
5. A short summary.

Chalice needs a region to render service principals; when none is set in the environment,
us-east-1 is used (the template itself names no region or account).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.chalice_cli import TARGET_RUNTIME
from infra.paths import PROJECT_DIR

RESOURCES_TEMPLATE = PROJECT_DIR / "infra" / "resources.json"
API_RESPONSES = PROJECT_DIR / "infra" / "api-responses.json"
FUNCTION_SETTINGS = PROJECT_DIR / "infra" / "functions.json"
CHALICE_CONFIG = PROJECT_DIR / ".chalice" / "config.json"
OUT_DIR = PROJECT_DIR / "out"

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
DEFAULT_REGION = "us-east-1"
#: What `aws cloudformation package` puts in place of a local CodeUri; used for the check only.
PLACEHOLDER_CODE_URI = "s3://placeholder-bucket/deployment.zip"
#: Logical id Chalice gives the REST API's handler, whatever its resource name.
API_HANDLER_LOGICAL_ID = "APIHandler"
_EXTENSION_MODULE = re.compile(r"\.cpython-(\d+)[^/]*\.(so|pyd)$")


class PackagingError(RuntimeError):
    """Packaging or one of its checks failed; the message says which and why."""


@dataclass
class PackageResult:
    stage: str
    template_path: Path
    zip_path: Path
    template: dict[str, Any]
    lint_warnings: list[str] = field(default_factory=list)
    transformed: dict[str, Any] = field(default_factory=dict)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def chalice_config() -> dict[str, Any]:
    return load_json(CHALICE_CONFIG)


def stages() -> list[str]:
    return list(chalice_config()["stages"])


def merge_document(stage: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """infra/resources.json with the Stage parameter pinned to `stage`, plus the REST API's
    settings (infra/api-responses.json: API Gateway's errors in the app's shape, throttling,
    the prod web ACL's association) and the function settings Chalice cannot express
    (infra/functions.json)."""
    document = copy.deepcopy(resources if resources is not None else load_json(RESOURCES_TEMPLATE))
    for extra in (API_RESPONSES, FUNCTION_SETTINGS):
        for logical_id, resource in load_json(extra).get("Resources", {}).items():
            if logical_id in document["Resources"]:
                raise PackagingError(
                    f"{logical_id} is declared in both resources.json and {extra.name}"
                )
            document["Resources"][logical_id] = resource
    parameter = document["Parameters"]["Stage"]
    allowed = parameter.get("AllowedValues")
    if allowed is not None and stage not in allowed:
        raise PackagingError(f"stage {stage!r} is not an AllowedValue of Stage in resources.json")
    parameter["Default"] = stage
    parameter["AllowedValues"] = [stage]
    return document


def function_names(stage: str) -> dict[str, str]:
    """Logical id -> the function name `chalice deploy` uses, from Chalice's own app graph.

    Computed in a child process: building the graph imports app.py, whose modules configure
    themselves from the environment at import time; the caller's process stays clean."""
    done = subprocess.run(
        [sys.executable, "-m", "infra.package", "--stage", stage, "--function-names"],
        cwd=PROJECT_DIR,
        env=_chalice_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise PackagingError(f"could not list the app's functions:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout)


def _function_names_in_process(stage: str) -> dict[str, str]:
    from chalice.cli.factory import CLIFactory
    from chalice.deploy import models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
    from chalice.utils import to_cfn_resource_name

    # As the chalice CLI does (with infra/chalice_commands.py): the stage's environment is
    # applied while the app is imported.
    from infra.wiring import stage_environment

    for name, value in stage_environment(stage).items():
        os.environ.setdefault(name, value)
    factory = CLIFactory(project_dir=str(PROJECT_DIR), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    application = ApplicationGraphBuilder().build(config, stage)
    names: dict[str, str] = {}
    for resource in DependencyBuilder().build_dependencies(application):
        if isinstance(resource, models.RestAPI):
            names[API_HANDLER_LOGICAL_ID] = resource.lambda_function.function_name
        elif isinstance(resource, models.LambdaFunction):
            names.setdefault(to_cfn_resource_name(resource.resource_name), resource.function_name)
    return names


def finalize_template(
    template: dict[str, Any], stage: str, names: dict[str, str]
) -> dict[str, Any]:
    """The packaged template made safe for `stage` (a new dict; the input is not changed).

    Every Serverless function gets Runtime python3.12 and the FunctionName `chalice deploy`
    would give it; event sources refer to the stack's own topics and queues; the Stage
    parameter is pinned. Applying it twice changes nothing.
    """
    result = copy.deepcopy(template)
    _reference_event_sources(result, stage)
    parameter = result.get("Parameters", {}).get("Stage")
    if parameter is None:
        raise PackagingError("the packaged template has no Stage parameter (merge failed?)")
    parameter["Default"] = stage
    parameter["AllowedValues"] = [stage]
    for logical_id, resource in result["Resources"].items():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        if logical_id not in names:
            raise PackagingError(
                f"no function name known for {logical_id}; Chalice's functions: {sorted(names)}"
            )
        properties = resource["Properties"]
        properties["Runtime"] = TARGET_RUNTIME
        properties["FunctionName"] = names[logical_id]
    return result


#: Event source property -> (resource type, how the event source refers to it).
_EVENT_TARGETS = {
    "Topic": ("AWS::SNS::Topic", "TopicName", lambda logical_id: {"Ref": logical_id}),
    "Queue": ("AWS::SQS::Queue", "QueueName", lambda lid: {"Fn::GetAtt": [lid, "Arn"]}),
    "Stream": ("AWS::Kinesis::Stream", "Name", lambda lid: {"Fn::GetAtt": [lid, "Arn"]}),
}


def _reference_event_sources(template: dict[str, Any], stage: str) -> None:
    """Chalice names a topic or queue by an ARN it builds as a string (`Fn::Sub`), which gives
    CloudFormation no dependency: a subscription or mapping could be created before its topic
    or queue and fail the stack. Where the template itself declares that topic or queue, refer
    to it instead (the merge cannot do this: it would keep both keys)."""
    resources = template.get("Resources", {})
    for resource in resources.values():
        if resource.get("Type") != SERVERLESS_FUNCTION:
            continue
        for source in resource.get("Properties", {}).get("Events", {}).values():
            properties = source.get("Properties", {})
            for key, (kind, name_property, reference) in _EVENT_TARGETS.items():
                arn = properties.get(key)
                if not (isinstance(arn, dict) and set(arn) == {"Fn::Sub"}):
                    continue
                name = str(arn["Fn::Sub"]).rsplit(":", 1)[-1].removeprefix("stream/")
                for logical_id, candidate in resources.items():
                    declared = candidate.get("Properties", {}).get(name_property)
                    if isinstance(declared, dict) and "Fn::Sub" in declared:
                        declared = str(declared["Fn::Sub"]).replace("${Stage}", stage)
                    if candidate.get("Type") == kind and declared == name:
                        properties[key] = reference(logical_id)


def strip_bytecode(zip_path: Path) -> int:
    """Drop `__pycache__/` and `*.pyc` from the zip (Chalice copies chalicelib/ as it lies on
    disk): bytecode of the packaging Python is dead weight on python3.12 and carries source
    mtimes, so the zip would differ per checkout. Returns how many entries were dropped."""
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.infolist()
        kept = [
            e
            for e in entries
            if "__pycache__/" not in e.filename and not e.filename.endswith(".pyc")
        ]
        if len(kept) == len(entries):
            return 0
        data = {e.filename: archive.read(e) for e in kept}
    rewritten = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(rewritten, "w") as archive:
        for entry in kept:
            archive.writestr(entry, data[entry.filename], compress_type=entry.compress_type)
    rewritten.replace(zip_path)
    return len(entries) - len(kept)


def check_deployment_zip(
    zip_path: Path, runtime: str = TARGET_RUNTIME, required: list[str] | None = None
) -> None:
    """Fail if the zip holds compiled extension modules built for another CPython, or a
    wheel built here (Chalice compiles a package from source, silently, when no manylinux
    wheel fits the runtime: it would link this machine's libraries, absent on Lambda)."""
    wanted = runtime.removeprefix("python").replace(".", "")
    with zipfile.ZipFile(zip_path) as archive:
        wrong = [
            name
            for name in archive.namelist()
            if (m := _EXTENSION_MODULE.search(name)) and m.group(1) != wanted
        ]
        local_builds = [
            name.split("/")[0]
            for name in archive.namelist()
            if name.endswith(".dist-info/WHEEL")
            and any(
                tag.endswith("linux_x86_64") and "manylinux" not in tag
                for tag in re.findall(r"^Tag: (\S+)$", archive.read(name).decode(), re.M)
            )
        ]
        installed = {
            _canonical(name.split("/")[0].removesuffix(".dist-info").rsplit("-", 1)[0])
            for name in archive.namelist()
            if ".dist-info/" in name
        }
    wanted_dists = pinned_requirements() if required is None else required
    missing = sorted(set(wanted_dists) - installed)
    if missing:
        raise PackagingError(
            f"{zip_path} lacks {missing} from requirements.txt: Chalice could not install "
            f"them for {runtime} (it says so, then carries on)."
        )
    if local_builds:
        raise PackagingError(
            f"{zip_path} holds packages compiled on this machine, not manylinux wheels: "
            f"{local_builds}. Pin a version that publishes a manylinux wheel for {runtime}."
        )
    if wrong:
        raise PackagingError(
            f"{zip_path} holds extension modules built for another Python than {runtime} "
            f"(Chalice builds for the Python it runs under): {wrong[:5]}. "
            f"Run the packaging under Python {runtime.removeprefix('python')}."
        )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements() -> list[str]:
    """The distributions requirements.txt names (canonical names)."""
    lines = (PROJECT_DIR / "requirements.txt").read_text().splitlines()
    return [
        _canonical(re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0])
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]


def _script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise PackagingError(f"{path} not found; install requirements-dev.txt in this venv")
    return str(path)


def _chalice_env() -> dict[str, str]:
    """The caller's environment without the stages' own variables: Chalice applies the
    stage's while it imports the app, and nothing else may leak in (a test's dev settings
    into a prod package, say)."""
    from infra.wiring import stage_environment

    stage_variables = {name for stage in stages() for name in stage_environment(stage)}
    env = {k: v for k, v in os.environ.items() if k not in stage_variables}
    if not (env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")):
        env["AWS_DEFAULT_REGION"] = DEFAULT_REGION
    return env


def run_chalice_package(stage: str, merge_file: Path, out_dir: Path) -> None:
    # Chalice builds for TARGET_RUNTIME whatever Python runs it (infra/chalice_cli.py).
    command = [
        sys.executable,
        "-m",
        "infra.chalice_cli",
        "--project-dir",
        str(PROJECT_DIR),
        "package",
        "--stage",
        stage,
        "--merge-template",
        str(merge_file),
        str(out_dir),
    ]
    done = subprocess.run(
        command, cwd=PROJECT_DIR, env=_chalice_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise PackagingError(
            f"chalice package failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )


def cfn_lint(template_path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings and informational findings) of cfn-lint, one line each."""
    done = subprocess.run(
        [_script("cfn-lint"), str(template_path), "--format", "json", "--regions", DEFAULT_REGION],
        capture_output=True,
        text=True,
    )
    # Exit bits 2/4/8 report errors/warnings/informational findings; anything else is
    # cfn-lint itself failing, which must not read as "no findings".
    if done.returncode & ~(2 | 4 | 8):
        raise PackagingError(
            f"cfn-lint failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )
    try:
        matches = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise PackagingError(
            f"cfn-lint failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        ) from None
    errors: list[str] = []
    others: list[str] = []
    for match in matches:
        level, rule = match["Level"], match["Rule"]["Id"]
        line_number = match["Location"]["Start"]["LineNumber"]
        line = f"{level} {rule} line {line_number}: {match['Message']}"
        (errors if level == "Error" else others).append(line)
    if done.returncode & 2 and not errors:  # bit 2 = errors; keep the two views consistent
        errors.append(f"cfn-lint exited {done.returncode}: {done.stderr.strip()}")
    return errors, others


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation sees it after the Serverless transform, or an error.

    Local CodeUri/ContentUri values are replaced by an S3 URI first (the translator only
    accepts S3 locations; `aws cloudformation package` does the same replacement)."""
    import boto3
    from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    document = copy.deepcopy(template)
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = PLACEHOLDER_CODE_URI
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    session = boto3.session.Session(region_name=region)
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    try:
        return translator.translate(document, {}, get_managed_policy_map=lambda: {})
    except InvalidDocumentException as exc:
        causes = "\n".join(f"  - {cause.message}" for cause in exc.causes)
        raise PackagingError(f"the SAM translator rejected the template:\n{causes}") from None
    finally:
        metrics.publish()  # to the dummy publisher; avoids an "unpublished metrics" warning


def package(stage: str, out_root: Path = OUT_DIR) -> PackageResult:
    """Package `stage` into out_root/<stage> and check it; PackagingError on any failure."""
    if stage not in stages():
        raise PackagingError(f"unknown stage {stage!r}; config.json has {stages()}")
    out_dir = out_root / stage
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with tempfile.TemporaryDirectory(prefix="merge-") as tmp:
        merge_file = Path(tmp) / "resources.json"
        merge_file.write_text(json.dumps(merge_document(stage), indent=2))
        run_chalice_package(stage, merge_file, out_dir)

    template_path = out_dir / "sam.json"
    zip_path = out_dir / "deployment.zip"
    template = finalize_template(load_json(template_path), stage, function_names(stage))
    template_path.write_text(json.dumps(template, indent=2) + "\n")
    strip_bytecode(zip_path)
    check_deployment_zip(zip_path)

    errors, warnings = cfn_lint(template_path)
    if errors:
        raise PackagingError("cfn-lint found errors in the template:\n" + "\n".join(errors))
    transformed = sam_transform(template)
    return PackageResult(stage, template_path, zip_path, template, warnings, transformed)


def summary(result: PackageResult) -> str:
    resources = result.template["Resources"]
    functions = {k: v for k, v in resources.items() if v.get("Type") == SERVERLESS_FUNCTION}
    lines = [f"stage {result.stage}: {len(resources)} resources, {len(functions)} function(s)"]
    for logical_id, function in functions.items():
        p = function["Properties"]
        lines.append(
            f"  {logical_id}: {p['FunctionName']} {p['Runtime']} {p['MemorySize']} MB "
            f"{p['Timeout']} s tracing={p['Tracing']}"
        )
    others = sorted(f"{k} ({v['Type']})" for k, v in resources.items() if k not in functions)
    lines.append("  resources: " + ", ".join(others))
    lines.append(
        f"  cfn-lint: 0 errors, {len(result.lint_warnings)} warning(s); SAM transform: OK "
        f"({len(result.transformed['Resources'])} CloudFormation resources)"
    )
    for label, path in (("template", result.template_path), ("zip", result.zip_path)):
        shown = path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path
        lines.append(f"  {label}: {shown} ({path.stat().st_size:,} bytes)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json")
    parser.add_argument("--function-names", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.function_names:  # used by function_names(): print {logical id: name} as JSON
        print(json.dumps(_function_names_in_process(args.stage)))
        return 0
    try:
        result = package(args.stage)
    except PackagingError as exc:
        print(f"packaging {args.stage} FAILED: {exc}", file=sys.stderr)
        return 1
    for warning in result.lint_warnings:
        print(f"cfn-lint {warning}")
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
