"""A short soak (`make soak`, `local.soak`) on a stack of its own with 10% of the app's AWS
calls faulted: a few seconds of mixed load, then every accepted write looked for. And the
checks themselves: a write the API never made is reported lost."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import pytest

from local import soak
from local.soak_checks import check_events, check_images
from local.soak_clients import Ledger

pytestmark = pytest.mark.integration


def test_a_short_soak_under_faults_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # Faults whose outcome is known (throttling, 5xx, latency): the system must absorb
    # them all. `timeout` (applied, answer lost) is in `make soak`'s mix; see the README.
    args = argparse.Namespace(api=None, emulator=None, faults=0.1, seed=7, log=tmp_path / "log",
                              fault_kinds="throttle,error,latency", state_dir=tmp_path)  # fmt: skip
    with soak.stack_for(args) as state:
        figures = soak.soak(state, rate=4, duration=8, seed=7, workers=4, settle_s=45, pool=3)
        # The checks can fail: an event and an image the API never accepted are missing.
        ledger = Ledger()
        ledger.events[str(uuid.uuid4())] = {"user_id": "nobody", "event_type": "user_activity"}
        ledger.images[str(uuid.uuid4())] = "nobody"
        assert len(check_events(state, ledger)["lost"]) == 2  # not in its table, not in the lake
        assert len(check_images(state, ledger)["lost"]) == 1
    print(soak.table(figures))
    totals: dict[str, Any] = figures["totals"]
    assert totals["operations"] >= 25, totals
    assert totals["accepted_writes"]["events"] > 0 and totals["accepted_writes"]["orders"] > 0
    assert (totals["lost"], totals["duplicated"], totals["500"]) == (0, 0, 0), soak.table(figures)
    assert (totals["unfinished"], totals["unbalanced"], totals["parked"]) == (0, 0, 0), soak.table(
        figures
    )
