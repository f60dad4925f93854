"""The stack's side of fault injection (`local.faults`): its command-line options, the
emulator's environment, and arming the plan once the stack is up."""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
from typing import Any

from local.faults import CONTROL_PATH, parse_faults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--faults, --fault-kinds, --fault-seed; by default LOCAL_FAULTS and the others."""
    parser.add_argument(
        "--faults",
        default=os.environ.get("LOCAL_FAULTS", ""),
        help="fail this fraction of the app's AWS calls: 0.1, or dynamodb=0.3,sqs=0.1",
    )
    parser.add_argument(
        "--fault-kinds",
        default=os.environ.get("LOCAL_FAULT_KINDS", ""),
        help="some of throttle,error,latency,timeout (default: all four)",
    )
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=os.environ.get("LOCAL_FAULT_SEED") or None,  # argparse applies `type`
        help="seed of the faults' random choices, for repeatable runs",
    )


def chosen(args: argparse.Namespace) -> dict[str, Any]:
    """The plan the options give, as the stack records it (FaultSpecError: a bad spec)."""
    plan = parse_faults(args.faults, args.fault_kinds)
    return {"spec": args.faults, "kinds": args.fault_kinds, "seed": args.fault_seed,
            "plan": plan.describe()}  # fmt: skip


def emulator_environment(faults: dict[str, Any] | None) -> dict[str, str]:
    """The emulator's LOCAL_FAULT* variables for `faults` (all empty: none)."""
    faults = faults or {}
    seed = faults.get("seed")
    return {
        "LOCAL_FAULTS": faults.get("spec") or "",
        "LOCAL_FAULT_KINDS": faults.get("kinds") or "",
        "LOCAL_FAULT_SEED": "" if seed is None else str(seed),
    }


def arm(emulator_url: str) -> None:
    """Start injecting the emulator's plan."""
    request = urllib.request.Request(
        emulator_url + CONTROL_PATH,
        json.dumps({"armed": True}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5):
        pass
