"""`python -m bench [--quick] [--only NAME ...]`: run the benchmarks, print a table, write
bench/results/latest.json. Exit 0 when every benchmark ran (targets missed or not), 1 when a
benchmark itself failed."""

from __future__ import annotations

import argparse
import datetime
import importlib
import itertools
import json
import os
import platform
import sys
import textwrap
import time
import traceback
from typing import Any

from bench import RESULTS_DIR, Check, Result, Row

BENCHMARKS = {
    "cold_start": "bench.cold_start",
    "latency": "bench.latency",
    "breakdown": "bench.breakdown",
    "aws_calls": "bench.aws_calls",
    "http_load": "bench.http_load",
    "search": "bench.search",
    "telemetry": "bench.telemetry",
    "images": "bench.images",
    "orders": "bench.orders",
    "analytics": "bench.analytics",
    "footprint": "bench.footprint",
}
WIDTH = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable or comma-separated): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output", default=str(RESULTS_DIR / "latest.json"), help="where to write the JSON"
    )
    args = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {list(BENCHMARKS)}")

    started = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "benchmarks": {},
    }
    failed: list[str] = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        load_start = os.getloadavg()
        try:
            result: Result = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except Exception:
            failed.append(name)
            entry: dict[str, Any] = {"status": "error", "error": traceback.format_exc()}
            print(f"[bench] {name} FAILED:\n{entry['error']}", file=sys.stderr, flush=True)
        else:
            entry = {
                "status": "ok",
                "title": result.title,
                "checks": [_check_json(c) for c in result.checks],
                "metrics": result.metrics,
            }
        machine = {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg(),
        }
        entry["machine"] = machine
        if entry["status"] == "ok":
            print_result(result, time.perf_counter() - t0, machine)
        entry["duration_s"] = round(time.perf_counter() - t0, 2)
        report["benchmarks"][name] = entry

    report["duration_s"] = round(time.perf_counter() - started, 2)
    report["load_average_at_end"] = os.getloadavg()
    print_summary(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
        handle.write("\n")
    print(f"\nJSON: {args.output}   total {report['duration_s']:.1f} s")
    return 1 if failed else 0


def _check_json(check: Check) -> dict[str, Any]:
    out = {"name": check.name, "value": check.value, "target": check.target}
    if check.note:
        out["note"] = check.note
    if check.absolute is not None:
        out["absolute"] = check.absolute
    out["result"] = check.verdict
    return out


def load_text(machine: dict[str, Any]) -> str:
    start, end = (
        " ".join(f"{v:.2f}" for v in machine[key])
        for key in ("load_average_at_start", "load_average_at_end")
    )
    return f"{machine['cpu_count']} cores, load average (1/5/15 min) {start} -> {end}"


def print_result(result: Result, seconds: float, machine: dict[str, Any]) -> None:
    print()
    print(f"== {result.name}: {result.title} ({seconds:.1f} s) ".ljust(WIDTH, "="))
    label_width = min(48, max((len(r.label) for r in result.rows), default=0))
    for row in [*result.rows, Row("machine", load_text(machine))]:
        wrapped = textwrap.wrap(row.value, WIDTH - label_width - 3) or [""]
        print(f"  {row.label:<{label_width}} {wrapped[0]}")
        for more in wrapped[1:]:
            print(f"  {'':<{label_width}} {more}")
    if result.checks:
        name_w, value_w, verdict_w = 40, 12, 6
        target_w = WIDTH - 2 - name_w - value_w - verdict_w - 3
        print(f"  {'-' * (WIDTH - 2)}")
        print(f"  {'check':<{name_w}} {'measured':>{value_w}} {'target':<{target_w}} result")
        for check in result.checks:
            names = textwrap.wrap(check.name, name_w) or [""]
            targets = textwrap.wrap(check.target, target_w) or [""]
            targets += textwrap.wrap(check.note, target_w - 2, initial_indent="  ",
                                     subsequent_indent="  ")  # fmt: skip
            value = str(check.value)[:value_w]
            lines = itertools.zip_longest(names, targets, fillvalue="")
            for i, (name, target) in enumerate(lines):
                measured, verdict = (value, check.verdict) if i == 0 else ("", "")
                line = f"  {name:<{name_w}} {measured:>{value_w}} {target:<{target_w}} {verdict}"
                print(line.rstrip())


def print_summary(report: dict[str, Any]) -> None:
    print()
    print("== summary ".ljust(WIDTH, "="))
    for name, entry in report["benchmarks"].items():
        if entry["status"] != "ok":
            print(f"  {name:<12} ERROR (see stderr / JSON)")
            continue
        verdicts = [c["result"] for c in entry["checks"]]
        missed = [c["name"] for c in entry["checks"] if c["result"] == "FAIL"]
        state = f"{len(missed)} target(s) missed" if missed else "all targets met"
        print(f"  {name:<12} {state:<22} ({verdicts.count('pass')} pass, "
              f"{verdicts.count('FAIL')} fail, {verdicts.count('info')} info)")  # fmt: skip
        print(f"  {'':<12}   {load_text(entry['machine'])}")
        for check in missed:
            print(f"  {'':<12}   missed: {check}")
    start, end = (
        " ".join(f"{v:.2f}" for v in report[key])
        for key in ("load_average_at_start", "load_average_at_end")
    )
    print(f"  {os.cpu_count()} cores; load average (1/5/15 min) at start: {start}; at end: {end}")


if __name__ == "__main__":
    sys.exit(main())
