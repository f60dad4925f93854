"""`make report DAY=2026-12-05`: compute one day's analytics report now, on the local stack,
even if the day has one (run n+1) or is today (what arrived so far), and print its summary.

It runs the service's own start in this process, with the stage's environment and the
running stack's emulator, as the admin route does (without the route's "a day that is over"
rule); the emulator's Athena runs the queries and its events complete the jobs through the
stack's runtime, as under the schedule. It waits for the report (at most 60 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import date
from pathlib import Path

from local.provision import STATE_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("day", help="the report's day, YYYY-MM-DD (UTC)")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.day)
    except ValueError:
        print(f"{args.day!r} is not a day (YYYY-MM-DD)", file=sys.stderr)
        return 2

    from local.stack import running_state, use_stack_environment

    state = running_state(args.state_dir)
    if state is None:
        return 1
    use_stack_environment(state)

    from chalicelib.analytics import analytics_service
    from chalicelib.analytics.ports import RunExists

    service = analytics_service()
    try:
        started = service.run_daily(day, requested_by="make report", force=True, fail_fast=True,
                                    request_id=f"make-report-{uuid.uuid4()}")  # fmt: skip
    except RunExists:
        print(f"the report of {day} is being computed; try again later", file=sys.stderr)
        return 1
    deadline = time.monotonic() + 60
    report = started
    while report["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        report = service.report_of(day)
    summary = {k: report.get(k) for k in ("date", "run", "state", "events", "bytes_scanned",
               "errors", "by_kind", "transactions", "alerts")}  # fmt: skip
    print(json.dumps(summary, indent=2, default=str))
    return 0 if report["state"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
