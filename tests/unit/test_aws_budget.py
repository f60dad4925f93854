"""Every AWS call ends in time for the handler to undo what it did.

For every function of .chalice/config.json (every stage), from the botocore clients the
function really gets (`chalicelib.core.aws.config_args`, for each service its IAM policy lets
it call) and botocore's own backoff constants:

    worst call = attempts x (connect timeout + read timeout) + the longest backoff between them

and a handler whose call fails at its worst, followed by its compensations (each as long),
must end before the function's timeout, less a margin for the handler's own work; a function
behind API Gateway also before the REST integration's 29 s.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from chalicelib.core import aws
from infra.paths import PROJECT_DIR
from infra.wiring import API_HANDLER, policy_file

CONFIG = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
STAGES = list(CONFIG["stages"])
API_GATEWAY_LIMIT_S = 29
#: IAM prefixes whose calls go through a boto3 client, and that client's service name.
CLIENT_OF_PREFIX = {"states": "stepfunctions"}
NOT_CLIENTS = {"logs", "xray", "glue"}  # written by Lambda, the X-Ray daemon, or Athena
#: AWS calls a handler makes after a call of it failed, to undo or finish what it started
#: (read from the code; one call failing at its worst, then these, each as long):
COMPENSATIONS = {
    # An order's cancellation whose StopExecution failed... or succeeded slowly: the refund
    # (find the charge, refund it), its record, the release of the units, the final status
    # (chalicelib/orders/compensation.py). A registration's confirmation undoes 4 calls:
    # the profile, the identity (disable, sign out), the email's reservation.
    API_HANDLER: 5,
    "cognito_jwt": 0,  # reads only
    "analyze_image": 0,  # a failed try is the queue's to retry; nothing to undo
}
DEFAULT_COMPENSATIONS = 1  # e.g. charge_payment's refund of a charge for a cancelled order


def functions(stage: str) -> dict[str, int]:
    """Function -> its timeout (its own, else the stage's, else the app's)."""
    stage_config = CONFIG["stages"][stage]
    default = stage_config.get("lambda_timeout", CONFIG.get("lambda_timeout", 60))
    return {
        name: settings.get("lambda_timeout", default)
        for name, settings in stage_config["lambda_functions"].items()
    }


def services(stage: str, function: str) -> set[str]:
    """The boto3 clients `function` can use: those its IAM policy allows calls of."""
    path = PROJECT_DIR / ".chalice" / policy_file(stage, function)
    found = {"sts"}  # the account id (GetCallerIdentity needs no permission)
    for statement in json.loads(path.read_text())["Statement"]:
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            prefix = action.split(":")[0]
            if prefix not in NOT_CLIENTS:
                found.add(CLIENT_OF_PREFIX.get(prefix, prefix))
    return found


@cache
def effective(service: str, function: str | None) -> tuple[float, float, int]:
    """(connect, read, total attempts) of the client `function` gets for `service`, as
    botocore itself reads its Config (`max_attempts` would count retries, not attempts)."""
    from botocore.config import Config

    config = Config(**aws.config_args(service, function))
    made = _session().client(
        service, config=config, aws_access_key_id="x", aws_secret_access_key="x"
    )
    retries = made.meta.config.retries
    assert retries["mode"] == "standard", (service, function)
    return config.connect_timeout, config.read_timeout, int(retries["total_max_attempts"])


@cache
def _session() -> Any:
    import boto3

    return boto3.session.Session(region_name="us-east-1")


def longest_backoff(retry: int) -> float:
    """The longest sleep before retry `retry` (1, 2, ...) in botocore's standard mode: the
    throttling scale doubled per attempt, capped, plus what `x-amz-retry-after` may add."""
    from botocore.retries.standard import ExponentialBackoff as B

    scale = max(B._DEFAULT_BACKOFF_CONFIG.values())
    exponential = min(scale * B._BASE ** (retry - 1), B._MAX_BACKOFF)
    return float(exponential + B._RETRY_AFTER_MAX_ADDITIONAL)


def worst_call(service: str, function: str | None) -> float:
    connect, read, attempts = effective(service, function)
    return attempts * (connect + read) + sum(longest_backoff(r) for r in range(1, attempts))


def margin(timeout: float) -> float:
    """Left for the handler's own work: a tenth of the timeout, at least a second."""
    return max(1.0, timeout / 10)


def budget_problems(stage: str) -> list[str]:
    problems = []
    for function, timeout in functions(stage).items():
        worst = max(worst_call(s, function) for s in services(stage, function))
        undo = COMPENSATIONS.get(function, DEFAULT_COMPENSATIONS)
        needed = worst * (1 + undo)
        limit = timeout - margin(timeout)
        if function in aws.API_FUNCTIONS:
            limit = min(limit, API_GATEWAY_LIMIT_S - margin(API_GATEWAY_LIMIT_S))
        if needed > limit:
            problems.append(
                f"{function}: a call may take {worst:g} s, then {undo} compensation(s): "
                f"{needed:g} s > {limit:g} s of a {timeout} s timeout"
            )
    return problems


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_can_fail_a_call_and_still_compensate(stage: str) -> None:
    assert budget_problems(stage) == []


def test_the_old_client_config_did_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: connect 2 s, read 5 s and `max_attempts: 3` (4 attempts) everywhere: one
    DynamoDB call could take 50 s in a 10 s function, and the API's undo never ran."""
    old = {"retries": {"mode": "standard", "max_attempts": 3}, "connect_timeout": 2,
           "read_timeout": 5}  # fmt: skip
    monkeypatch.setattr(aws, "CLIENT_CONFIG_ARGS", {**aws.CLIENT_CONFIG_ARGS, **old})
    monkeypatch.setattr(aws, "PROFILE_CONFIG_ARGS", {key: {} for key in aws.PROFILE_CONFIG_ARGS})
    effective.cache_clear()
    try:
        assert effective("dynamodb", API_HANDLER)[2] == 4
        assert worst_call("dynamodb", API_HANDLER) == 4 * 7 + (1 + 5) + (2 + 5) + (4 + 5)
        problems = budget_problems("prod")
        assert any(p.startswith(f"{API_HANDLER}:") for p in problems)
        assert any(p.startswith("welcome_new_user:") for p in problems)
    finally:
        effective.cache_clear()


def test_attempts_are_counted_as_botocore_counts_them() -> None:
    for profile, args in aws.PROFILE_CONFIG_ARGS.items():
        total = {**aws.CLIENT_CONFIG_ARGS, **args}["retries"]["total_max_attempts"]
        function = {
            "api": API_HANDLER,
            "short": "welcome_new_user",
            "long": "sweep_stuck_orders",
            "local": None,
        }[profile]
        assert effective("dynamodb", function)[2] == total, profile


@pytest.mark.parametrize(
    ("deployed", "function", "profile"),
    [
        ("serverless-app-prod", API_HANDLER, "api"),
        ("serverless-app-prod-cognito_jwt", "cognito_jwt", "api"),
        ("serverless-app-prod-welcome_new_user", "welcome_new_user", "short"),
        ("serverless-app-prod-sweep_stuck_orders", "sweep_stuck_orders", "long"),
        (None, None, "local"),
    ],
)
def test_a_lambda_function_gets_its_profile(
    monkeypatch: pytest.MonkeyPatch, deployed: str | None, function: str | None, profile: str
) -> None:
    monkeypatch.setenv("APP_STAGE", "prod")
    if deployed is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", deployed)
    assert aws.current_function() == function
    assert aws.function_profile(function) == profile


def test_a_function_of_unknown_kind_is_not_given_patience() -> None:
    """A new function with 10 s to run, not yet listed anywhere, fails fast by default."""
    assert aws.function_profile("some_new_handler") == "short"
    for stage in STAGES:
        # Both ways: a function given a minute or more is listed, and only those are.
        long_running = {f for f, seconds in functions(stage).items() if seconds >= 60}
        assert long_running == aws.LONG_RUNNING_FUNCTIONS, stage


@pytest.mark.parametrize("stage", STAGES)
def test_api_functions_answer_before_api_gateway_gives_up(stage: str) -> None:
    for function in aws.API_FUNCTIONS:
        assert functions(stage)[function] <= API_GATEWAY_LIMIT_S


def test_the_shared_client_is_built_from_the_functions_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_STAGE", "dev")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "serverless-app-dev")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset_clients()
    try:
        made: Any = aws.client("dynamodb")
        assert made.meta.config.read_timeout == aws.PROFILE_CONFIG_ARGS["api"]["read_timeout"]
        assert made.meta.config.retries["total_max_attempts"] == 1
    finally:
        aws.reset_clients()


def test_a_backoff_loop_always_has_a_bound() -> None:
    """Retry loops run `range(backoff.max_attempts)`: none may be 0 (no try at all) or
    negative, and the sleeps of a whole loop add up to a known bound."""
    from chalicelib.core.backoff import Backoff

    for wrong in ({"max_attempts": 0}, {"max_attempts": -1}, {"base_s": -0.1}, {"cap_s": -1}):
        with pytest.raises(ValueError):
            Backoff(**wrong)  # type: ignore[arg-type]
    slept: list[float] = []
    backoff = Backoff(sleep=slept.append, max_attempts=5, base_s=0.05, cap_s=0.5)
    for attempt in range(1, backoff.max_attempts):
        backoff.wait(attempt)
    assert len(slept) == 4
    assert sum(slept) <= backoff.longest_total_wait() == 0.1 + 0.2 + 0.4 + 0.5
