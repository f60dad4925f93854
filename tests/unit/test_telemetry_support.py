"""Builders and fakes for the telemetry tests (no tests here)."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

from chalicelib.auth.tokens import Principal
from chalicelib.core.quotas import InMemoryQuotas, Quota
from chalicelib.telemetry.detection import Baseline
from chalicelib.telemetry.ingest import CallerQuotas
from chalicelib.telemetry.ports import PutOutcome
from chalicelib.telemetry.pseudonyms import ERASED, LakeIdentity, new_identity
from tests.clock import TEST_NOW

NOW = TEST_NOW  # the unit tests' clock starts here (tests/unit/conftest.py)
ARRIVAL = NOW.timestamp()
SHARD = "shardId-000000000000"
TABLES = {
    "activities": "serverless-app-dev-activities",
    "metrics": "serverless-app-dev-metrics",
    "transactions": "serverless-app-dev-transactions",
}
BASELINES_TABLE = "serverless-app-dev-baselines"
STREAM = "serverless-app-dev-telemetry"
TOPIC = "serverless-app-dev-anomaly-alerts"
BUCKET = "serverless-app-dev-data-lake"
QUEUE = "serverless-app-dev-telemetry-quarantine"


def ts(seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def activity(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "user_activity",
        "event_id": f"act-{n}",
        "timestamp": ts(-n),
        "user_id": f"user-{n % 7}",
        "activity_type": "page_view",
        "details": {"path": f"/p/{n}", "ms": 12.5},
        **extra,
    }


def metric(n: int, value: float = 42.0, name: str = "cpu_usage", **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "system_metric",
        "event_id": f"met-{n}",
        "timestamp": ts(-n),
        "source": f"host-{n % 5}",
        "metric_name": name,
        "value": value,
        "tags": {"az": "a"},
        **extra,
    }


def transaction(n: int, amount: float = 25.5, user: str | None = None, **extra: Any) -> dict:
    return {
        "event_type": "transaction",
        "event_id": f"txn-event-{n}",
        "timestamp": ts(-n),
        "transaction_id": f"t-{n}",
        "user_id": user or f"user-{n % 11}",
        "amount": amount,
        "currency": "EUR",
        **extra,
    }


def mixed(n: int) -> dict[str, Any]:
    return (activity, metric, transaction)[n % 3](n)


MACHINE = "producer-client-1"


def stamped(event: Any) -> Any:
    """`event` as the ingest puts it on the stream: with its sender, allowed to send it (a
    machine identity for metrics, the user for its own events). Others are left alone."""
    if not isinstance(event, dict) or "submitted_by" in event or "submitted_as" in event:
        return event
    kind = event.get("event_type")
    if kind == "system_metric":
        return {**event, "submitted_by": MACHINE, "submitted_as": "machine"}
    if kind in ("user_activity", "transaction") and isinstance(event.get("user_id"), str):
        return {**event, "submitted_by": event["user_id"], "submitted_as": "user"}
    return event


def record(
    payload: Any,
    sequence: int,
    raw: bytes | str | None = None,
    stamp: bool = True,
    arrival: float = ARRIVAL,
) -> dict[str, Any]:
    """A Kinesis record as Lambda delivers it (`event.to_dict()["Records"][i]`); an event
    is stamped with its sender as the ingest does (`stamp=False`: as sent by anyone else).
    `arrival`: when Kinesis took it (epoch seconds)."""
    if raw is None:
        data = base64.b64encode(json.dumps(stamped(payload) if stamp else payload).encode())
        data = data.decode()
    elif isinstance(raw, bytes):
        data = base64.b64encode(raw).decode()
    else:
        data = raw
    seq = f"{49_000_000_000_000_000_000 + sequence:056d}"
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{seq}",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-1",
        "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}",
    }


def records(
    events: Sequence[Any], start: int = 0, arrival: float = ARRIVAL
) -> list[dict[str, Any]]:
    return [record(e, start + i, arrival=arrival) for i, e in enumerate(events)]


class FakeWriter:
    """Items by table; `fail_keys` (pk) are not written (throttled), `reject_keys` refused
    for good (pk -> the error)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls = 0
        self.fail_keys: set[str] = set()
        self.reject_keys: dict[str, str] = {}

    def put_all(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        should_stop: Callable[[], bool] | None = None,
    ) -> PutOutcome:
        self.calls += (len(items) + 24) // 25
        outcome = PutOutcome()
        for i, item in enumerate(items):
            key = item["pk"]["S"] + "|" + item.get("sk", {}).get("S", "")
            if item["pk"]["S"] in self.fail_keys:
                outcome.failed.append(i)
                continue
            if item["pk"]["S"] in self.reject_keys:
                outcome.rejected[i] = self.reject_keys[item["pk"]["S"]]
                continue
            self.tables.setdefault(table, {})[key] = item
        return outcome


class FakeStamps:
    """The stamps of a FakeWriter's items (`duplicates.ItemStamps`); `fail`: unreadable."""

    def __init__(self, writer: FakeWriter) -> None:
        self.writer = writer
        self.fail = False
        self.calls = 0

    def stamps(self, table: str, keys: Sequence[dict[str, Any]]) -> dict[str, str]:
        from chalicelib.telemetry.encoding import item_key

        self.calls += 1
        if self.fail:
            raise RuntimeError("unreadable")
        found = {}
        for key in keys:
            item = self.writer.tables.get(table, {}).get(
                key["pk"]["S"] + "|" + key.get("sk", {}).get("S", "")
            )
            if item is not None:
                found[item_key(item)] = item.get("source_record", {}).get("S", "")
        return found


class FakeBaselines:
    def __init__(self) -> None:
        self.items: dict[str, Baseline] = {}
        self.gets = 0
        self.stores = 0

    def get_many(self, keys: Sequence[str]) -> dict[str, Baseline]:
        self.gets += 1
        return {k: self.items[k] for k in keys if k in self.items}

    def store(self, key: str, seen: Baseline | None, new: Baseline) -> Baseline | None:
        self.stores += 1
        current = self.items.get(key)
        if (current.version if current else None) != (seen.version if seen else None):
            return current
        self.items[key] = new
        return None


class FakeHistory:
    def __init__(self) -> None:
        self.stored: dict[str, list[tuple[str, str]]] = {}
        self.queries = 0

    def between(self, user_id: str, start: str, end: str) -> list[tuple[str, str]]:
        self.queries += 1
        return [(at, t) for at, t in self.stored.get(user_id, []) if start <= at <= end]


class FakeAlerts:
    def __init__(self, fail: set[int] | None = None) -> None:
        self.published: list[dict[str, Any]] = []
        self.calls = 0
        self.fail = fail or set()

    def send_alerts(self, alerts: Sequence[dict[str, Any]]) -> list[int]:
        self.calls += (len(alerts) + 9) // 10
        failed = [i for i in range(len(alerts)) if i in self.fail]
        self.published += [a for i, a in enumerate(alerts) if i not in self.fail]
        return failed


class FakeQuarantine:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail = fail

    def send(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        if self.fail:
            return list(range(len(messages)))
        self.messages += messages
        return []


class FakeArchive:
    def __init__(self, fail: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail = fail
        self.calls = 0

    def put(self, key: str, body: bytes) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("s3 down")
        self.objects[key] = body


class FakePseudonyms:
    """Lake identities in memory, one per user (`fail`: the store cannot be reached;
    `erased`: the users whose identity is a tombstone)."""

    def __init__(self, fail: bool = False, erased: Collection[str] = ()) -> None:
        self.known: dict[str, LakeIdentity] = {}
        self.calls = 0
        self.asked: list[set[str]] = []
        self.fail = fail
        self.erased = set(erased)

    def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
        self.calls += 1
        self.asked.append(set(user_ids))
        if self.fail:
            raise RuntimeError("pseudonyms table unreachable")
        return {
            user_id: ERASED
            if user_id in self.erased
            else self.known.setdefault(user_id, new_identity())
            for user_id in user_ids
        }


class FakeAlertBudget:
    """The fraud alerts let through per (user, hour), at most `limit` distinct ids each, in
    memory (`fail`: the store cannot be reached)."""

    def __init__(self, limit: int = 10, fail: bool = False) -> None:
        self.limit = limit
        self.fail = fail
        self.windows: dict[tuple[str, int], list[str]] = {}
        self.calls = 0

    def admit(self, user_id: str, window: int, alert_ids: Sequence[str]) -> set[str]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("quotas table unreachable")
        let_through = self.windows.setdefault((user_id, window), [])
        admitted = set()
        for alert_id in alert_ids:
            if alert_id not in let_through and len(let_through) < self.limit:
                let_through.append(alert_id)
            if alert_id in let_through:
                admitted.add(alert_id)
        return admitted


def lake_id(pseudonyms: FakePseudonyms, event: dict[str, Any]) -> str:
    """The `event_id` the archive shows for `event`: a user's event's is a digest."""
    if "user_id" not in event:
        return str(event["event_id"])
    return pseudonyms.known[event["user_id"]].digest("event_id", event["event_id"])


def archived_lines(archive: FakeArchive) -> list[dict[str, Any]]:
    """Every line of every object archived, in key order."""
    return [
        json.loads(line)
        for _, body in sorted(archive.objects.items())
        for line in gzip.decompress(body).splitlines()
    ]


def fake_processor(**overrides: Any) -> tuple[Any, dict[str, Any]]:
    from chalicelib.telemetry.processor import TelemetryProcessor

    parts: dict[str, Any] = {
        "writer": FakeWriter(),
        "baselines": FakeBaselines(),
        "history": FakeHistory(),
        "alerts": FakeAlerts(),
        "quarantine": FakeQuarantine(),
        "archive": FakeArchive(),
        "pseudonyms": FakePseudonyms(),
        "alert_budget": FakeAlertBudget(),
        "metrics": [],
    }
    parts.update(overrides)
    parts.setdefault("stamps", FakeStamps(parts["writer"]))
    processor = TelemetryProcessor(
        TABLES,
        parts["writer"],
        parts["baselines"],
        parts["history"],
        parts["alerts"],
        parts["quarantine"],
        parts["archive"],
        parts["pseudonyms"],
        alert_budget=parts["alert_budget"],
        emit=parts["metrics"].append,
        stamps=parts["stamps"],
    )
    return processor, parts


# --- callers of POST /events -------------------------------------------------------------

ADMIN = Principal("admin-1", frozenset({"admins"}))


def stage_settings(stage: str = "dev") -> dict[str, str]:
    """The template's `StageSettings` of `stage` (infra/resources.json)."""
    from infra.paths import PROJECT_DIR

    template = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    return dict(template["Mappings"]["StageSettings"][stage])


DEV = stage_settings("dev")
#: The dev stage's limits, as `telemetry_ingest()` reads them.
USER_QUOTAS = CallerQuotas(
    Quota("events", int(DEV["TelemetryEventsPerMinute"]), 60),
    Quota("event-bytes", int(DEV["TelemetryEventBytesPerMinute"]), 60),
)
MACHINE_QUOTAS = CallerQuotas(
    Quota("machine-events", int(DEV["TelemetryMachineEventsPerMinute"]), 60),
    Quota("machine-event-bytes", int(DEV["TelemetryMachineEventBytesPerMinute"]), 60),
)


def user(user_id: str = "user-1") -> Principal:
    return Principal(user_id, frozenset())


def machine(scopes: tuple[str, ...] = ("telemetry/metrics.write",)) -> Principal:
    return Principal(MACHINE, frozenset(), scopes=frozenset(scopes), is_machine=True)


class ListStream:
    """A stream that takes every record (`fail`: the positions it refuses)."""

    def __init__(self, fail: Callable[[int], bool] | None = None) -> None:
        self.records: list[tuple[bytes, str]] = []
        self.fail = fail or (lambda _: False)

    def put(self, records: Sequence[tuple[bytes, str]]) -> list[int]:
        refused = [i for i in range(len(records)) if self.fail(i)]
        self.records += [r for i, r in enumerate(records) if i not in refused]
        return refused

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(data) for data, _ in self.records]


def make_ingest(stream: Any, quotas: Any = None, **kwargs: Any) -> Any:
    """A `TelemetryIngest` with in-memory quotas (the dev stage's limits) on the test clock."""
    from chalicelib.core import clock
    from chalicelib.telemetry.ingest import TelemetryIngest

    return TelemetryIngest(
        stream,
        quotas if quotas is not None else InMemoryQuotas(clock.now),
        USER_QUOTAS,
        MACHINE_QUOTAS,
        **kwargs,
    )
