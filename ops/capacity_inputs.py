"""The capacity model's inputs: the figures the benchmarks measured (bench/results/*.json),
the stage's settings (infra/resources.json, .chalice/config.json) and the assumptions, each a
named parameter with its default, so the table says what it rests on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "bench" / "results"
LATEST = RESULTS / "latest.json"
#: Where `make capacity` writes the benchmarks it runs itself (latest.json is left alone).
INPUTS = RESULTS / "capacity-inputs.json"
NEEDED = ("footprint",)  # the benchmark nearly every figure comes from
#: What `make capacity` measures when NEEDED is missing: cold_start adds the memory figure.
RUN_FIRST = ("footprint", "cold_start")
ROUTE_KEYS = ("own_s", "calls", "wcu", "rcu", "wcu_by_table", "rcu_by_table", "log_bytes",
              "shared_key_max_writes", "shared_key_max_wcu")  # fmt: skip
BATCH_KEYS = (*ROUTE_KEYS, "stream_bytes_per_event", "lake_bytes_per_event", "put_objects",
              "records")  # fmt: skip


class MissingFigure(Exception):
    """A figure the model needs is not in the benchmark results (the message says which and
    how to measure it); `remeasure`: whether running the benchmark again may give it."""

    def __init__(self, message: str, remeasure: bool = True) -> None:
        super().__init__(message)
        self.remeasure = remeasure


@dataclass
class Assumptions:
    """What the model cannot measure here; every one is printed above the table."""

    stage: str = "prod"
    #: Share of each API route in "API requests/s" (POST /events is the events/s scenarios).
    api_mix: dict[str, float] = field(default_factory=lambda: {
        "GET /users/{id}": 0.85, "PUT /users/{id}": 0.10, "POST /orders": 0.05})  # fmt: skip
    #: Events per POST /events request (1 to 500; the footprint measured 1 and 25).
    events_per_request: int = 25
    #: A Lambda vCPU's speed over one core of the machine that ran the benchmarks.
    cpu_speed_ratio: float = 1.0
    #: AWS calls each order workflow task makes (DynamoDB UpdateItem-like), and its WCU.
    task_calls: int = 2
    task_wcu: float = 2.0
    #: Times the daily report reads the day's lake objects: its queries (chalicelib.analytics
    #: .queries.QUERY_NAMES) plus one, `daily` reading its day twice (bench analytics).
    report_reads_of_day: int = 7
    #: The daily report's queries (QUERY_NAMES): Athena bills each at least 10 MB.
    report_queries: int = 6
    hours_per_month: float = 730.0
    #: A provisioned stream's shards are sized with this headroom over the average rate.
    shard_headroom: float = 1.0
    #: Kinesis consumers of the stream (each reads every byte; enhanced fan-out not used).
    stream_consumers: int = 1
    steps: tuple[int, ...] = (1_000, 10_000, 100_000)


@dataclass
class Settings:
    """The stage's own settings the model checks as limits and uses for sizes."""

    memory_mb: dict[str, int]
    batch_size: int
    batch_window_s: float
    shard_count: int
    api_rate_limit: float
    api_burst_limit: float
    parallelization_factor: int = 1
    #: Functions with `reserved_concurrency` in .chalice/config.json: their ceiling.
    reserved_concurrency: dict[str, int] = field(default_factory=dict)


@dataclass
class Figures:
    routes: dict[str, dict[str, Any]]
    events_own_fixed_s: float
    events_own_per_event_s: float
    batch: dict[str, Any]
    transitions_per_order: int
    tasks_per_order: int
    #: The Lambda functions the success path's Task states invoke, in order.
    task_functions: list[str]
    transitions_source: str
    task_own_s: float
    sources: dict[str, str]
    memory_note: str = (
        "not measured here (make bench ONLY=cold_start): GB-s use the configured sizes"
    )


def settings(stage: str) -> Settings:
    template = json.loads((PROJECT / "infra" / "resources.json").read_text())
    values = template["Mappings"]["StageSettings"][stage]
    config = json.loads((PROJECT / ".chalice" / "config.json").read_text())
    default = int(config["stages"][stage].get("lambda_memory_size",
                                              config.get("lambda_memory_size", 128)))  # fmt: skip
    functions = config["stages"][stage].get("lambda_functions", {})
    memory = {name: int(spec.get("lambda_memory_size", default))
              for name, spec in functions.items()}  # fmt: skip
    memory.setdefault("api_handler", default)
    reserved_default = config["stages"][stage].get("reserved_concurrency",
                                                   config.get("reserved_concurrency"))  # fmt: skip
    reserved = {name: int(spec.get("reserved_concurrency", reserved_default))
                for name, spec in {"api_handler": {}, **functions}.items()
                if spec.get("reserved_concurrency", reserved_default) is not None}  # fmt: skip
    stream = template["Resources"]["TelemetryStream"]["Properties"]
    return Settings(
        memory_mb=memory,
        batch_size=int(values["TelemetryBatchSize"]),
        batch_window_s=float(values["TelemetryBatchWindowSeconds"]),
        shard_count=int(stream.get("ShardCount", 1)),
        api_rate_limit=float(values["ApiThrottlingRateLimit"]),
        api_burst_limit=float(values["ApiThrottlingBurstLimit"]),
        reserved_concurrency=reserved,
    )


def _next(state: dict[str, Any]) -> list[str]:
    """Where a state goes without an error: its Next, or a Choice's rules in order and then
    its Default (Catch handlers are not followed)."""
    if state["Type"] == "Choice":
        return [rule["Next"] for rule in state.get("Choices", [])] + (
            [state["Default"]] if "Default" in state else [])  # fmt: skip
    return [state["Next"]] if "Next" in state else []


def success_path(definition: dict[str, Any]) -> list[str]:
    """The states from StartAt to a Succeed state (or an End) following Next, each Choice's
    rules and its Default: of every such way, the one through the fewest states an error
    handler (Catch) also leads to, since refusals and compensations end in those (a refusal
    may end in a Succeed state too); of equals, the first by Choice rule order."""
    states = definition["States"]
    handled: set[str] = set()
    todo = [c["Next"] for s in states.values() for c in s.get("Catch", [])]
    while todo:
        if (name := todo.pop()) not in handled:
            handled.add(name)
            todo += _next(states[name])
    ways: list[list[str]] = []
    stack = [[definition["StartAt"]]]
    while stack:
        path = stack.pop()
        state = states[path[-1]]
        if state["Type"] == "Succeed" or (state.get("End") and state["Type"] != "Fail"):
            ways.append(path)
        stack += [[*path, after] for after in reversed(_next(state)) if after not in path]
    if not ways:
        raise RuntimeError("OrderWorkflow has no way from StartAt to a Succeed state")
    return min(ways, key=lambda way: sum(1 for name in way if name in handled))


def lambda_tasks(definition: dict[str, Any], substitutions: dict[str, Any],
                 path: list[str]) -> list[str]:  # fmt: skip
    """The Lambda functions the Task states on `path` invoke: a Resource (or a lambda:invoke
    FunctionName) that is a `${Name}` substitution for a function ARN; service integrations
    such as `arn:aws:states:::sns:publish` are not Lambda."""
    out = []
    for name in path:
        state = definition["States"][name]
        if state["Type"] != "Task":
            continue
        target = state.get("Resource", "")
        if target.startswith("arn:aws:states:::lambda:invoke"):
            target = str(state.get("Parameters", {}).get("FunctionName", ""))
        match = re.fullmatch(r"\$\{(\w+)\}", target)
        value = substitutions.get(match[1]) if match else None
        arn = value.get("Fn::Sub", "") if isinstance(value, dict) else str(value or "")
        arn = arn[0] if isinstance(arn, list) else arn
        if ":lambda:" in arn and ":function:" in arn:
            out.append(re.sub(r"^.*\$\{Stage\}-", "", arn.rsplit(":function:", 1)[1]))
    return out


def workflow_path() -> tuple[int, list[str]]:
    """(states, Lambda functions invoked) on OrderWorkflow's success path."""
    template = json.loads((PROJECT / "infra" / "resources.json").read_text())
    workflow = template["Resources"]["OrderWorkflow"]["Properties"]
    path = success_path(workflow["Definition"])
    functions = lambda_tasks(workflow["Definition"], workflow.get("DefinitionSubstitutions", {}),
                             path)  # fmt: skip
    return len(path), functions


def _ok(path: Path, name: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())["benchmarks"].get(name)
    except (ValueError, KeyError, TypeError):
        return None
    return entry if entry and entry.get("status") == "ok" else None


def find(name: str, paths: tuple[Path, ...]) -> tuple[dict[str, Any], Path] | None:
    """The newest ok result of benchmark `name` among `paths` (by file time)."""
    found = [(p.stat().st_mtime, p, e) for p in paths if (e := _ok(p, name)) is not None]
    if not found:
        return None
    _, path, entry = max(found, key=lambda item: item[0])
    return entry, path


def _need(mapping: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise MissingFigure(
            f"{where} lacks {', '.join(missing)}: measure it again with "
            "`make bench ONLY=footprint QUICK=1` (or run `make capacity` without NO_RUN)"
        )


def figures(paths: tuple[Path, ...], mix: dict[str, float]) -> Figures:
    """The model's figures from the newest footprint (and orders, if any) results."""
    found = find("footprint", paths)
    if found is None:
        listed = ", ".join(str(p) for p in paths)
        raise MissingFigure(f"no footprint benchmark result in {listed}: run "
                            "`make bench ONLY=footprint QUICK=1` (about 15 s)")  # fmt: skip
    entry, path = found
    metrics = entry.get("metrics", {})
    _need(metrics, ("routes", "telemetry_batch", "post_events_own_s_fixed",
                    "post_events_own_s_per_event"), f"footprint in {path}")  # fmt: skip
    routes = metrics["routes"]
    for route in [*mix, "POST /events (1)"]:
        if route not in routes:
            raise MissingFigure(f"footprint in {path} has no route {route!r}: it measures "
                                f"{', '.join(routes)}", remeasure=False)  # fmt: skip
        _need(routes[route], ROUTE_KEYS, f"footprint route {route!r} in {path}")
    _need(metrics["telemetry_batch"], BATCH_KEYS, f"footprint telemetry_batch in {path}")
    states, task_functions = workflow_path()
    transitions, source = states, "the success path's states in infra/resources.json"
    orders = find("orders", paths)
    if orders is not None:
        paths_measured = orders[0].get("metrics", {}).get("paths", {})
        success = next((p for label, p in paths_measured.items()
                        if label.startswith("success")), None)  # fmt: skip
        if success and "billed" in success:
            transitions = int(success["billed"])
            source = f"measured: bench orders, success path ({orders[1].name})"
    memory = "not measured (make bench ONLY=cold_start): GB-s use the configured sizes"
    cold = find("cold_start", paths)
    medians = cold[0].get("metrics", {}).get("medians", {}) if cold else {}
    rss = medians.get("app_first_client", {}).get("rss_kb")
    if rss:
        memory = (f"app.py and its first client peak at {rss / 1024:.0f} MB RSS (bench "
                  "cold_start); GB-s use the configured sizes (set for CPU)")  # fmt: skip
    return Figures(
        memory_note=memory,
        routes=routes,
        events_own_fixed_s=float(metrics["post_events_own_s_fixed"]),
        events_own_per_event_s=float(metrics["post_events_own_s_per_event"]),
        batch=metrics["telemetry_batch"],
        transitions_per_order=transitions,
        tasks_per_order=len(task_functions),
        task_functions=task_functions,
        transitions_source=source,
        task_own_s=float(routes["GET /users/{id}"]["own_s"]),
        sources={"footprint": f"{path.name}, measured on {_machine(entry)}"},
    )  # fmt: skip


def _machine(entry: dict[str, Any]) -> str:
    machine = entry.get("machine", {})
    load = " ".join(f"{v:.2f}" for v in machine.get("load_average_at_start", []))
    return f"{machine.get('cpu_count', '?')} cores at load {load or '?'}"


def run_benchmarks(names: tuple[str, ...], output: Path) -> int:
    """`python -m bench --quick --only ...` into `output` (latest.json is left alone)."""
    command = [sys.executable, "-m", "bench", "--quick", "--only", ",".join(names),
               "--output", str(output)]  # fmt: skip
    print(f"[capacity] measuring first: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=PROJECT, stdout=subprocess.DEVNULL, check=False)
    return done.returncode
