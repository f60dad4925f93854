"""`make fuzz [EXAMPLES=100] [SEED=1] [ARGS=...]`: property-based tests of the whole API from its
own OpenAPI document (`GET /openapi.json`), with schemathesis, against a real local stack.

Every operation gets generated requests, valid ones and invalid ones (each sent with a signed-in
user's token or an admin's, drawn per case; a path id is, half the time, a real resource of
that user: its own user id, an order and an image made before the run, its own product), and
every answer is checked: no 5xx, a status code, content type, body and headers the document
declares. Then the document's links drive stateful sequences (create, then read, update,
delete what was created). Failures do not stop the run: each distinct one is counted and
printed once, with a curl command that repeats it. The exit status is 1 if any was found.

A plain runner rather than pytest's parametrization: one command that starts its own stack (or
takes `--api`), runs a seeded budget and prints one summary; `tests/integration/test_fuzz.py`
calls the same `run` with a small budget against the test session's stack. The document's
loading, the checks and the stateful phase are in `local/fuzz_schema.py`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from local.fuzz_schema import REQUEST_TIMEOUT_S, fuzz_stateful, load_schema, response_checks
from local.provision import STATE_DIR

#: Path ids a case may send as a real resource of the fuzzing user instead of a generated one.
#: Never for DELETE: the user or image deleted would leave every later case a 404.
REAL_ID_METHODS = frozenset({"GET", "PUT", "POST", "PATCH"})
ROLES = ("user", "admin")
#: How long ago the day is whose analytics report cases may read or rerun: within the 90 days
#: reports go back, and a day no other test touches.
PAST_DAYS = 45


@dataclass
class Finding:
    """One distinct failure (an operation and what failed), its first example and its count."""

    operation: str
    title: str
    message: str
    curl: str
    count: int = 1


@dataclass
class Report:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    #: Statuses of the stateful steps alone, per operation.
    stateful: dict[str, Counter[int]] = field(default_factory=dict)
    stateful_steps: int = 0
    #: Operations the stateful phase left out: admins' only (`closed_to_user`).
    left_out: list[str] = field(default_factory=list)
    #: Statuses per (operation, role) of the cases sent with a role's token.
    by_role: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    stateful_scenarios: int = 0
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.cases.values())


class Fuzzer:
    """Sends cases with the right token and real ids, and keeps the report."""

    def __init__(self, api: str, tokens: dict[str, str], real_ids: dict[str, str]) -> None:
        import requests

        self.api = api.rstrip("/")
        self.tokens = tokens
        self.real_ids = real_ids
        self.session = requests.Session()
        self.report = Report()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def send(self, case: Any, role: str, checks: list[Any]) -> None:
        """One case: call, count, check; a failure is recorded, never raised."""
        import requests
        from schemathesis.core.failures import FailureGroup

        headers = self.headers(role)
        try:
            response = case.call(
                base_url=self.api, session=self.session, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as problem:  # no answer at all: a failure too
            self.no_answer(case, role, problem)
            return
        self.count(case, response.status_code)
        key = (case.operation.label, role)
        self.report.by_role.setdefault(key, Counter())[response.status_code] += 1
        try:
            case.validate_response(
                response, checks=checks, headers=headers, transport_kwargs={"base_url": self.api}
            )
        except FailureGroup as group:
            self.record(case, response, group, role)

    def count(self, case: Any, status: int) -> None:
        label = case.operation.label
        self.report.cases[label] += 1
        self.report.statuses.setdefault(label, Counter())[status] += 1

    def curl(self, case: Any, role: str, headers: dict[str, Any] | None = None) -> str:
        """A command that repeats `case`, naming the token's variable (schemathesis filters
        the token out of its commands)."""
        command = case.as_curl_command(headers=headers or self.headers(role), base_url=self.api)
        variable = f"Bearer ${role.upper()}_TOKEN"
        command = command.replace("Authorization: [Filtered]", f"Authorization: {variable}")
        return command.replace(f"Bearer {self.tokens[role]}", variable)

    def no_answer(self, case: Any, role: str, problem: Exception) -> None:
        label = case.operation.label
        self.report.cases[label] += 1
        key = (label, f"No answer ({type(problem).__name__})")
        if key in self.report.findings:
            self.report.findings[key].count += 1
            return
        self.report.findings[key] = Finding(
            label, key[1], str(problem)[:1500], self.curl(case, role)
        )

    def record(
        self, case: Any, response: Any, group: Any, role: str, before: Sequence[str] = ()
    ) -> None:
        """Each failure of `group` (`before`: the curl commands of the stateful steps that
        led to `case`, to run first)."""
        label = case.operation.label
        for failure in group.exceptions:
            key = (label, f"{failure.title} ({response.status_code})")
            if key in self.report.findings:
                self.report.findings[key].count += 1
                continue
            curl = self.curl(case, role, dict(response.request.headers))
            message = (failure.message or "").strip()
            curl = "\n  ".join([*before, curl])
            self.report.findings[key] = Finding(label, key[1], message[:1500], curl)


def run(
    state: dict[str, Any],
    schema_source: str | None = None,
    max_examples: int = 100,
    stateful_examples: int = 30,
    seed: int = 1,
    user_email: str | None = None,
    admin_email: str | None = None,
) -> Report:
    """Fuzz the stack `state` describes (its stack.json, with `state_dir`): `max_examples`
    cases per operation, then `stateful_examples` linked scenarios (0: none)."""
    started = time.monotonic()
    source = schema_source or f"{state['api_url'].rstrip('/')}/openapi.json"
    schema = load_schema(source)
    suffix = secrets.token_hex(4)  # new users on every run, also on a long-running stack
    tokens = {
        "user": _token(state, user_email or f"fuzz-user-{suffix}@example.com", admin=False),
        "admin": _token(state, admin_email or f"fuzz-admin-{suffix}@example.com", admin=True),
    }
    fuzzer = Fuzzer(state["api_url"], tokens, {})
    fuzzer.real_ids = real_resources(fuzzer)
    for operation in operations(schema, fuzzer.report):
        fuzz_operation(fuzzer, operation, max_examples, seed)
    if stateful_examples > 0:
        stateful = load_schema(source, stateful=True)
        futile = closed_to_user(fuzzer.report)
        if futile:  # the user's sequences would only stumble on them
            stateful = stateful.exclude(name=sorted(futile))
            fuzzer.report.left_out = sorted(futile)
        fuzz_stateful(fuzzer, stateful, stateful_examples, seed)
    fuzzer.session.close()
    fuzzer.report.seconds = time.monotonic() - started
    return fuzzer.report


def closed_to_user(report: Report) -> set[str]:
    """Operations that refused the user (403) and gave it nothing else but errors in its
    request (admins' only): the stateful phase, as the user, leaves them out."""
    request_errors = {400, 401, 403, 413, 415, 429}
    return {
        label
        for (label, role), statuses in report.by_role.items()
        if role == "user" and 403 in statuses and set(statuses) <= request_errors
    }


def operations(schema: Any, report: Report) -> Iterator[Any]:
    from schemathesis.core.result import Ok

    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            yield result.ok()
        else:  # an operation the document describes unusably
            report.skipped.append(str(result.err()))


def _token(state: dict[str, Any], email: str, admin: bool) -> str:
    from local.token import issue_token

    return issue_token(state, email, admin, id_token=False)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def real_resources(fuzzer: Fuzzer) -> dict[str, str]:
    """The fuzzing user's own resources, made through the API: the ids a case may use. Its
    own product and a day weeks ago, so that it never changes what other tests use."""
    from chalicelib.core import clock

    http, headers = fuzzer.session, fuzzer.headers("user")
    user_id = str(_claims(fuzzer.tokens["user"])["sub"])
    day = (clock.now() - timedelta(days=PAST_DAYS)).date().isoformat()
    ids = {"user_id": user_id, "sku": f"FUZZ-{user_id[:8].upper()}", "day": day}
    product = {"name": "Fuzzing stock", "unit_amount": 100, "available": 1000}
    http.put(
        f"{fuzzer.api}/inventory/{ids['sku']}",
        json=product,
        headers=fuzzer.headers("admin"),
        timeout=REQUEST_TIMEOUT_S,
    ).raise_for_status()
    order = {
        "lines": [{"sku": ids["sku"], "quantity": 1}],
        "payment_method": "pm_card_visa",
        "shipping_address": {
            "name": "Fuzz",
            "line1": "1 Test Street",
            "city": "London",
            "postal_code": "SW1A 1AA",
            "country": "GB",
        },
    }
    placed = http.post(
        f"{fuzzer.api}/orders",
        json=order,
        headers={**headers, "Idempotency-Key": f"fuzz-{user_id}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    placed.raise_for_status()
    ids["order_id"] = placed.json()["order_id"]
    image = http.post(
        f"{fuzzer.api}/images",
        json={"content_type": "image/jpeg", "size": 2048},
        headers=headers,
        timeout=REQUEST_TIMEOUT_S,
    )
    image.raise_for_status()
    ids["image_id"] = image.json()["image_id"]
    return ids


def fuzz_operation(fuzzer: Fuzzer, operation: Any, max_examples: int, seed: int) -> None:
    """Half the budget valid cases, half invalid ones; each half with real ids half the time."""
    import hypothesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    checks = response_checks()
    real = {
        name: fuzzer.real_ids[name]
        for name in re.findall(r"{(\w+)}", operation.path) if name in fuzzer.real_ids
    } if operation.method.upper() in REAL_ID_METHODS else {}  # fmt: skip
    budgets = {GenerationMode.POSITIVE: max_examples - max_examples // 2}
    budgets[GenerationMode.NEGATIVE] = max_examples // 2
    for mode, budget in budgets.items():
        if budget <= 0:
            continue
        strategy = operation.as_strategy(generation_mode=mode)
        if real:
            strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=real))

        @hypothesis.seed(seed)
        @hypothesis.settings(
            max_examples=budget,
            database=None,
            deadline=None,
            derandomize=False,
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
            verbosity=hypothesis.Verbosity.quiet,
        )
        @hypothesis.given(case=strategy, role=st.sampled_from(ROLES))
        def test(case: Any, role: str) -> None:
            fuzzer.send(case, role, checks)

        # Unsatisfiable: nothing to make invalid (no parameters, no body); valid cases cover it.
        with contextlib.suppress(hypothesis.errors.Unsatisfiable):
            test()


def summary(report: Report) -> str:
    lines = [f"{'operation':<38} {'cases':>6}  statuses (of them in stateful sequences)"]
    for label in sorted(report.cases):
        statuses = " ".join(f"{s}x{n}" for s, n in sorted(report.statuses[label].items()))
        stateful = report.stateful.get(label)
        if stateful:
            statuses += " (" + " ".join(f"{s}x{n}" for s, n in sorted(stateful.items())) + ")"
        lines.append(f"{label:<38} {report.cases[label]:>6}  {statuses}")
    lines.append(
        f"\n{report.total} cases over {len(report.cases)} operations "
        f"({report.stateful_steps} of them in {report.stateful_scenarios} stateful scenarios) "
        f"in {report.seconds:.0f} s; {len(report.findings)} distinct failures"
    )
    lines += [f"skipped: {reason}" for reason in report.skipped]
    if report.left_out:
        lines.append(f"stateful sequences left out (admins' only): {', '.join(report.left_out)}")
    for finding in report.findings.values():
        lines += [
            f"\n--- {finding.operation}: {finding.title}, {finding.count} case(s)",
            finding.message,
            f"reproduce:\n  {finding.curl}",
        ]
    return "\n".join(lines)


@contextlib.contextmanager
def own_stack() -> Iterator[dict[str, Any]]:
    """A stack of its own on free ports and a temporary state folder, stopped at the end."""
    from bench.stack import running_stack

    with running_stack() as stack:
        try:
            yield {**stack.state(), "state_dir": str(stack.state_dir)}
        except Exception:
            print(f"the stack's log ends with:\n{stack.log_tail(6000)}", file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api", help="fuzz this stack's API (its tokens come from --state-dir's stack)"
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument(
        "--schema", help="the OpenAPI document (URL or file; default <api>/openapi.json)"
    )
    parser.add_argument("--max-examples", type=int, default=100, help="cases per operation")
    parser.add_argument("--stateful-examples", type=int, default=30, help="stateful scenarios")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.api:
        from local.stack import running_state

        running = running_state(args.state_dir)
        if running is None:
            return 1
        stack: Any = contextlib.nullcontext({
            **running, "api_url": args.api, "state_dir": str(args.state_dir)
        })  # fmt: skip
    else:
        print("starting a stack of its own on free ports...", file=sys.stderr)
        stack = own_stack()
    with stack as state:
        report = run(state, args.schema, args.max_examples, args.stateful_examples, args.seed)
    print(summary(report))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
