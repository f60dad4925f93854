"""`make lake`: telemetry written straight into the local data lake, as the telemetry
processor archives it, for reports worth reading (and for the analytics benchmark).

Events of the three kinds over the last DAYS days (UTC), each in the archive partition of
its hour; a seeded random generator, so the same arguments write the same objects. The
mix has what the report looks for: sessions of several events, transactions with a few
over the fraud amount and a burst by one user, metrics with some over their alert
thresholds.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core import clock
from chalicelib.telemetry import encoding

METRICS = ("cpu_usage", "memory_usage", "disk_usage", "response_time", "error_rate")
ACTIVITIES = ("login", "view", "click", "search", "logout")


def generate(count: int, days: int, end: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` valid, normalised events spread over the `days` days before `end`."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    users = [f"user-{n:05d}" for n in range(max(count // 20, 10))]
    for n in range(count):
        at = start + timedelta(seconds=rng.random() * span)
        base = {"event_id": f"lake-{seed}-{n}", "timestamp": clock.timestamp(at)}
        kind = rng.random()
        if kind < 0.5:
            user = rng.choice(users)
            yield {**base, "event_type": "user_activity", "user_id": user,
                   "activity_type": rng.choice(ACTIVITIES),
                   "session_id": f"{user}-{at:%Y%m%d%H}"}  # fmt: skip
        elif kind < 0.75:
            amount = round(rng.lognormvariate(4, 1), 2) if rng.random() > 0.002 else 12_500.0
            yield {**base, "event_type": "transaction", "user_id": rng.choice(users),
                   "transaction_id": f"tx-{seed}-{n}", "amount": amount,
                   "currency": rng.choice(("EUR", "EUR", "USD", "GBP")),
                   "status": "failed" if rng.random() < 0.03 else "completed"}  # fmt: skip
        else:
            metric = rng.choice(METRICS)
            value = round(rng.uniform(0, 100 if metric != "response_time" else 6000), 2)
            yield {**base, "event_type": "system_metric", "source": f"api-{n % 4}",
                   "metric_name": metric, "value": value}  # fmt: skip


def write(s3: Any, bucket: str, events: Iterator[dict[str, Any]], per_object: int = 2000) -> int:
    """Archive the events in their hours' partitions, `per_object` per object; returns the
    number of objects written."""
    by_hour: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_hour[event["timestamp"][:13]].append(event)
    written = 0
    for hour, batch in sorted(by_hour.items()):
        arrival = clock.parse(hour + ":00:00Z").timestamp()
        for start in range(0, len(batch), per_object):
            chunk = batch[start : start + per_object]
            key = encoding.archive_key("lake-seed", str(start), str(start + len(chunk)), arrival)
            s3.put_object(Bucket=bucket, Key=key, Body=encoding.archive_body(chunk),
                          ContentEncoding="gzip", ContentType="application/x-ndjson")  # fmt: skip
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from local.provision import STATE_DIR, emulator_client
    from local.stack import running_state

    state = running_state(STATE_DIR)
    if state is None:
        return 1
    s3, outputs = emulator_client(state, "s3"), state["resources"]
    end = clock.now().replace(minute=0, second=0, microsecond=0)
    objects = write(s3, outputs["DataLakeBucketName"], generate(args.events, args.days, end,
                                                                 args.seed))  # fmt: skip
    print(f"{args.events} events in {objects} objects over the {args.days} days before "
          f"{end:%F %H}h UTC. Then: make fire JOB=run_daily_analytics (yesterday's report), "
          "or make query SQL=...")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
