"""boto3 clients: created once per process, lazily, with explicit retries and timeouts.

boto3 is imported on first use, not at import time, so a cold start that never talks to AWS
(a 4xx from validation, a CORS preflight) never pays for it. Endpoints follow boto3's own
rules, so `AWS_ENDPOINT_URL` points every client at the local emulator.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

_clients: dict[str, Any] = {}
_lock = threading.Lock()

#: Explicit client behaviour: standard retry mode (exponential backoff with jitter, throttling
#: aware), short connect timeout, a read timeout well under the function timeout. Attempts are
#: `total_max_attempts` (botocore's `max_attempts` counts retries: 3 would mean 4 attempts).
#: This is what functions with minutes to run get (stream and batch processing, images, the
#: sweep, analytics): one call at its worst, retries and backoff included, is 25 s.
CLIENT_CONFIG_ARGS: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": 3},
    "connect_timeout": 1,
    "read_timeout": 3,
    "max_pool_connections": 50,
    "tcp_keepalive": True,
}
#: Services whose calls are not idempotent: a retried SES SendEmail whose first answer was
#: lost sends the mail twice. One attempt only; the caller's retry (Lambda's, guarded by an
#: idempotency record) decides.
SERVICE_CONFIG_ARGS: dict[str, dict[str, Any]] = {
    "ses": {"retries": {"mode": "standard", "total_max_attempts": 1}, "read_timeout": 4},
    # Presigned URLs and POST policies signed with SigV4 (regional, the only kind newer
    # regions accept); Rekognition may take seconds on a large image.
    "s3": {"signature_version": "s3v4"},
    "rekognition": {"read_timeout": 10},
}
#: Per kind of function, over both of the above: a function with a 10 s timeout cannot wait
#: for retries (one retry may sleep 6 s: 1 s of throttling backoff plus up to 5 s that AWS
#: may ask for with `x-amz-retry-after`), so its caller retries instead (Lambda's event
#: source, the state machine's Retry, the API's client), and one call failing at its worst
#: still leaves time for the compensations after it. tests/unit/test_aws_budget.py checks
#: every function against its timeout, with its compensations counted.
PROFILE_CONFIG_ARGS: dict[str, dict[str, Any]] = {
    # Behind API Gateway: a call fails within 1.5 s, so an order's cancellation (a failing
    # call, then five more) ends within the 10 s timeout, far under API Gateway's 29 s.
    "api": {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": 0.5,
        "read_timeout": 1,
    },
    # Any other function with 10 s to run.
    "short": {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": 1,
        "read_timeout": 3,
    },
    "long": {},
    # Outside Lambda (the local stack, tools, tests): an emulator on a busy laptop may take
    # seconds to answer; nothing here has a Lambda timeout to keep.
    "local": {"read_timeout": 10},
}
API_FUNCTIONS = frozenset({"api_handler", "cognito_jwt"})
#: Functions with a timeout of a minute or more (config.json); any other is "short".
LONG_RUNNING_FUNCTIONS = frozenset(
    {
        "process_telemetry",
        "analyze_image",
        "make_thumbnails",
        "sweep_stuck_orders",
        "run_daily_analytics",
        "complete_analytics_query",
        "erase_users",
    }
)
APP_NAME = "serverless-app"


def function_profile(function: str | None) -> str:
    """The profile of a function (its Chalice name); outside Lambda (None: the local stack,
    tools, tests) the most patient one."""
    if function is None:
        return "local"
    if function in API_FUNCTIONS:
        return "api"
    return "long" if function in LONG_RUNNING_FUNCTIONS else "short"


def current_function() -> str | None:
    """The Chalice name of the Lambda function this process runs, None outside Lambda:
    `serverless-app-<stage>` is the API's handler, `serverless-app-<stage>-<name>` the others."""
    deployed = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if not deployed:
        return None
    prefix = f"{APP_NAME}-{os.environ.get('APP_STAGE', '')}"
    if deployed == prefix:
        return "api_handler"
    return deployed.removeprefix(prefix + "-")


def config_args(service: str, function: str | None) -> dict[str, Any]:
    """The botocore Config arguments of `service`'s client in `function`."""
    return {
        **CLIENT_CONFIG_ARGS,
        **SERVICE_CONFIG_ARGS.get(service, {}),
        **PROFILE_CONFIG_ARGS[function_profile(function)],
    }


def client(service: str) -> Any:
    """The shared client for `service`, created on first use (thread-safe)."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            import boto3
            from botocore.config import Config

            args = config_args(service, current_function())
            config = Config(**args, user_agent=_user_agent(boto3.__version__))
            _clients[service] = session().client(service, config=config)
        return _clients[service]


@cache
def session() -> Any:
    """One boto3 session for every client: its loader reads each JSON service model and
    the endpoint rules once, not once per client. Event handlers registered on it reach the
    clients created after."""
    import boto3

    return boto3.session.Session()


def _user_agent(boto3_version: str) -> str:
    """A fixed User-Agent naming the app, so CloudTrail shows which calls are ours.

    Fixed on purpose: botocore otherwise rebuilds its metadata-rich User-Agent twice for every
    call, about 14% of the CPU of a `GET /users/{id}` (measured with yappi).
    """
    import platform

    import botocore

    return (
        f"serverless-app Boto3/{boto3_version} Botocore/{botocore.__version__} "
        f"Python/{platform.python_version()}"
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError; other exceptions' class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


#: Errors worth another try: throttling and AWS-side failures (each service's own codes:
#: S3's SlowDown, SQS's RequestThrottled, Cognito's InternalErrorException, ...). Anything
#: else (validation, access denied, missing resource) fails the same way again.
RETRYABLE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "InternalServerError",
        "InternalServerException",
        "InternalErrorException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceException",
        "KMSThrottlingException",
        "RequestTimeout",
    }
)
#: Statuses that say "not now" whatever the code (a HEAD's error has no body, hence no code).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def retryable(exc: BaseException) -> bool:
    """A throttling or server error, or a connection problem (botocore's own retries have
    already run out on those)."""
    code = error_code(exc)
    if code in RETRYABLE or "Timeout" in code or "Connection" in code:
        return True
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") in RETRYABLE_STATUSES


def reset_clients() -> None:
    """Forget every client and resolved name (tests switch emulators between runs)."""
    with _lock:
        _clients.clear()
    account_id.cache_clear()
    queue_url.cache_clear()


@cache
def account_id() -> str:
    """The account the functions run in; GetCallerIdentity needs no IAM permission."""
    return str(client("sts").get_caller_identity()["Account"])


def topic_arn(topic_name: str) -> str:
    """The ARN of a topic in this account and region, built without an AWS call once the
    account is known (the stage's config holds names, never account ids)."""
    sns = client("sns")
    region = sns.meta.region_name
    partition = sns.meta.partition
    return f"arn:{partition}:sns:{region}:{account_id()}:{topic_name}"


@cache
def queue_url(queue_name: str) -> str:
    """The URL of a queue, looked up once per process."""
    return str(client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"])
