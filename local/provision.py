"""Create the app's resources in an emulator from the same CloudFormation that deploys to AWS."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
RESOURCES_TEMPLATE = PROJECT_DIR / "infra" / "resources.json"

#: Credentials and region for the emulator and for moto in tests: never real ones.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def stack_name(stage: str) -> str:
    return f"serverless-app-{stage}-resources"


def provision(stage: str, cloudformation: Any) -> dict[str, str]:
    """Create (or find) the resources stack for `stage`; return its outputs by name.

    moto creates stacks synchronously; resource types it cannot emulate (CloudWatch alarms)
    are skipped with a warning, which is silenced here.
    """
    name = stack_name(stage)
    existing = {
        s["StackName"]
        for s in cloudformation.describe_stacks()["Stacks"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    }
    if name not in existing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cloudformation.create_stack(
                StackName=name,
                TemplateBody=RESOURCES_TEMPLATE.read_text(),
                Parameters=[{"ParameterKey": "Stage", "ParameterValue": stage}],
            )
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(
            f"stack {name} is {stack['StackStatus']}: {stack.get('StackStatusReason')}"
        )
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def stage_environment(stage: str) -> dict[str, str]:
    """The environment variables `.chalice/config.json` gives the stage's functions."""
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    return dict(config["stages"][stage]["environment_variables"])
