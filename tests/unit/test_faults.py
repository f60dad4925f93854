"""Fault injection in the local emulator (`local.faults`): the spec, each kind's wire shape as
botocore reads it, the fraction asked for, and which calls are exempt. Against the emulator
in its own process, as the stack starts it, reconfigured per test through `/_local/faults`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from chalicelib.core import aws
from infra.paths import PROJECT_DIR
from local.faults import APP_USER_AGENT_PREFIX, CONTROL_PATH, FaultSpecError, parse_faults
from local.stack import free_port

REGION = "us-east-1"
HOLD_S = 1.2  # the emulator's timeout hold in these tests (LOCAL_FAULT_TIMEOUT_S)
APP_UA = aws._user_agent(boto3.__version__)


# The spec


def test_a_bare_fraction_applies_to_every_service() -> None:
    plan = parse_faults("0.1")
    assert plan.rate("dynamodb") == plan.rate("sqs") == 0.1
    assert plan.kinds == ("throttle", "error", "latency", "timeout")
    assert parse_faults("10%").rate("s3") == pytest.approx(0.1)


def test_per_service_rates_and_a_kinds_filter() -> None:
    plan = parse_faults("dynamodb=0.3, sqs=0.1,s3=10%", "timeout,throttle")
    assert (plan.rate("dynamodb"), plan.rate("sqs"), plan.rate("s3")) == (0.3, 0.1, 0.1)
    assert plan.rate("sns") == 0.0
    assert plan.kinds == ("throttle", "timeout")
    assert parse_faults("0.05,dynamodb=0.5").rate("kinesis") == 0.05
    assert parse_faults("sesv2=0.2").rate("ses") == 0.2  # both sign as "ses"
    assert "dynamodb 30%" in plan.describe()
    assert not parse_faults("").active and not parse_faults(None).active
    assert parse_faults("").describe() == "no faults"


@pytest.mark.parametrize(
    ("spec", "kinds", "says"),
    [
        ("1.5", None, "between 0 and 1"),
        ("-0.1", None, "between 0 and 1"),
        ("dynamodb=lots", None, "not a fraction"),
        ("dynamo=0.1", None, "unknown service 'dynamo'"),
        ("=0.1", None, "no service"),
        ("sqs=0.1,sqs=0.2", None, "given twice"),
        ("0.1", "throttle,explode", "unknown fault kind"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, kinds: str | None, says: str) -> None:
    with pytest.raises(FaultSpecError, match=says):
        parse_faults(spec, kinds)


def test_the_stack_refuses_a_bad_spec_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from local.stack import main

    assert main(["--faults", "dynamodb=2", "--state-dir", "/nonexistent/never"]) == 2
    assert "FAULTS: 'dynamodb=2': a fraction is between 0 and 1" in capsys.readouterr().err


def test_the_emulator_refuses_a_bad_spec() -> None:
    env = {**os.environ, "LOCAL_FAULTS": "sqs=0.1", "LOCAL_FAULT_KINDS": "slow"}
    command = [sys.executable, "-m", "local.emulator", "--port", str(free_port())]
    done = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, timeout=30)
    assert done.returncode != 0
    assert b"unknown fault kind(s) ['slow']" in done.stderr


def test_the_app_clients_are_the_ones_faulted() -> None:
    """The emulator tells the app's calls by the User-Agent `chalicelib.core.aws` sets."""
    assert APP_UA.startswith(APP_USER_AGENT_PREFIX)
    assert not boto3.client("sqs", region_name=REGION)._client_config.user_agent.startswith(
        APP_USER_AGENT_PREFIX
    )


# Against the emulator


@contextlib.contextmanager
def emulator_process(**env: str) -> Iterator[str]:
    """The emulator as the stack starts it (faults armed later), with `env` added."""
    port = free_port()
    command = [sys.executable, "-m", "local.emulator", "--port", str(port), "--arm-faults-later"]
    process = subprocess.Popen(command, cwd=PROJECT_DIR, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/moto-api/data.json", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """One emulator for the tests below; each sets the plan it needs."""
    with emulator_process(LOCAL_FAULTS="", LOCAL_FAULT_TIMEOUT_S=str(HOLD_S)) as url:
        yield url


def configure(url: str, **changes: Any) -> dict[str, Any]:
    answer = requests.post(url + CONTROL_PATH, json={"reset": True, **changes}, timeout=5)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def counts(url: str) -> dict[str, Any]:
    return dict(requests.get(url + CONTROL_PATH, timeout=5).json()["services"])


def client_maker(url: str, attempts: int = 1, read_timeout: float = 5) -> Callable[..., Any]:
    def make(service: str, app: bool = True) -> Any:
        config = Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            read_timeout=read_timeout,
            connect_timeout=1,
            user_agent=APP_UA if app else None,
        )
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=url,
            config=config,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    return make


def test_the_environment_sets_the_plan_and_the_stack_arms_it() -> None:
    env = {"LOCAL_FAULTS": "1.0", "LOCAL_FAULT_KINDS": "throttle", "LOCAL_FAULT_SEED": "3"}
    with emulator_process(**env, LOCAL_FAULT_TIMEOUT_S="2.5") as url:
        state = requests.get(url + CONTROL_PATH, timeout=5).json()
        assert state["default"] == 1.0 and state["kinds"] == ["throttle"]
        assert state["timeout_s"] == 2.5 and not state["armed"]
        client = client_maker(url)
        client("sts").get_caller_identity()  # not armed yet: served
        configure(url, armed=True)
        with pytest.raises(ClientError, match="Throttling"):
            client("sts").get_caller_identity()


def test_a_bad_control_request_changes_nothing(emulator: str) -> None:
    configure(emulator, faults="0.2", kinds="error", armed=True)
    answer = requests.post(emulator + CONTROL_PATH, json={"faults": "sqs=7"}, timeout=5)
    assert answer.status_code == 400 and "between 0 and 1" in answer.json()["error"]
    assert requests.get(emulator + CONTROL_PATH, timeout=5).json()["default"] == 0.2


#: A call per protocol family (and the services the app uses): boto3 service, the call.
CALLS: dict[str, Callable[[Any], Any]] = {
    "dynamodb": lambda c: c.list_tables(),  # awsJson 1.0
    "kinesis": lambda c: c.list_streams(),  # awsJson 1.1
    "sqs": lambda c: c.list_queues(),  # awsJson 1.0, query-compatible error codes
    "stepfunctions": lambda c: c.list_state_machines(),
    "cognito-idp": lambda c: c.list_user_pools(MaxResults=1),
    "rekognition": lambda c: c.list_collections(),
    "athena": lambda c: c.list_work_groups(),
    "ssm": lambda c: c.describe_parameters(),
    "sns": lambda c: c.list_topics(),  # awsQuery
    "ses": lambda c: c.list_identities(),
    "sts": lambda c: c.get_caller_identity(),
    "s3": lambda c: c.list_buckets(),  # rest-xml
    "lambda": lambda c: c.list_functions(),  # rest-json
    "cloudwatch": lambda c: c.list_metrics(),  # smithy rpc-v2-cbor
}
EXPECTED = {
    "throttle": {
        "dynamodb": {"ProvisionedThroughputExceededException", "ThrottlingException"},
        "kinesis": {"ProvisionedThroughputExceededException"},
        "sqs": {"RequestThrottled"},
        "stepfunctions": {"ThrottlingException"},
        "cognito-idp": {"TooManyRequestsException"},
        "rekognition": {"ProvisionedThroughputExceededException", "ThrottlingException"},
        "athena": {"TooManyRequestsException"},
        "ssm": {"ThrottlingException"},
        "sns": {"Throttling"},
        "ses": {"Throttling"},
        "sts": {"Throttling"},
        "s3": {"SlowDown"},
        "lambda": {"TooManyRequestsException"},
        "cloudwatch": {"ThrottlingException"},
    },
    "error": {
        "dynamodb": {"InternalServerError", "ServiceUnavailable"},
        "s3": {"InternalError", "ServiceUnavailable"},
        "cognito-idp": {"InternalErrorException"},
        "rekognition": {"InternalServerError"},
        "lambda": {"ServiceException"},
        "athena": {"InternalServerException"},
    },
}


@pytest.mark.parametrize("kind", ["throttle", "error"])
@pytest.mark.parametrize("service", list(CALLS))
def test_each_protocol_answers_in_its_wire_shape(emulator: str, service: str, kind: str) -> None:
    """botocore parses the service's own code and retries it (2 attempts, both counted)."""
    configure(emulator, faults=f"{service}=1", kinds=kind, armed=True, seed=1)
    with pytest.raises(ClientError) as raised:
        CALLS[service](client_maker(emulator, attempts=2)(service))
    error = raised.value.response["Error"]
    status = raised.value.response["ResponseMetadata"]["HTTPStatusCode"]
    expected = EXPECTED[kind].get(service, {"InternalFailure", "ServiceUnavailable"})
    assert error["Code"] in expected
    assert "injected" in error.get("Message", "")
    assert status >= 500 if kind == "error" else status in (400, 429, 503)
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert counts(emulator)[service]["calls"] == 2
    assert aws.retryable(raised.value)


def test_other_services_and_other_clients_are_not_faulted(emulator: str) -> None:
    configure(emulator, faults="dynamodb=1", kinds="throttle", armed=True)
    make = client_maker(emulator)
    make("sqs").list_queues()  # the app's, another service
    make("dynamodb", app=False).list_tables()  # the event runtime's, provisioning's
    with pytest.raises(ClientError):
        make("dynamodb").list_tables()
    assert counts(emulator) == {
        "sqs": {"calls": 1, "throttle": 0, "error": 0, "latency": 0, "timeout": 0},
        "dynamodb": {"calls": 1, "throttle": 1, "error": 0, "latency": 0, "timeout": 0},
    }


def outcomes(emulator: str, calls: int) -> list[str]:
    client = client_maker(emulator)("dynamodb")
    seen = []
    for _ in range(calls):
        try:
            client.list_tables()
            seen.append("ok")
        except ClientError as exc:
            seen.append(exc.response["Error"]["Code"])
    return seen


def test_the_fraction_asked_for_is_the_fraction_seen(emulator: str) -> None:
    configure(emulator, faults="dynamodb=0.1,sqs=0.5", kinds="throttle,error", seed=7, armed=True)
    seen = outcomes(emulator, 1000)
    failed = sum(1 for outcome in seen if outcome != "ok")
    # Binomial(1000, 0.1): sd 9.5; 4 sd either side.
    assert 62 <= failed <= 138, failed
    served = counts(emulator)["dynamodb"]
    assert served["calls"] == 1000 and served["throttle"] + served["error"] == failed
    assert served["throttle"] > 0 and served["error"] > 0  # both kinds drawn


def test_a_seed_repeats_the_same_faults(emulator: str) -> None:
    configure(emulator, faults="0.3", kinds="throttle,error", seed=42, armed=True)
    first = outcomes(emulator, 100)
    configure(emulator, seed=42)
    assert outcomes(emulator, 100) == first
    assert "ok" in first and set(first) != {"ok"}


def test_latency_delays_then_serves(emulator: str) -> None:
    configure(emulator, faults="sqs=1", kinds="latency", seed=3, armed=True)
    client = client_maker(emulator)("sqs")
    for _ in range(3):
        started = time.perf_counter()
        client.list_queues()
        assert 0.05 <= time.perf_counter() - started < 1.5
    assert counts(emulator)["sqs"]["latency"] == 3


def test_a_timeout_applies_the_call_and_loses_its_answer(emulator: str) -> None:
    """The client gives up (ReadTimeoutError, retryable); the write happened all the same,
    so a retry would meet it."""
    make = client_maker(emulator, read_timeout=0.4)
    configure(emulator, armed=False)
    plain = make("sqs", app=False)
    queue = plain.create_queue(QueueName="faults-timeout")["QueueUrl"]
    configure(emulator, faults="sqs=1", kinds="timeout", armed=True)
    started = time.perf_counter()
    with pytest.raises(ReadTimeoutError) as raised:
        make("sqs").send_message(QueueUrl=queue, MessageBody="once")
    assert time.perf_counter() - started < HOLD_S
    assert aws.retryable(raised.value)
    received = plain.receive_message(QueueUrl=queue, WaitTimeSeconds=0)
    assert [m["Body"] for m in received["Messages"]] == ["once"]


def test_disarmed_injects_nothing(emulator: str) -> None:
    configure(emulator, faults="1", kinds="throttle", armed=False)
    client_maker(emulator)("dynamodb").list_tables()
    assert counts(emulator) == {}


def test_an_api_view_answers_an_aws_outage_with_503() -> None:
    """Whatever the service's code for "not now" (here S3's 500 and a HEAD's bare 503)."""
    from chalicelib.core.errors import ServiceUnavailable
    from chalicelib.core.http import busy_aws_as_503

    for code, status in (("InternalError", 500), ("503", 503), ("RequestThrottled", 400)):
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}

        def view(response: dict[str, Any] = response) -> None:
            raise ClientError(response, "Op")  # type: ignore[arg-type]

        with pytest.raises(ServiceUnavailable) as raised:
            busy_aws_as_503(view)()
        assert raised.value.headers["Retry-After"] == "1"
