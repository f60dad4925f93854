"""`make soak [RATE=20] [DURATION=60] [FAULTS=0.1]`: a mixed workload at a set rate for a set
time against a local stack with faults injected into the app's AWS calls, then every write
the API accepted looked for, and the figures.

    python -m local.soak --rate 20 --duration 60 --faults 0.1 [--seed N] [--json out.json]
    python -m local.soak --api http://127.0.0.1:8000 --emulator http://127.0.0.1:5000

It starts its own stack on free ports with its own state directory (or uses a running one:
`--api`/`--emulator`, with that stack's `stack.json` from `--state-dir`; faults are then the
stack's own), registers a pool of users for real (register, the mailed code, confirm, sign
in), creates its own products, and sends a seeded mix (`soak_load.MIX`: registrations,
profile reads and updates, lists and searches as an admin, telemetry batches, image uploads,
orders of which some are declined or refused by the carrier) with a few worker threads.
Then it waits for the queues and executions to settle and checks (`soak_checks`).

Exit status 1 when anything accepted was lost, duplicated, left unfinished or out of balance,
or a request got a 500 (a 503 with Retry-After is what a fault may cause, and is retried).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from local.soak_clients import Client, Ledger, User, register, sign_in
from local.soak_load import Workload, drive, small_jpeg

POOL_USERS = 12
PRODUCTS = 3
STOCK = 100_000
#: Findings that fail the soak (besides any 500).
FAILING = ("lost", "duplicated", "unfinished", "unbalanced", "parked")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="operations a second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--faults", type=float, default=0.0, help="share of the app's AWS calls")
    parser.add_argument("--fault-kinds", default=None, help="throttle,error,latency,timeout")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--settle",
        type=float,
        default=420.0,
        help="seconds to wait for queues and executions, at most (a failed message comes "
        "back after its queue's visibility timeout: 360 s for image uploads)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--api", default=None, help="a running stack's API instead of a new one")
    parser.add_argument("--emulator", default=None, help="that stack's emulator")
    parser.add_argument("--state-dir", type=Path, default=Path(".local"))
    parser.add_argument("--log", type=Path, default=None, help="keep the new stack's log here")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    with stack_for(args) as state:
        figures = soak(state, args.rate, args.duration, seed, args.workers, args.settle)
    figures["settings"] = {
        "rate": args.rate,
        "duration": args.duration,
        "faults": args.faults,
        "fault_kinds": args.fault_kinds,
        "seed": seed,
        "workers": args.workers,
    }
    print(table(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed(figures) else 0


def soak(
    state: dict[str, Any],
    rate: float,
    duration: float,
    seed: int,
    workers: int,
    settle_s: float,
    pool: int = POOL_USERS,
) -> dict[str, Any]:
    """Set up, load, settle, check: the figures."""
    from local.soak_checks import check_all, settle

    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:6]
    setup = Client(state["api_url"], Ledger(), random.Random(seed + 1))
    admin, users = _users(state, setup, tag, rng, pool)
    skus = _products(setup, admin, tag)
    ledger = Ledger()
    ledger.users.update(setup.ledger.users)
    client = Client(state["api_url"], ledger, random.Random(seed + 2))
    workload = Workload(state, client, admin, list(skus), tag, small_jpeg(seed), rng)
    plan = workload.plan(int(rate * duration), len(users))
    print(
        f"soak: {len(plan)} operations at {rate}/s for {duration} s, {workers} workers, "
        f"{len(users)} users, seed {seed}",
        file=sys.stderr,
    )
    elapsed = drive(plan, users, workload.run, rate, workers, ledger)
    print(f"soak: load done in {elapsed:.1f} s; settling", file=sys.stderr)
    settled, still_busy = settle(state, settle_s)
    print(f"soak: settled in {settled:.1f} s; checking", file=sys.stderr)
    checks = Client(state["api_url"], Ledger(), random.Random(seed + 3))
    checking = time.monotonic()
    findings = check_all(state, ledger, checks, admin, users, skus, min(settle_s, 120))
    figures = figures_of(ledger, findings, elapsed, settled)
    figures["faults"] = _faults_injected(state)
    figures["not_settled"] = still_busy
    figures["totals"]["check_seconds"] = round(time.monotonic() - checking, 1)
    return figures


def _users(
    state: dict[str, Any], setup: Client, tag: str, rng: random.Random, pool: int
) -> tuple[str, list[User]]:
    """An admin's token, and the pool of signed-in users."""
    from local.soak_checks import aws

    email = f"soak-admin-{tag}@example.com"
    if register(setup, state["emulator_url"], email, "Soak Admin") is None:
        raise SystemExit(f"could not register the soak's admin: {dict(setup.ledger.notes)}")
    aws(state, "cognito-idp").admin_add_user_to_group(
        UserPoolId=state["resources"]["UserPoolId"], Username=email, GroupName="admins"
    )
    admin = sign_in(state, email)
    users = []
    for number in range(pool):
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(8)).capitalize()
        user = User(f"soak-{tag}-{number}@example.com", name=f"Soak {word}")
        user_id = None
        for attempt in range(3):  # a registration may fail under faults: another address
            user.email = f"soak-{tag}-{number}-{attempt}@example.com"
            if user_id := register(setup, state["emulator_url"], user.email, user.name):
                break
        if user_id is None:
            raise SystemExit(f"could not register {user.email}: {dict(setup.ledger.notes)}")
        user.user_id, user.token = user_id, sign_in(state, user.email)
        users.append(user)
    return admin, users


def _products(setup: Client, admin: str, tag: str) -> dict[str, int]:
    """The soak's own products (sku -> units at the start), so its stock balance is its own."""
    skus = {}
    for number in range(PRODUCTS):
        sku = f"SOAK-{tag.upper()}{number}"
        body = {"name": f"Soak product {number}", "unit_amount": 1000 + number, "available": STOCK}
        put = setup.call("setup", "PUT", f"/inventory/{sku}", token=admin, json=body)
        if put is None or put.status_code != 200:
            raise SystemExit(f"could not create {sku}: {getattr(put, 'text', 'no answer')}")
        skus[sku] = STOCK
    return skus


def _faults_injected(state: dict[str, Any]) -> dict[str, Any]:
    """The stack's fault plan and what it injected, per service and kind (`local.faults`)."""
    import requests

    try:
        answer = requests.get(state["emulator_url"] + "/_local/faults", timeout=10)
        return dict(answer.json()) if answer.status_code == 200 else {}
    except (requests.RequestException, ValueError):
        return {}


def figures_of(
    ledger: Ledger, findings: dict[str, Any], elapsed: float, settled: float
) -> dict[str, Any]:
    """Per kind: operations sent and accepted; requests, 5xx, 500, 503, 429, no answer,
    p50/p99 latency; and the findings' counts."""
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({a.kind for a in ledger.attempts} | set(ledger.sent)):
        attempts = [a for a in ledger.attempts if a.kind == kind]
        latencies = sorted(a.latency_s * 1000 for a in attempts)
        statuses = [a.status for a in attempts]
        kinds[kind] = {
            "sent": ledger.sent.get(kind, 0),
            "accepted": ledger.accepted.get(kind, 0),
            "requests": len(attempts),
            "5xx": sum(s >= 500 for s in statuses),
            "500": statuses.count(500),
            "503": statuses.count(503),
            "429": statuses.count(429),
            "no_answer": statuses.count(0),
            "p50_ms": round(_percentile(latencies, 50), 1),
            "p99_ms": round(_percentile(latencies, 99), 1),
        }
    counts = {
        name: sum(len(f.get(name, [])) for k, f in findings.items() if k != "failure_queues")
        for name in (*FAILING, "unexpected", "unacknowledged")
    }
    # messages in dead-letter and failure queues (and the quarantine): each should not be
    counts["parked"] = sum(q["depth"] for q in findings["failure_queues"].values())
    statuses = [a.status for a in ledger.attempts]
    return {
        "kinds": kinds,
        "totals": {
            "operations": sum(ledger.sent.values()),
            "accepted": sum(ledger.accepted.values()),
            "requests": len(statuses),
            "5xx": sum(s >= 500 for s in statuses),
            "500": statuses.count(500),
            "skipped": ledger.skipped,
            **counts,
            "accepted_writes": {
                "users": len(ledger.users),
                "events": len(ledger.events),
                "images": len(ledger.images),
                "orders": len(ledger.orders),
            },
            "load_seconds": round(elapsed, 1),
            "settle_seconds": round(settled, 1),
        },
        "findings": findings,
        "notes": dict(ledger.notes),
        "note_request_ids": dict(ledger.examples),
    }


def failed(figures: dict[str, Any]) -> bool:
    totals = figures["totals"]
    return any(totals[name] for name in (*FAILING, "500"))


def table(figures: dict[str, Any]) -> str:
    header = (
        f"{'kind':<9}{'sent':>6}{'accepted':>9}{'requests':>9}{'5xx':>5}{'500':>5}"
        f"{'503':>5}{'429':>5}{'no ans':>7}{'p50 ms':>8}{'p99 ms':>8}"
    )
    lines = [header]
    for kind, k in figures["kinds"].items():
        lines.append(
            f"{kind:<9}{k['sent']:>6}{k['accepted']:>9}{k['requests']:>9}{k['5xx']:>5}"
            f"{k['500']:>5}{k['503']:>5}{k['429']:>5}{k['no_answer']:>7}"
            f"{k['p50_ms']:>8}{k['p99_ms']:>8}"
        )
    t = figures["totals"]
    lines.append(
        f"operations {t['operations']} ({t['accepted']} accepted, {t['skipped']} skipped) "
        f"in {t['load_seconds']} s; settled in {t['settle_seconds']} s, "
        f"checked in {t['check_seconds']} s"
    )
    lines.append(f"accepted writes: {t['accepted_writes']}")
    lines.append(
        f"lost {t['lost']}, duplicated {t['duplicated']}, unfinished {t['unfinished']}, "
        f"unbalanced {t['unbalanced']}, parked {t['parked']}, 5xx {t['5xx']} (500: {t['500']}); "
        f"unexpected "
        f"outcomes {t['unexpected']}, unacknowledged {t['unacknowledged']}"
    )
    for area, found in figures["findings"].items():
        if area == "failure_queues":
            for name, queue in found.items():
                lines.append(f"  failure queue {name}: {queue['depth']}: {queue['first'][:1]}")
            continue
        for name, items in found.items():
            for item in items[:5]:
                lines.append(f"  {area} {name}: {item}")
            if len(items) > 5:
                lines.append(f"  {area} {name}: ... {len(items) - 5} more")
    if figures.get("not_settled"):
        lines.append(f"not settled after the wait: {figures['not_settled'][:10]}")
    faults = figures.get("faults") or {}
    if faults:
        lines.append(f"faults: {json.dumps(faults, separators=(',', ':'))[:600]}")
    for note, count in figures["notes"].items():
        ids = ", ".join(figures["note_request_ids"].get(note, []))
        lines.append(f"  note x{count}: {note}" + (f" (e.g. {ids})" if ids else ""))
    return "\n".join(lines)


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


@contextlib.contextmanager
def stack_for(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """A running stack's state: the one named, or a new one (stopped afterwards)."""
    if args.api or args.emulator:
        state = json.loads((args.state_dir / "stack.json").read_text())
        state["api_url"] = args.api or state["api_url"]
        state["emulator_url"] = args.emulator or state["emulator_url"]
        yield state
        return
    from local.stack import free_ports, interrupt, spawn

    options: dict[str, Any] = {}
    if args.faults:
        options = {
            "faults": str(args.faults),
            "fault_kinds": args.fault_kinds,
            "fault_seed": args.seed,
        }
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        state_dir = Path(tmp)
        log_path = args.log or state_dir / "stack.log"
        with log_path.open("w") as log:
            process = spawn(
                state_dir,
                *free_ports(2),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **options,
            )
        try:
            yield _ready(process, state_dir, log_path)
        finally:
            interrupt(process)


def _ready(
    process: subprocess.Popen[Any], state_dir: Path, log_path: Path, timeout: float = 90
) -> dict[str, Any]:
    """The new stack's state once its API answers."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(ValueError, KeyError, OSError, requests.RequestException):
            state = json.loads((state_dir / "stack.json").read_text())
            if requests.get(state["api_url"] + "/health", timeout=2).status_code == 200:
                return dict(state)
        time.sleep(0.2)
    log = log_path.read_text(errors="replace")[-3000:]
    raise SystemExit(f"the stack did not start:\n{log}")


if __name__ == "__main__":
    sys.exit(main())
