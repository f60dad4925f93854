"""The AWS resources the code uses, named by their logical ids in infra/resources.json.

The resources template is the one place a table, queue, topic or bucket is declared. The code
refers to one by its logical id and says what it does with it:

    USERS_TABLE = Resource("UsersTable")

    @needs(USERS_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"))
    def profile_set_up() -> ProfileSetUp:
        return ProfileSetUp(DynamoUserRepository(USERS_TABLE.name), clock=clock.timestamp)

`USERS_TABLE.name` is the stage's physical name, read from the function's environment
(`USERS_TABLE_NAME`: the logical id in capitals, `_NAME` added). `@needs` records, on the
factory or entry point a handler calls, the grants and the names it takes. From those records
and app.py, `python -m infra.wiring` writes each function's environment (only the names it
uses) and its IAM policy (only what it does, on its own stage's resources), and a test fails
when the written files drift from the code.

Nothing here imports boto3 or reads a file: declaring needs costs nothing at cold start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class SettingsError(RuntimeError):
    """A required environment variable is missing: the stage's config is incomplete."""


def env_name(key: str) -> str:
    """`UsersTable` -> `USERS_TABLE`; `TelemetryBatchSize` -> `TELEMETRY_BATCH_SIZE`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).upper()


def required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SettingsError(
            f"environment variable {name} is not set (python -m infra.wiring writes each "
            "function's environment into .chalice/config.json)"
        )
    return value


@dataclass(frozen=True)
class Need:
    """One thing a piece of code needs: IAM actions on a resource, and/or an environment
    variable. `resource` is a logical id of infra/resources.json; `within` is appended to its
    ARN (an index, a key prefix). `scope` says how the policy names the resource:
    "name" (its ARN, from its stage's name), "tags" (any resource of that type carrying the
    app's and the stage's tags: for ids made at deploy time, like a user pool's), "any"
    (actions that have no resource-level permissions) or "arn" (`within` is the whole ARN
    pattern of a resource outside the template)."""

    actions: tuple[str, ...] = ()
    resource: str = ""
    within: str = ""
    scope: str = "name"
    env: tuple[str, ...] = ()
    #: IAM condition keys -> stage setting (a key of the template's StageSettings mapping)
    #: whose value the key must equal, e.g. {"ses:FromAddress": "WelcomeEmailSender"}.
    condition: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resource:
    """A resource of infra/resources.json, by logical id."""

    logical_id: str

    @property
    def env_name(self) -> str:
        return env_name(self.logical_id) + "_NAME"

    @property
    def name(self) -> str:
        """The stage's physical name of the resource (from the function's environment)."""
        return required(self.env_name)

    def allow(self, *actions: str, within: str = "") -> Need:
        """`actions` on this resource (or on `within` it: "/index/by-owner", "/uploads/*");
        the function is given the resource's name."""
        return Need(tuple(actions), self.logical_id, within, "name", (self.env_name,))

    def allow_by_tags(self, *actions: str) -> Need:
        """`actions` on every resource of this type tagged with the app and the stage: for
        resources whose ARN holds an id made at deploy time. The name is not given."""
        return Need(tuple(actions), self.logical_id, scope="tags")


@dataclass(frozen=True)
class StageSetting:
    """A value of the template's `StageSettings` mapping for the function's stage (CORS
    origins, the welcome email's sender, batch sizes), given to the function that uses it."""

    key: str

    @property
    def env_name(self) -> str:
        return env_name(self.key)

    @property
    def value(self) -> str:
        return required(self.env_name)

    def used(self) -> Need:
        return Need(env=(self.env_name,))


def anywhere(*actions: str) -> Need:
    """Actions without resource-level permissions (Rekognition's DetectLabels)."""
    return Need(tuple(actions), scope="any")


def on_arn(arn: str, *actions: str, condition: tuple[tuple[str, str], ...] = ()) -> Need:
    """Actions on resources outside the template, by ARN pattern (`*` for region and account:
    the policy never names either), e.g. SES identities verified by hand."""
    return Need(tuple(actions), within=arn, scope="arn", condition=condition)


def needs(*items: Need) -> Callable[[F], F]:
    """Record what the decorated factory or entry point needs (see the module docstring).
    Several decorators on one function add up."""

    def record(function: F) -> F:
        function.__needs__ = getattr(function, "__needs__", ()) + items  # type: ignore[attr-defined]
        return function

    return record


def _in_lambda() -> bool:
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ


def source_name(logical_id: str) -> str:
    """The name of an event source, for app.py's decorators.

    Chalice reads the decorators' arguments when it loads the app to package, deploy or serve
    it; the whole stage's environment is set then (infra/chalice_commands.py, the local
    stack, the tests). Inside Lambda they are never read again, so a function is not given
    the names of other functions' sources, and an absent one is replaced by a placeholder.
    """
    name = Resource(logical_id).env_name
    if _in_lambda() and not os.environ.get(name):
        return f"{logical_id}-not-used-in-lambda"
    return required(name)


def source_stream_arn(logical_id: str) -> str:
    """A table's stream ARN, for `@app.on_dynamodb_record`. It exists only once the table
    does: `chalice package` replaces the placeholder with the table's StreamArn
    (infra/functions.json), `chalice deploy` takes it from the environment, and `make run`
    sets it after provisioning."""
    name = env_name(logical_id) + "_STREAM_ARN"
    return os.environ.get(name) or f"arn:aws:dynamodb:::table/{logical_id}/stream/set-{name}"


def source_setting(key: str) -> int:
    """A whole-number stage setting for app.py's decorators (batch size, batching window);
    inside Lambda, where the decorators' arguments are not read, 1 if absent."""
    name = env_name(key)
    if _in_lambda() and not os.environ.get(name):
        return 1
    return int(required(name))
