"""`make fire JOB=<name>`: run one of the app's scheduled jobs now, against the local stack.

The job runs in this process, with the stage's environment and the running stack's
emulator, given the event EventBridge would send; its invocation is printed as JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from infra.paths import PROJECT_DIR
from local.provision import STATE_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", help="the scheduled function's name; none lists them")
    parser.add_argument(
        "--at",
        help="fire as if the schedule fired at this ISO 8601 instant (default: now), e.g. to "
        "sweep orders that are only minutes old: --at 2030-01-01T02:00:00Z",
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)

    from local.stack import running_state, use_stack_environment

    state = running_state(args.state_dir)
    if state is None:
        return 1
    use_stack_environment(state)

    import boto3
    from chalice.cli.factory import CLIFactory

    from chalicelib.core import clock
    from local.events import EventRuntime

    config = CLIFactory(project_dir=str(PROJECT_DIR), environ=os.environ).create_config_obj(
        chalice_stage_name=state["stage"]
    )
    runtime = EventRuntime(config.chalice_app, boto3.client, state["region"])
    jobs = sorted(runtime.scheduled_jobs())
    if not args.job:
        print("\n".join(jobs) if jobs else "The app has no scheduled jobs.")
        return 0
    try:
        at = clock.parse(args.at) if args.at else None
    except ValueError:
        print(f"--at {args.at!r} is not an ISO 8601 instant", file=sys.stderr)
        return 2
    if at is not None and at.tzinfo is None:
        print("--at needs a time zone (2030-01-01T02:00:00Z)", file=sys.stderr)
        return 2
    try:
        invocation = runtime.fire(args.job, at=at)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    return 0 if invocation.outcome == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
