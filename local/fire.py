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
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)

    from local.stack import EMULATOR_CREDENTIALS, running_state

    state = running_state(args.state_dir)
    if state is None:
        return 1
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update({**EMULATOR_CREDENTIALS, "AWS_ENDPOINT_URL": state["emulator_url"]})

    import boto3
    from chalice.cli.factory import CLIFactory

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
        invocation = runtime.fire(args.job)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    return 0 if invocation.outcome == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
