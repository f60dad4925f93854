"""Fault injection in the local emulator: a chosen fraction of the app's AWS calls fail as AWS
fails them (throttling, 5xx, added latency, a read timeout), per service.

The plan is a spec string (`make run FAULTS=0.1`, `FAULTS="dynamodb=0.3,sqs=0.1"`, in the
emulator's process `LOCAL_FAULTS`) and a kinds filter (`FAULT_KINDS=throttle,error`,
`LOCAL_FAULT_KINDS`; all four by default, one picked at random per faulted call).

Only the app's calls are faulted: those of the clients `chalicelib.core.aws` makes, which send
the app's own User-Agent (`serverless-app Boto3/...`, there so CloudTrail shows which calls are
the app's). The local event runtime's polling and deliveries, provisioning, the local tools
and moto's own call-backs (Step Functions' service integrations) use plain boto3 clients and
are never faulted: in AWS they are the services' own calls, not the function's.

Each fault has the wire shape of the service's protocol (`_error_response`), so botocore
parses the code AWS would send and retries it as it would. A `timeout` runs the call, then
holds its answer past the client's read timeout: the call is applied and its answer lost, so
the client's retry meets a call that already happened (a conditional write that now fails, a
message sent twice), the case code must survive. `/_local/faults` reads the plan and counts
(GET) and replaces them (POST JSON: `faults`, `kinds`, `seed`, `timeout_s`, `armed`, `reset`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("throttle", "error", "latency", "timeout")
CONTROL_PATH = "/_local/faults"
#: The prefix of the User-Agent of the app's clients (`chalicelib.core.aws._user_agent`).
APP_USER_AGENT_PREFIX = "serverless-app "
#: Held longer than the app's clients wait locally (the "local" profile's read timeout of
#: `chalicelib.core.aws`, 10 s), so the client gives up on the answer.
DEFAULT_TIMEOUT_S = 11.0
LATENCY_S = (0.05, 0.5)
#: Credential-scope (signing) names that differ from boto3's service names.
SIGNING_NAMES = {"states": "stepfunctions", "monitoring": "cloudwatch", "email": "ses"}
SERVICE_ALIASES = {"sesv2": "ses"}  # both sign as "ses": one rate for both


class FaultSpecError(ValueError):
    """A fault spec or kinds filter that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class FaultPlan:
    """Which fraction of the app's calls to each service fail, and how."""

    default: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    kinds: tuple[str, ...] = KINDS

    def rate(self, service: str) -> float:
        return self.rates.get(SERVICE_ALIASES.get(service, service), self.default)

    @property
    def active(self) -> bool:
        return self.default > 0 or any(rate > 0 for rate in self.rates.values())

    def describe(self) -> str:
        if not self.active:
            return "no faults"
        parts = [f"{service} {rate:.0%}" for service, rate in sorted(self.rates.items())]
        if self.default > 0 or not parts:
            parts.append(f"{'every other service' if parts else 'every service'} "
                         f"{self.default:.0%}")  # fmt: skip
        return f"faults on the app's AWS calls: {', '.join(parts)}; kinds {','.join(self.kinds)}"


def parse_faults(spec: str | None, kinds: str | None = None) -> FaultPlan:
    """`spec`: empty (none), a fraction for every service (`0.1` or `10%`), or
    `service=fraction` pairs by boto3 service name (`dynamodb=0.3,sqs=0.1`; a bare fraction
    among them is the rate of the services not named). `kinds`: a comma list of KINDS."""
    chosen = _parse_kinds(kinds)
    default, rates = 0.0, {}
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        name, equals, value = part.rpartition("=")
        if not equals:
            default = _fraction(part, part)
            continue
        service = name.strip().lower()
        if not service:
            raise FaultSpecError(f"{part!r}: no service before '='; e.g. dynamodb=0.3")
        service = SERVICE_ALIASES.get(service, service)
        if service not in _known_services():
            raise FaultSpecError(
                f"{part!r}: unknown service {service!r}; use boto3's service names "
                "(dynamodb, sqs, sns, s3, kinesis, stepfunctions, ses, cognito-idp, ...)"
            )
        if service in rates:
            raise FaultSpecError(f"{part!r}: {service} is given twice")
        rates[service] = _fraction(value, part)
    return FaultPlan(default, rates, chosen)


def _parse_kinds(kinds: str | None) -> tuple[str, ...]:
    names = [k.strip().lower() for k in (kinds or "").split(",") if k.strip()]
    unknown = [k for k in names if k not in KINDS]
    if unknown:
        raise FaultSpecError(f"unknown fault kind(s) {unknown}; choose from {','.join(KINDS)}")
    return tuple(k for k in KINDS if k in names) or KINDS


def _fraction(text: str, part: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        message = f"{part!r}: {raw!r} is not a fraction (0.1) or a percentage (10%)"
        raise FaultSpecError(message) from None
    if not 0 <= value <= 1:
        raise FaultSpecError(f"{part!r}: a fraction is between 0 and 1 (0% and 100%)")
    return value


def _known_services() -> frozenset[str]:
    import botocore.session

    return frozenset(botocore.session.get_session().get_available_services())


def service_of(environ: dict[str, Any]) -> str | None:
    """The boto3 service name of a signed request, from its SigV4 credential scope
    (`Credential=<key>/<date>/<region>/<service>/aws4_request`)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    start = auth.find("Credential=")
    if start < 0:
        return None
    scope = auth[start + len("Credential=") :].split(",")[0].split("/")
    if len(scope) < 5:
        return None
    return SIGNING_NAMES.get(scope[3], scope[3])


def is_app_call(environ: dict[str, Any]) -> bool:
    return str(environ.get("HTTP_USER_AGENT", "")).startswith(APP_USER_AGENT_PREFIX)


App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FaultInjector:
    """WSGI middleware: the app's calls fail as the plan says, the rest reach `app` as is."""

    def __init__(
        self,
        app: App,
        plan: FaultPlan,
        seed: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        armed: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._sleep = sleep
        self.plan, self.timeout_s, self.armed = plan, timeout_s, armed
        self._random = random.Random(seed)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PATH):
            return self._control(environ, start_response)
        service = service_of(environ) if self.armed and is_app_call(environ) else None
        if service is None:
            return self._app(environ, start_response)
        kind, pick = self._decide(service)
        if kind == "latency":
            self._sleep(LATENCY_S[0] + pick * (LATENCY_S[1] - LATENCY_S[0]))
        elif kind == "timeout":
            return self._answer_late(environ, start_response)
        elif kind is not None:
            from local.fault_wire import error_response

            status, headers, body = error_response(environ, service, kind, pick)
            start_response(status, headers)
            return [body]
        return self._app(environ, start_response)

    def _decide(self, service: str) -> tuple[str | None, float]:
        """The kind of fault for this call (None: none), and a number in [0, 1) for its
        details; under a lock, so a seeded run draws the same sequence."""
        with self._lock:
            self.calls[service] += 1
            if self._random.random() >= self.plan.rate(service):
                return None, 0.0
            kind = self._random.choice(self.plan.kinds)
            self.counts[service][kind] += 1
            return kind, self._random.random()

    def _answer_late(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Run the call now, answer after the client stopped waiting."""
        answer: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer.update(status=status, headers=headers)
            return lambda data: None

        result = self._app(environ, keep)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        self._sleep(self.timeout_s)
        start_response(answer["status"], answer["headers"])
        return [body]

    def state(self) -> dict[str, Any]:
        with self._lock:
            services = {
                name: {"calls": calls, **self.counts[name]} for name, calls in self.calls.items()
            }
        return {
            "plan": self.plan.describe(),
            "default": self.plan.default,
            "rates": self.plan.rates,
            "kinds": list(self.plan.kinds),
            "armed": self.armed,
            "timeout_s": self.timeout_s,
            "services": services,
        }

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply a POST to CONTROL_PATH (FaultSpecError, ValueError: refused, nothing set)."""
        plan = self.plan
        if "faults" in changes or "kinds" in changes:
            plan = parse_faults(changes.get("faults"), changes.get("kinds"))
        timeout_s = float(changes.get("timeout_s", self.timeout_s))
        if timeout_s < 0:
            raise ValueError("timeout_s must not be negative")
        with self._lock:
            self.plan, self.timeout_s = plan, timeout_s
            self.armed = bool(changes.get("armed", self.armed))
            if "seed" in changes:
                self._random = random.Random(changes["seed"])
            if changes.get("reset"):
                self.counts.clear()
                self.calls.clear()

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                size = int(environ.get("CONTENT_LENGTH") or 0)
                changes = json.loads(environ["wsgi.input"].read(size) or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object")
                self.configure(changes)
            except (ValueError, TypeError) as exc:
                start_response("400 Bad Request", [("Content-Type", "application/json")])
                return [json.dumps({"error": str(exc)}).encode()]
        body = json.dumps(self.state()).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
