"""`make load`: realistic mixed telemetry traffic to `POST /events` on the running local stack.

Sends batches of user activity, system metrics and transactions from a few sources and
users, with the occasional CPU spike, a transaction over 10,000, a burst of rapid
transactions and a malformed event, then shows what came of it: the events accepted and
refused, the anomaly alerts published (read from a queue subscribed to the alerts topic) and
the archives written to the data lake.

    make load                       # 20 batches of 100 events
    make load ARGS="--batches 50 --size 500 --seed 7"
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from chalicelib.core import clock
from local.inbox import drain, subscribe_inbox
from local.provision import STATE_DIR, emulator_client

SOURCES = ["web-1", "web-2", "api-1", "worker-1"]
#: Metric -> its normal range.
METRICS = {
    "cpu_usage": (20, 60),
    "memory_usage": (30, 70),
    "disk_usage": (40, 60),
    "response_time": (80, 400),
    "error_rate": (0, 2),
    "request_count": (800, 1200),
}
ACTIVITIES = ["login", "logout", "page_view", "search", "purchase"]
MERCHANTS = ["acme", "globex", "initech", "umbrella"]


def now() -> str:
    return clock.timestamp()


def make_event(rng: random.Random, users: list[str]) -> dict[str, Any]:
    """One event of a realistic mix; about 1 in 50 is anomalous, 1 in 100 malformed."""
    roll = rng.random()
    if roll < 0.01:
        return {"event_type": "system_metric", "source": "web-1", "metric_name": "cpu_usage",
                "value": "very high", "timestamp": now()}  # fmt: skip
    kind = rng.choices(["user_activity", "system_metric", "transaction"], [5, 3, 2])[0]
    if kind == "user_activity":
        return {"event_type": kind, "user_id": rng.choice(users), "timestamp": now(),
                "activity_type": rng.choice(ACTIVITIES), "session_id": uuid.uuid4().hex,
                "ip_address": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"}  # fmt: skip
    if kind == "system_metric":
        metric = rng.choice(list(METRICS))
        low, high = METRICS[metric]
        value = rng.uniform(low, high)
        if roll > 0.98:  # a spike or a threshold crossed
            value = {"cpu_usage": 97.0, "memory_usage": 96.0, "error_rate": 12.0}.get(
                metric, value * 5
            )
        return {"event_type": kind, "source": rng.choice(SOURCES), "metric_name": metric,
                "value": round(value, 2), "timestamp": now()}  # fmt: skip
    amount = round(rng.uniform(5, 300), 2) if roll < 0.98 else 12_500.0
    return {"event_type": kind, "transaction_id": uuid.uuid4().hex, "user_id": rng.choice(users),
            "amount": amount, "currency": "EUR", "merchant": rng.choice(MERCHANTS),
            "timestamp": now(), "status": "completed"}  # fmt: skip


def rapid_transactions(user: str, count: int = 7) -> list[dict[str, Any]]:
    """A burst that the fraud velocity rule (more than 5 in 10 minutes) must catch."""
    return [
        {
            "event_type": "transaction",
            "transaction_id": uuid.uuid4().hex,
            "user_id": user,
            "amount": 20.0,
            "currency": "EUR",
            "merchant": "acme",
            "timestamp": now(),
        }
        for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--size", type=int, default=100, help="events per request (1-500)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--wait", type=float, default=8.0, help="seconds to wait for results")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)

    import requests

    from local.stack import running_state
    from local.token import issue_token

    state = running_state(args.state_dir)
    if state is None:
        return 1
    # An admin: it sends many users' events and system metrics (POST /events takes only a
    # caller's own events from a user, and metrics from a machine identity or an admin).
    token = issue_token(state, "load@example.com", admin=True, id_token=False)
    alerts = _subscribe_to_alerts(state)
    rng = random.Random(args.seed)
    users = [f"user-{n:04d}" for n in range(2000)]  # few reach the velocity rule by chance
    totals = {"sent": 0, "accepted": 0, "rejected": 0}
    reasons: dict[str, int] = {}
    started = time.perf_counter()
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        for n in range(args.batches):
            events = [make_event(rng, users) for _ in range(args.size)]
            if n == 0:
                burst = rapid_transactions("user-rapid")
                events[: len(burst)] = burst
            response = http.post(f"{state['api_url']}/events", json={"events": events}, timeout=30)
            if response.status_code == 429:  # the caller's events per minute: wait, send again
                time.sleep(float(response.headers.get("Retry-After", "1")))
                response = http.post(
                    f"{state['api_url']}/events", json={"events": events}, timeout=30
                )
            body = response.json()
            totals["sent"] += len(events)
            totals["accepted"] += body.get("accepted", 0)
            totals["rejected"] += body.get("rejected", 0)
            for result in body.get("results", []):
                if not result.get("accepted"):
                    reason = str(result.get("reason"))[:80]
                    reasons[reason] = reasons.get(reason, 0) + 1
    elapsed = time.perf_counter() - started
    print(f"sent {totals['sent']} events in {args.batches} requests in {elapsed:.1f} s "
          f"({totals['sent'] / elapsed:.0f} events/s): {totals['accepted']} accepted, "
          f"{totals['rejected']} refused")  # fmt: skip
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  refused x{count}: {reason}")
    time.sleep(args.wait)
    received = _drain(state, alerts)
    kinds: dict[str, int] = {}
    for alert in received:
        key = f"{alert.get('type')} ({alert.get('severity')})"
        kinds[key] = kinds.get(key, 0) + 1
    print(f"anomaly alerts published: {len(received)}")
    for key, count in sorted(kinds.items()):
        print(f"  {key}: {count}")
    s3 = emulator_client(state, "s3")
    bucket = state["environment"]["DATA_LAKE_BUCKET_NAME"]
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="telemetry/").get("Contents", [])
    ]
    print(f"archives in s3://{bucket}/telemetry/: {len(keys)}")
    for key in keys[-3:]:
        print(f"  {key}")
    return 0


def _subscribe_to_alerts(state: dict[str, Any]) -> str:
    sqs, sns = emulator_client(state, "sqs"), emulator_client(state, "sns")
    return subscribe_inbox(sqs, sns, state["resources"]["AnomalyAlertsTopicArn"], "load-alerts")


def _drain(state: dict[str, Any], url: str) -> list[dict[str, Any]]:
    sqs = emulator_client(state, "sqs")
    found = drain(sqs, url)
    sqs.delete_queue(QueueUrl=url)
    return found


if __name__ == "__main__":
    sys.exit(main())
