"""Warm in-process latency: `GET /users/{id}` through the app (chalice.test.Client, moto
in-process) against the one DynamoDB `get_item` the route makes (same client, table, key).

Both run in alternating blocks after a warm-up, so that they share the machine's noise.
"""

from __future__ import annotations

import time

from bench import Result, median, ms, percentile
from bench.inprocess import expect, in_process_app


def run(quick: bool) -> Result:
    iterations, block, warmup = (300, 50, 50) if quick else (2000, 100, 200)
    app_times: list[float] = []
    bare_times: list[float] = []
    with in_process_app() as env:
        from chalicelib.core import aws
        from chalicelib.users import USERS_TABLE
        from chalicelib.users.repository import user_key

        user_id = env.register("latency@example.com")["user_id"]
        path = f"/users/{user_id}"
        http = env.http
        table = USERS_TABLE.name
        key = {"pk": {"S": user_key(user_id)}}
        dynamodb = aws.client("dynamodb")

        def via_app() -> None:
            response = http.get(path)
            if response.status_code != 200:
                expect(response, 200, f"GET {path}")

        def bare() -> None:
            if "Item" not in dynamodb.get_item(TableName=table, Key=key):
                raise RuntimeError("get_item found no item")

        for _ in range(warmup):
            via_app()
            bare()
        perf = time.perf_counter
        for _ in range(iterations // block):
            for fn, times in ((via_app, app_times), (bare, bare_times)):
                for _ in range(block):
                    started = perf()
                    fn()
                    times.append(perf() - started)

    stats = {}
    for name, times in (("app", app_times), ("get_item", bare_times)):
        stats[name] = {
            "n": len(times),
            "median_s": median(times),
            "p99_s": percentile(times, 99),
            "min_s": min(times),
        }
    ratio = stats["app"]["median_s"] / stats["get_item"]["median_s"]
    overhead = stats["app"]["median_s"] - stats["get_item"]["median_s"]
    result = Result("latency", f"Warm in-process latency, {iterations} calls each, interleaved")
    for name, label in (("app", f"GET {'/users/{id}'} via app"), ("get_item", "bare get_item")):
        s = stats[name]
        result.row(label, f"median {ms(s['median_s'])}, p99 {ms(s['p99_s'])}")
    result.row("app overhead (median difference)", ms(overhead))
    result.metrics = {**stats, "ratio_median": ratio, "overhead_median_s": overhead}
    result.check(
        "median ratio app/get_item",
        round(ratio, 2),
        "info: close to 1",
        None,
    )
    result.check("app overhead per request (ms)", round(overhead * 1000, 3), "informational", None)
    return result
