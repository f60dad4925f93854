"""What one request or one stream batch uses, for the capacity model (`make capacity`).

In process, against moto (bench.inprocess), per API route and per telemetry batch: the AWS
calls by service and operation, the time spent inside them (botocore `before-call` to
`after-call`: the emulator's share, replaced in the model by AWS's latency) and the rest, the
app's own time; the DynamoDB capacity units the calls consume (DynamoDB's sizing rules: a
write unit per 1 KB of the larger of the item before and after the write, read from the
emulator outside the timed share; half a read unit per 4 KB read, a whole one when the read
is strongly consistent; transactions twice); the keys written and their write units, by a
first and by a second caller, to tell the keys every request shares (a hot partition at any
rate) from the caller's own; the bytes logged to stdout (CloudWatch Logs ingests them); the
bytes per event on the stream and in the data lake.

The telemetry batch is what Lambda would deliver from the stream: events posted through
`POST /events`, read back from moto's Kinesis, and handed to the processor in one batch of
BATCH records (the prod stage's batch size). Times are this machine's, under whatever else
runs on it: the model scales them, it does not take them as Lambda's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from bench import Result
from bench.capacity_units import (
    READS,
    WRITES,
    consistency,
    item_size,
    read_units,
    wire,
    write_units,
    written,
)
from bench.inprocess import InProcess, expect, in_process_app

REPEATS = (5, 15)  # (quick, full) measured requests per route, after one untimed
EVENT_COUNTS = (1, 25)  # events per POST /events, for own time = a + b x events
BATCH = 500
#: A write's item as the emulator holds it (None: none), read outside the timed share.
Probe = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class Recorder:
    """botocore hooks on the app's session: calls, time inside them, capacity, keys.

    `probe` reads an item through a client of its own (no hooks); the time it and
    `key_names` take is `probe_s`, left out of the app's own time."""

    def __init__(self, key_names: Callable[[str], list[str]], probe: Probe) -> None:
        self.key_names = key_names
        self.probe = probe
        self.recording = False
        #: per thread, from a call's parameters to its answer: `read` (table, ConsistentRead)
        #: and `pending` writes (table, key, kind, size before, factor)
        self._call = threading.local()
        self.reset()

    def reset(self) -> None:
        self.calls: Counter[str] = Counter()
        self.aws_s = 0.0
        self.wcu = self.rcu = 0.0
        self.wcu_by_table: Counter[str] = Counter()
        self.rcu_by_table: Counter[str] = Counter()
        self.keys: list[tuple[str, int]] = []
        self.probe_s = 0.0
        self.put_bytes: list[int] = []
        self.records: list[tuple[int, int]] = []
        self._started: list[float] = []

    def before(self, model: Any = None, params: Any = None, **_: Any) -> None:
        if self.recording and model is not None:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1
            self._started.append(time.perf_counter())

    def after(self, model: Any = None, parsed: Any = None, **_: Any) -> None:
        if self.recording and model is not None and self._started:
            self.aws_s += time.perf_counter() - self._started.pop()
            if model.service_model.service_name == "dynamodb" and model.name in READS:
                asked, consistent = getattr(self._call, "read", ("", False))
                for table, units in read_units(model.name, asked, parsed or {}, consistent):
                    self.rcu += units
                    self.rcu_by_table[table] += units
            if model.service_model.service_name == "dynamodb" and model.name in WRITES:
                self._charge_writes()

    def _size_now(self, table: str, key: dict[str, Any]) -> int:
        started = time.perf_counter()
        try:
            return item_size(self.probe(table, key) or {})
        finally:
            self.probe_s += time.perf_counter() - started

    def _charge_writes(self) -> None:
        """After a write call: each item's units from its size before and after."""
        for table, key, kind, before, factor in getattr(self._call, "pending", []):
            after = 0 if kind == "Delete" else self._size_now(table, key)
            if kind == "ConditionCheck":
                after = before
            units = write_units(before, after, factor)
            self.wcu += units
            self.wcu_by_table[table] += units
            self.keys.append((f"{table}:{json.dumps(key, sort_keys=True, default=str)}", units))
        self._call.pending = []

    def params(self, params: dict[str, Any], model: Any = None, **_: Any) -> None:
        """Before the request is built: what is written (user parameters)."""
        if not self.recording or model is None:
            return
        service, name = model.service_model.service_name, model.name
        if service == "dynamodb" and name in READS:
            self._call.read = (str(params.get("TableName", "")), consistency(name, params))
        if service == "dynamodb" and name in WRITES:
            self._call.pending = pending = []
            for table, item, kind, factor in written(name, params):
                started = time.perf_counter()
                key = wire({k: item.get(k) for k in self.key_names(table)})
                self.probe_s += time.perf_counter() - started
                pending.append((table, key, kind, self._size_now(table, key), factor))
        elif service == "s3" and name == "PutObject":
            body = params.get("Body", b"")
            self.put_bytes.append(len(body) if hasattr(body, "__len__") else _stream_size(body))
        elif service == "kinesis" and name == "PutRecords":
            for record in params.get("Records", []):
                self.records.append((len(record["Data"]), len(record["PartitionKey"].encode())))

    @contextlib.contextmanager
    def installed(self) -> Iterator[Recorder]:
        from chalicelib.core import aws

        events = aws.session().events
        hooks = (("before-call", self.before), ("after-call", self.after),
                 ("before-parameter-build", self.params))  # fmt: skip
        for event, handler in hooks:
            events.register_first(event, handler, unique_id=f"bench-footprint-{event}")
        aws.reset_clients()
        try:
            yield self
        finally:
            for event, _ in hooks:
                events.unregister(event, unique_id=f"bench-footprint-{event}")
            aws.reset_clients()


def _stream_size(body: Any) -> int:
    """The size of a file-like body, its position kept."""
    position = body.tell()
    size = body.seek(0, os.SEEK_END)
    body.seek(position)
    return int(size) - int(position)


@contextlib.contextmanager
def _stdout_bytes(counter: list[int]) -> Iterator[None]:
    """fd 1 into a temporary file for the duration; its size appended to `counter`."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            counter.append(os.fstat(sink.fileno()).st_size)


def _measure(recorder: Recorder, request: Callable[[], Any]) -> dict[str, Any]:
    logged: list[int] = []
    recorder.reset()
    recorder.recording = True
    started = time.perf_counter()
    try:
        with _stdout_bytes(logged):
            request()
    finally:
        recorder.recording = False
    wall = time.perf_counter() - started - recorder.probe_s
    return {"wall_s": wall, "aws_s": recorder.aws_s, "own_s": wall - recorder.aws_s,
            "calls": dict(recorder.calls), "wcu": recorder.wcu, "rcu": recorder.rcu,
            "wcu_by_table": dict(recorder.wcu_by_table),
            "rcu_by_table": dict(recorder.rcu_by_table),
            "keys": list(recorder.keys), "log_bytes": logged[0],
            "put_bytes": list(recorder.put_bytes), "records": list(recorder.records)}  # fmt: skip


def _summary(runs: list[dict[str, Any]], other_caller: dict[str, Any]) -> dict[str, Any]:
    """Medians of the measured runs; the keys also written by another caller are shared
    (`shared_key_max_wcu`: the write units the busiest of them takes, per request)."""
    last = runs[-1]
    shared = sorted({k for k, _ in last["keys"]} & {k for k, _ in other_caller["keys"]})
    per_key = Counter[str]()
    for key, units in last["keys"]:
        if key in shared:
            per_key[key] += units
    return {
        "n": len(runs),
        "own_s": statistics.median(r["own_s"] for r in runs),
        "aws_local_s": statistics.median(r["aws_s"] for r in runs),
        "calls": last["calls"],
        "wcu": last["wcu"],
        "rcu": last["rcu"],
        "wcu_by_table": last["wcu_by_table"],
        "rcu_by_table": last["rcu_by_table"],
        "log_bytes": statistics.median(r["log_bytes"] for r in runs),
        "shared_keys": shared,
        "shared_key_writes": sum(1 for k, _ in last["keys"] if k in shared),
        "shared_key_max_writes": max(
            (sum(1 for k, _ in last["keys"] if k == key) for key in shared), default=0
        ),
        "shared_key_max_wcu": max(per_key.values(), default=0),
    }


def _event(n: int) -> dict[str, Any]:
    """bench.telemetry's mixed events (a third of each kind), stamped a few seconds ago."""
    from datetime import UTC, datetime, timedelta

    from bench.telemetry import _event as mixed

    stamp = datetime.now(UTC) - timedelta(seconds=1 + n % 600)
    return {**mixed(n), "timestamp": stamp.isoformat()}


def run(quick: bool) -> Result:
    repeats = REPEATS[0] if quick else REPEATS[1]
    routes: dict[str, dict[str, Any]] = {}
    with in_process_app() as env:
        import boto3

        dynamodb = boto3.client("dynamodb")
        schemas: dict[str, list[str]] = {}

        def key_names(table: str) -> list[str]:
            if table not in schemas:
                schema = dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
                schemas[table] = [k["AttributeName"] for k in schema]
            return schemas[table]

        def probe(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
            return dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

        recorder = Recorder(key_names, probe)
        first = env.http
        env.sign_in_admin("bench-footprint-second@example.com")
        callers = ((0, first), (1, env.http))
        with recorder.installed():
            requests = _requests(env, _event)
            for label, make in requests.items():
                make(callers[0], 0)()  # untimed: per-process look-ups
                runs = [_measure(recorder, make(callers[0], n)) for n in range(1, repeats + 1)]
                other = _measure(recorder, make(callers[1], repeats + 1))
                routes[label] = _summary(runs, other)
            batch = _telemetry_batch(env, recorder, _event)
    events = {label: routes[label] for label in routes if label.startswith("POST /events")}
    (n1, small), (n2, large) = sorted((int(k.split()[2]), v) for k, v in
                                      ((k.replace("(", "").replace(")", ""), v)
                                       for k, v in events.items()))  # fmt: skip
    per_event_s = (large["own_s"] - small["own_s"]) / (n2 - n1)
    result = Result("footprint", "Per request and per stream batch: AWS calls, own time, bytes")
    for label, info in {**routes, f"telemetry batch ({BATCH} records)": batch}.items():
        calls = ", ".join(f"{k} x{v}" for k, v in sorted(info["calls"].items())) or "none"
        result.row(label, f"own {info['own_s'] * 1000:.2f} ms (+ {info['aws_local_s'] * 1000:.1f}"
                   f" ms in local AWS calls); {calls}; {info['wcu']:g} WCU, {info['rcu']:g} RCU;"
                   f" logs {info['log_bytes']:.0f} B; shared keys written "
                   f"{info['shared_key_writes']}")  # fmt: skip
    result.row("stream bytes per event", f"{batch['stream_bytes_per_event']:.0f} B (data + key)")
    result.row("lake bytes per event", f"{batch['lake_bytes_per_event']:.1f} B (gzip NDJSON)")
    result.check("POST /events own time per extra event (ms)", round(per_event_s * 1000, 4),
                 "info", None)  # fmt: skip
    result.check("lake bytes per event", round(batch["lake_bytes_per_event"], 1), "info", None)
    result.metrics = {"routes": routes, "telemetry_batch": batch, "batch_records": BATCH,
                      "events_per_request_measured": [n1, n2],
                      "post_events_own_s_per_event": per_event_s,
                      "post_events_own_s_fixed": small["own_s"] - n1 * per_event_s}  # fmt: skip
    return result


def _requests(env: InProcess, event: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """label -> (caller, n) -> a request to measure (each different, each expected to pass).
    Each caller reads and renames a user of its own, as users do their own profiles."""
    users = [env.register(f"bench-footprint-user{i}@example.com")["user_id"] for i in (0, 1)]
    sku = f"FOOT-{uuid.uuid4().hex[:8].upper()}"
    product = {"name": "Footprint", "unit_amount": 1250, "available": 10_000}
    expect(env.http.put(f"/inventory/{sku}", **_body(product)), 200, "PUT /inventory")
    address = {"name": "Bench", "line1": "1 Street", "city": "Berlin", "postal_code": "10115",
               "country": "DE"}  # fmt: skip

    def call(method: str, path: str, status: int, body: Any = None) -> Any:
        def make(caller: tuple[int, Any], n: int) -> Callable[[], None]:
            who, http = caller
            payload = body(n) if callable(body) else body
            kwargs = _body(payload) if payload is not None else {}
            where = path.format(user=users[who])
            return lambda: expect(getattr(http, method)(where, **kwargs), status, where)

        return make

    def events(count: int) -> Callable[[int], dict[str, Any]]:
        return lambda n: {"events": [event(n * 1000 + i) for i in range(count)]}

    out = {
        "GET /users/{id}": call("get", "/users/{user}", 200),
        "PUT /users/{id}": call("put", "/users/{user}", 200,
                                lambda n: {"name": f"Renamed {n}"}),
        "POST /orders": call("post", "/orders", 202,
                             lambda n: {"lines": [{"sku": sku, "quantity": 1}],
                                        "payment_method": "pm_card_visa",
                                        "shipping_address": address}),
    }  # fmt: skip
    for count in EVENT_COUNTS:
        out[f"POST /events ({count})"] = call("post", "/events", 202, events(count))
    return out


def _body(value: Any) -> dict[str, Any]:
    return {"headers": {"Content-Type": "application/json"}, "body": json.dumps(value).encode()}


def _telemetry_batch(env: InProcess, recorder: Recorder, event: Callable[[int], Any]) -> Any:
    """Two batches of BATCH events, posted (by two admins: each stays within its quota), read
    back from the stream and processed as Lambda batches: the first warms the process up (and
    tells the keys every batch writes), the second is measured."""
    import boto3

    from chalicelib.telemetry import telemetry_processor

    for half in range(2):
        env.sign_in_admin(f"bench-footprint-batch{half}@example.com")
        for start in range(half * BATCH, (half + 1) * BATCH, 250):
            body = {"events": [event(10_000_000 + n) for n in range(start, start + 250)]}
            expect(env.http.post("/events", **_body(body)), 202, "POST /events")
    kinesis = boto3.client("kinesis")
    stream = next(s for s in kinesis.list_streams()["StreamNames"] if "telemetry" in s)
    records: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]:
            records.append({"kinesis": {"partitionKey": record["PartitionKey"],
                                        "sequenceNumber": record["SequenceNumber"],
                                        "data": base64.b64encode(record["Data"]).decode(),
                                        "approximateArrivalTimestamp": time.time()},
                            "eventID": f"{shard['ShardId']}:{record['SequenceNumber']}",
                            "eventSource": "aws:kinesis"})  # fmt: skip
    if len(records) < 2 * BATCH:
        raise RuntimeError(f"{len(records)} records on the stream, expected {2 * BATCH}")
    records = records[-2 * BATCH :]
    processor = telemetry_processor()
    first = _measure(recorder, lambda: processor.process(records[:BATCH]))
    info = _measure(recorder, lambda: processor.process(records[BATCH:]))
    batch = records[BATCH:]
    sizes = [len(base64.b64decode(r["kinesis"]["data"])) + len(r["kinesis"]["partitionKey"])
             for r in batch]  # fmt: skip
    return {**_summary([info], first), "records": len(batch),
            "stream_bytes_per_event": sum(sizes) / len(sizes),
            "lake_bytes_per_event": sum(info["put_bytes"]) / len(batch),
            "put_objects": len(info["put_bytes"])}  # fmt: skip
