"""`make capacity`: what 1k, 10k and 100k API requests/s, and as many telemetry events/s, need
in AWS, what they cost a month, and the first limit each step reaches.

From the figures the benchmarks measured (bench/footprint.py: AWS calls, capacity units,
own time and log bytes per request and per stream batch, bytes per event on the stream and
in the lake; bench/orders.py: state transitions per order), the stage's settings and the
dated prices and quotas in ops/pricing.py. A Lambda function's duration in AWS is its own
time measured here, scaled by the CPU its memory buys (one vCPU at 1,769 MB), plus each AWS
call it makes at an estimated in-region latency. Concurrency is Little's law: rate x duration.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ops import pricing
from ops.capacity_inputs import (
    INPUTS,
    LATEST,
    NEEDED,
    PROJECT,
    RUN_FIRST,
    Assumptions,
    Figures,
    MissingFigure,
    Settings,
    figures,
    find,
    run_benchmarks,
    settings,
)

SECONDS_PER_HOUR = 3600
GB = 1e9
Q, P = pricing.QUOTAS, pricing.PRICES


def little(rate_per_s: float, duration_s: float) -> float:
    """Little's law: the requests in flight (Lambda concurrency) at a rate and a duration."""
    return rate_per_s * duration_s


def cpu_factor(memory_mb: int, speed_ratio: float = 1.0) -> float:
    """How much longer CPU work takes in a function of `memory_mb` than on one local core."""
    return max(1.0, Q["lambda_mb_per_vcpu"].value / memory_mb) / speed_ratio


def lambda_duration(own_s: float, calls: dict[str, int], memory_mb: int, speed: float) -> float:
    return own_s * cpu_factor(memory_mb, speed) + sum(
        n * pricing.latency(op) for op, n in calls.items()
    )


def shards_needed(bytes_per_s: float, records_per_s: float, read_bytes_per_s: float = 0.0,
                  headroom: float = 1.0) -> int:  # fmt: skip
    """Provisioned shards: writes (1 MiB/s or 1,000 records/s each), reads (2 MiB/s)."""
    need = max(bytes_per_s / Q["kinesis_shard_write_bytes"].value,
               records_per_s / Q["kinesis_shard_write_records"].value,
               read_bytes_per_s / Q["kinesis_shard_read_bytes"].value)  # fmt: skip
    return max(1, math.ceil(round(need * headroom, 9)))


def first_limit(limits: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The limit met first as the rate grows: the highest use (demand / limit), if >= 1."""
    worst = max(limits, key=lambda item: item["use"], default=None)
    return worst if worst is not None and worst["use"] >= 1 else None


def _limit(name: str, demand: float, limit: float, lift: str) -> dict[str, Any]:
    use = demand / limit if limit else (math.inf if demand else 0.0)
    return {"name": name, "demand": demand, "limit": limit, "use": use, "lift": lift}


def athena_billed(day_bytes: float, reads: int, queries: int) -> float:
    """Bytes Athena bills for one daily report: each query at least its 10 MB minimum; the
    reads beyond one per query are one query's (`daily` reads its day twice)."""
    if not day_bytes or queries < 1:
        return 0.0
    least = P["athena_min_bytes_per_query"].value
    extra = max(0, reads - queries)
    return (queries - 1) * max(day_bytes, least) + max((1 + extra) * day_bytes, least)


def step(kind: str, rate: float, f: Figures, s: Settings, a: Assumptions) -> dict[str, Any]:
    """One step: `kind` "api" (rate = API requests/s) or "events" (rate = events/s)."""
    month_s = a.hours_per_month * SECONDS_PER_HOUR
    api_mem = s.memory_mb.get("api_handler", 512)
    fns: dict[str, dict[str, float]] = {}  # function -> invocations/s, duration, memory

    def add(fn: str, rate_s: float, duration: float, memory: int) -> None:
        entry = fns.setdefault(fn, {"rate": 0.0, "busy": 0.0, "memory": memory})
        entry["rate"] += rate_s
        entry["busy"] += little(rate_s, duration)

    wcu: dict[str, float] = {}
    rcu: dict[str, float] = {}
    shared_writes = log_bytes = 0.0
    requests: dict[str, float] = {}
    if kind == "api":
        requests = {route: rate * share for route, share in a.api_mix.items()}
    else:
        requests = {"POST /events": rate / a.events_per_request}
    for route, r in requests.items():
        info = f.routes["POST /events (1)" if route == "POST /events" else route]
        own = info["own_s"]
        if route == "POST /events":
            own = f.events_own_fixed_s + f.events_own_per_event_s * a.events_per_request
        add("api_handler", r, lambda_duration(own, info["calls"], api_mem, a.cpu_speed_ratio),
            api_mem)  # fmt: skip
        for table, units in info["wcu_by_table"].items():
            wcu[table_name(table)] = wcu.get(table_name(table), 0.0) + r * units
        for table, units in info["rcu_by_table"].items():
            rcu[table_name(table)] = rcu.get(table_name(table), 0.0) + r * units
        shared_writes = max(shared_writes, r * info["shared_key_max_wcu"])
        log_bytes += r * info["log_bytes"]
    api_rps = sum(requests.values())
    orders = requests.get("POST /orders", 0.0)
    for task in f.task_functions if orders else []:  # the workflow's Lambda tasks
        task_mem = s.memory_mb.get(task, 512)
        add(task, orders, lambda_duration(f.task_own_s, {"dynamodb.UpdateItem": a.task_calls},
                                          task_mem, a.cpu_speed_ratio), task_mem)  # fmt: skip
        wcu["orders"] = wcu.get("orders", 0.0) + orders * a.task_wcu
    transitions = orders * f.transitions_per_order

    events = rate if kind == "events" else 0.0
    b = f.batch
    stream_bytes = events * b["stream_bytes_per_event"]
    needed = shards_needed(stream_bytes, events, stream_bytes * a.stream_consumers,
                           a.shard_headroom) if events else 0  # fmt: skip
    shards = max(needed, s.shard_count) if events else 0  # the stream has at least its own
    per_shard = events / shards if shards else 0.0
    batch = min(s.batch_size, max(1.0, per_shard * s.batch_window_s)) if events else 0.0
    invocations = (events / batch) if events else 0.0
    proc_mem = s.memory_mb.get("process_telemetry", 512)
    scale = batch / b["records"] if events else 0.0
    proc_calls = {op: n * scale for op, n in b["calls"].items()}
    proc_s = lambda_duration(b["own_s"] * scale, proc_calls, proc_mem, a.cpu_speed_ratio)
    if events:
        add("process_telemetry", invocations, proc_s, proc_mem)
        for table, units in b["wcu_by_table"].items():
            wcu[table_name(table)] = wcu.get(table_name(table), 0.0) + invocations * units * scale
        for table, units in b["rcu_by_table"].items():
            rcu[table_name(table)] = rcu.get(table_name(table), 0.0) + invocations * units * scale
        shared_writes = max(shared_writes, invocations * b["shared_key_max_wcu"])
        log_bytes += invocations * b["log_bytes"]
    shard_rate = batch / proc_s if events else math.inf  # records/s one shard's batches carry
    puts = invocations * b["put_objects"]
    lake_per_day = events * 86_400 * b["lake_bytes_per_event"]
    scanned_per_day = lake_per_day * a.report_reads_of_day
    athena_per_day = athena_billed(lake_per_day, a.report_reads_of_day, a.report_queries)

    concurrency = sum(fn["busy"] for fn in fns.values())
    gb_s = sum(fn["busy"] * fn["memory"] / 1024 for fn in fns.values()) * month_s
    invocations_month = sum(fn["rate"] for fn in fns.values()) * month_s
    kinesis_provisioned = (shards * a.hours_per_month * P["kinesis_shard_hour"].value
                           + events * month_s * max(1, math.ceil(b["stream_bytes_per_event"]
                                                                 / 25_600))
                           * P["kinesis_put_unit"].value) if events else 0.0  # fmt: skip
    kb_in = events * month_s * max(1, math.ceil(b["stream_bytes_per_event"] / 1024))
    kinesis_on_demand = (a.hours_per_month * P["kinesis_on_demand_stream_hour"].value
                         + kb_in * 1024 / GB * P["kinesis_on_demand_gb_in"].value
                         + stream_bytes * month_s * a.stream_consumers / GB
                         * P["kinesis_on_demand_gb_out"].value) if events else 0.0  # fmt: skip
    cost = {
        "api_gateway": P["api_gateway_rest"].cost(api_rps * month_s),
        "lambda": invocations_month * P["lambda_request"].value + P["lambda_gb_s"].cost(gb_s),
        "dynamodb": month_s * (sum(wcu.values()) * P["dynamodb_wru"].value
                               + sum(rcu.values()) * P["dynamodb_rru"].value),
        "kinesis": kinesis_provisioned,
        "step_functions": transitions * month_s * P["sfn_transition"].value,
        "s3": puts * month_s * P["s3_put"].value
        + lake_per_day * 30 / GB * P["s3_storage_gb_month"].value,
        "athena": 30 * athena_per_day / 1e12 * P["athena_tb_scanned"].value,
        "logs": log_bytes * month_s / GB * P["logs_gb_ingested"].value,
    }  # fmt: skip
    cost["total"] = sum(cost.values())
    busiest_w = max(wcu.items(), key=lambda kv: kv[1], default=("-", 0.0))
    busiest_r = max(rcu.items(), key=lambda kv: kv[1], default=("-", 0.0))
    limits = [
        _limit("API stage throttle (ApiThrottlingRateLimit)", api_rps, s.api_rate_limit,
               "raise ApiThrottlingRateLimit/BurstLimit in infra/resources.json StageSettings"),
        _limit("API Gateway account throttle", api_rps, Q["api_gateway_rps"].value,
               "quota increase: Service Quotas L-8A5B8E43 (10,000 rps, burst 5,000)"),
        _limit("Lambda account concurrency", concurrency, Q["lambda_account_concurrency"].value,
               "quota increase: Service Quotas L-B99A9384"),
        _limit(f"DynamoDB table write ({busiest_w[0]})", busiest_w[1],
               Q["dynamodb_table_wcu"].value, "raise the table's on-demand maximum (quota)"),
        _limit(f"DynamoDB table read ({busiest_r[0]})", busiest_r[1],
               Q["dynamodb_table_rcu"].value, "raise the table's on-demand maximum (quota)"),
        _limit("DynamoDB partition (a key every request writes)", shared_writes,
               Q["dynamodb_partition_wcu"].value, "write sharding of the key (key#0..n)"),
        _limit("Step Functions StartExecution", orders, Q["sfn_start_execution_rps"].value,
               "quota increase (Step Functions StartExecution throttle)"),
        _limit("Step Functions state transitions", transitions, Q["sfn_transitions_rps"].value,
               "quota increase (StateTransition), or an Express workflow"),
        _limit("Kinesis stream shards (ShardCount)", needed, max(1, s.shard_count),
               "UpdateShardCount (ShardCount in infra/resources.json) or on-demand mode"),
        _limit("Kinesis shards per region", needed, Q["kinesis_shards_per_region"].value,
               "quota increase, or on-demand mode"),
        _limit("Stream processing per shard (batch / duration)", per_shard, shard_rate,
               "ParallelizationFactor (up to 10) on the event source mapping, or more shards"),
        _limit("S3 PUT per prefix (archive)", puts, Q["s3_put_per_prefix"].value,
               "spread archive keys over more prefixes"),
        *(_limit(f"Lambda reserved concurrency ({fn})", fns.get(fn, {}).get("busy", 0.0),
                 reserved, f"raise reserved_concurrency of {fn} (stage {a.stage}) in "
                 ".chalice/config.json")
          for fn, reserved in sorted(s.reserved_concurrency.items())),
    ]  # fmt: skip
    return {
        "kind": kind, "rate": rate, "api_rps": api_rps, "orders_per_s": orders,
        "functions": {name: {"invocations_per_s": fn["rate"], "concurrency": fn["busy"],
                             "memory_mb": fn["memory"]} for name, fn in fns.items()},
        "lambda_concurrency": concurrency, "gb_s_per_month": gb_s,
        "ramp_s": 10 * math.ceil(max((fn["busy"] for fn in fns.values()), default=0)
                                 / Q["lambda_scaling_per_10s"].value),
        "dynamodb_wcu_per_s": wcu, "dynamodb_rcu_per_s": rcu,
        "hot_key_wcu_per_s": shared_writes, "shards": shards, "shards_needed": needed,
        "batch_records": batch,
        "processor_duration_s": proc_s if events else 0.0,
        "stream_bytes_per_s": stream_bytes, "transitions_per_s": transitions,
        "s3_puts_per_s": puts, "lake_bytes_per_day": lake_per_day,
        "athena_bytes_per_report": scanned_per_day,
        "athena_billed_bytes_per_report": athena_per_day, "log_bytes_per_s": log_bytes,
        "kinesis_on_demand_usd": kinesis_on_demand, "cost_usd_per_month": cost,
        "limits": sorted(limits, key=lambda item: -item["use"]),
        "first_limit": first_limit(limits),
    }  # fmt: skip


def model(f: Figures, s: Settings, a: Assumptions) -> list[dict[str, Any]]:
    return [step(kind, rate, f, s, a) for kind in ("api", "events") for rate in a.steps]


def reached(steps: list[dict[str, Any]]) -> list[tuple[str, tuple[float, str, bool]]]:
    """Each limit's rate of arrival, lowest first: from the first step that reaches it
    (step rate / use there), else extrapolated linearly from the last step."""
    found: dict[str, tuple[float, str, bool]] = {}
    for st in steps:
        for item in st["limits"]:
            if item["use"] >= 1 and item["name"] not in found:
                found[item["name"]] = (st["rate"] / item["use"], item["lift"], False)
    for item in steps[-1]["limits"] if steps else []:
        if 0 < item["use"] < 1 and item["name"] not in found:
            found[item["name"]] = (steps[-1]["rate"] / item["use"], item["lift"], True)
    return sorted(found.items(), key=lambda kv: kv[1][0])


def table_name(name: str) -> str:
    """`serverless-app-dev-users` -> `users`: the footprint ran the dev stage's tables."""
    return re.sub(r"^serverless-app-[a-z0-9]+-", "", name)


def _n(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2f}"


def render(steps: list[dict[str, Any]], f: Figures, s: Settings, a: Assumptions) -> str:
    out = ["Assumptions (ops/capacity_inputs.py; change with ARGS=...):"]
    for name, value in asdict(a).items():
        out.append(f"  {name} = {value}")
    out.append(
        f"  figures: {f.sources['footprint']}; transitions/order {f.transitions_per_order}"
        f" ({f.transitions_source}); Lambda tasks/order {f.tasks_per_order}"
    )
    out.append(f"  stage {a.stage}: memory {s.memory_mb.get('api_handler')} MB API, "
               f"{s.memory_mb.get('process_telemetry')} MB processor; batch {s.batch_size} "
               f"records / {s.batch_window_s:g} s; {s.shard_count} shards; API throttle "
               f"{s.api_rate_limit:g} rps")  # fmt: skip
    out.append(f"  memory: {f.memory_note}")
    out.append(
        f"  prices and quotas: {pricing.REGION}, checked {pricing.CHECKED_ON} "
        "(ops/pricing.py: each with its source and date); AWS call latencies estimated"
    )
    head = (
        "step",
        "API rps",
        "Lambda conc",
        "shards needed",
        "WCU/s",
        "RCU/s",
        "SFN tr/s",
        "S3 PUT/s",
        "Athena GB/rep",
        "$/month",
        "first limit reached (how to lift each: below)",
    )
    rows = []
    for st in steps:
        label = f"{st['rate'] / 1000:g}k {'req/s' if st['kind'] == 'api' else 'events/s'}"
        hit = st["first_limit"]
        more = sum(1 for item in st["limits"] if item["use"] >= 1) - 1
        limit = (
            f"{hit['name']}: {_n(hit['demand'])} of {_n(hit['limit'])}"
            + (f" (+{more} more)" if more > 0 else "")
            if hit
            else f"none (nearest: {st['limits'][0]['name']} {st['limits'][0]['use']:.0%})"
        )
        rows.append((label, _n(st["api_rps"]), _n(st["lambda_concurrency"]),
                     str(st["shards_needed"]),
                     _n(sum(st["dynamodb_wcu_per_s"].values())),
                     _n(sum(st["dynamodb_rcu_per_s"].values())), _n(st["transitions_per_s"]),
                     _n(st["s3_puts_per_s"]), _n(st["athena_bytes_per_report"] / GB),
                     f"{st['cost_usd_per_month']['total']:,.0f}", limit))  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:-1], widths[1:], strict=True)
        ]
        out.append("  ".join([*cells, r[-1]]))
    parts = list(steps[0]["cost_usd_per_month"])
    out.append("")
    out.append("Cost per month (USD) by component:")
    out.append("  ".join(["step".ljust(widths[0])] + [p.rjust(10) for p in parts]))
    for st, r in zip(steps, rows, strict=True):
        costs = st["cost_usd_per_month"]
        out.append("  ".join([r[0].ljust(widths[0])] + [f"{costs[p]:>10,.0f}" for p in parts]))
    out.append("")
    out.append("Limits in the order a growing rate meets them (the lowest rate of each):")
    for kind in ("api", "events"):
        unit = "req/s" if kind == "api" else "events/s"
        for name, (rate, lift, beyond) in reached([st for st in steps if st["kind"] == kind]):
            note = " (beyond the steps: linear)" if beyond else ""
            out.append(f"  {kind:<6} {rate:>12,.0f} {unit:<8} {name} -> {lift}{note}")
    return "\n".join(out)


def finite(value: Any) -> Any:
    """JSON has no infinity: an unbounded figure (the last price tier, no limit) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.capacity", description=__doc__)
    parser.add_argument(
        "--bench",
        type=Path,
        action="append",
        help=f"benchmark JSON (default: {LATEST.name} and {INPUTS.name})",
    )
    parser.add_argument(
        "--no-run", action="store_true", help="never run a benchmark; fail with what to run instead"
    )
    parser.add_argument("--json", type=Path, default=PROJECT / "out" / "capacity.json")
    parser.add_argument("--stage", default=Assumptions.stage)
    parser.add_argument("--mix", help='API mix, e.g. "GET /users/{id}=0.9,POST /orders=0.1"')
    parser.add_argument("--events-per-request", type=int, default=Assumptions.events_per_request)
    parser.add_argument("--cpu-speed-ratio", type=float, default=Assumptions.cpu_speed_ratio)
    args = parser.parse_args(argv)  # fmt: skip
    a = Assumptions(stage=args.stage, events_per_request=args.events_per_request,
                    cpu_speed_ratio=args.cpu_speed_ratio)  # fmt: skip
    if args.mix:
        try:
            pairs = [item.rsplit("=", 1) for item in args.mix.split(",")]
            a.api_mix = {route.strip(): float(share) for route, share in pairs}
        except ValueError:
            parser.error('--mix: "ROUTE=share,ROUTE=share", e.g. "GET /users/{id}=1"')
    if not 1 <= a.events_per_request <= 500:
        parser.error("--events-per-request: 1 to 500")
    paths = tuple(args.bench or (LATEST, INPUTS))
    if not args.bench and not args.no_run and any(find(n, paths) is None for n in NEEDED):
        run_benchmarks(RUN_FIRST, INPUTS)  # cold_start is optional: judge by what is there
        if any(find(n, paths) is None for n in NEEDED):
            print(f"[capacity] the benchmark failed; see `make bench ONLY={','.join(NEEDED)}"
                  " QUICK=1`", file=sys.stderr)  # fmt: skip
            return 1
    try:
        try:
            f = figures(paths, a.api_mix)
        except MissingFigure as missing:
            if args.bench or args.no_run or not missing.remeasure:
                raise
            run_benchmarks(RUN_FIRST, INPUTS)  # results from before a figure was measured
            f = figures(paths, a.api_mix)
        s = settings(a.stage)
    except MissingFigure as error:
        print(f"[capacity] {error}", file=sys.stderr)
        return 2
    except KeyError as error:
        print(f"[capacity] no stage setting {error} for stage {a.stage!r}", file=sys.stderr)
        return 2
    steps = model(f, s, a)
    print(render(steps, f, s, a))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {"assumptions": asdict(a), "settings": asdict(s), "figures": asdict(f),
                "constants": {k: asdict(v) for k, v in pricing.every_constant().items()},
                "steps": steps}  # fmt: skip
    args.json.write_text(json.dumps(finite(document), indent=2, default=str) + "\n")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
