"""Telemetry stream processing: records per second of `TelemetryProcessor.process`, and the
AWS calls one 500-record batch costs.

AWS is stubbed at the client: the real adapters (batching, attribute values, gzip, JSON)
run against a client object whose methods count the call and answer "all done" at once, so
the time measured is the processing code's, on one core (one thread). Batches of 500 mixed
records (a third each of user_activity, system_metric, transaction; 5 sources x 2 metrics,
50 users), as Lambda would deliver them from one shard, base64 and all.

Minimum AWS calls for a batch of n records: ceil(n_table / 25) BatchWriteItem per table, one
PutObject, no Publish when nothing is alerted; plus, for detection, one BatchGetItem of the
baselines and one UpdateItem per (source, metric) in the batch, and one Query per
transacting user (all reported).
"""

from __future__ import annotations

import base64
import json
import math
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import Result, patched_environ, quiet_stdout, stage_env

BATCH = 500
TARGET_RPS = 20_000
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class StubClient:
    """Every AWS call the processor makes, answered as if all went through."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["dynamodb:BatchWriteItem"] += 1
        return {"UnprocessedItems": {}}

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["dynamodb:BatchGetItem"] += 1
        return {"Responses": {}, "UnprocessedKeys": {}}

    def update_item(self, **_: Any) -> dict[str, Any]:
        self.calls["dynamodb:UpdateItem"] += 1
        return {}

    def get_item(self, **_: Any) -> dict[str, Any]:
        self.calls["dynamodb:GetItem"] += 1
        return {}

    def query(self, **_: Any) -> dict[str, Any]:
        self.calls["dynamodb:Query"] += 1
        return {"Items": []}

    def publish_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["sns:PublishBatch"] += 1
        return {"Successful": [], "Failed": []}

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["sqs:SendMessageBatch"] += 1
        return {"Successful": [], "Failed": []}

    def put_object(self, **_: Any) -> dict[str, Any]:
        self.calls["s3:PutObject"] += 1
        return {}


def _event(n: int) -> dict[str, Any]:
    stamp = (NOW - timedelta(seconds=n)).isoformat()
    kind = n % 3
    if kind == 0:
        return {
            "event_type": "user_activity",
            "event_id": f"a-{n}",
            "timestamp": stamp,
            "user_id": f"user-{n % 50}",
            "activity_type": "page_view",
            "session_id": f"s-{n % 97}",
            "ip_address": "203.0.113.7",
            "details": {"path": f"/products/{n}", "referrer": "search", "ms": 12.5},
        }
    if kind == 1:
        return {
            "event_type": "system_metric",
            "event_id": f"m-{n}",
            "timestamp": stamp,
            "source": f"web-{n % 5}",
            "metric_name": ("cpu_usage", "request_count")[n % 2],
            "value": 40 + n % 17,
            "tags": {"az": "eu-west-1a"},
        }
    return {
        "event_type": "transaction",
        "event_id": f"t-{n}",
        "timestamp": stamp,
        "transaction_id": f"txn-{n}",
        "user_id": f"user-{n % 50}",
        "amount": 19.99 + n % 100,
        "currency": "EUR",
        "merchant": "Example Shop",
        "status": "completed",
    }


def _records(start: int) -> list[dict[str, Any]]:
    out = []
    for n in range(start, start + BATCH):
        seq = f"{49_000_000_000_000_000_000 + n:056d}"
        out.append(
            {
                "kinesis": {
                    "partitionKey": "k",
                    "sequenceNumber": seq,
                    "data": base64.b64encode(json.dumps(_event(n)).encode()).decode(),
                    "approximateArrivalTimestamp": NOW.timestamp(),
                },
                "eventID": f"shardId-000000000000:{seq}",
                "eventSource": "aws:kinesis",
            }
        )
    return out


def _processor(client: StubClient) -> Any:
    from chalicelib.telemetry.adapters import (
        DynamoBaselines,
        DynamoItemWriter,
        DynamoTransactionHistory,
        S3Archive,
        SnsAlerts,
        SqsQuarantine,
    )
    from chalicelib.telemetry.processor import TelemetryProcessor, emit_counts

    def stub() -> StubClient:
        return client

    tables = {"activities": "act", "metrics": "met", "transactions": "txn"}
    return TelemetryProcessor(
        tables,
        DynamoItemWriter(client=stub),
        DynamoBaselines("baselines", client=stub),
        DynamoTransactionHistory("txn", client=stub),
        SnsAlerts(lambda: "arn:aws:sns:us-east-1:123456789012:alerts", client=stub),
        SqsQuarantine(lambda: "https://sqs/queue", client=stub),
        S3Archive("lake", client=stub),
        emit=emit_counts,
    )


def run(quick: bool) -> Result:
    rounds = 10 if quick else 40
    with patched_environ(stage_env()), quiet_stdout():
        client = StubClient()
        processor = _processor(client)
        batches = [_records(i * BATCH) for i in range(4)]
        processor.process(batches[0])  # warm-up
        client.calls.clear()
        result = processor.process(batches[1])
        one_batch = Counter(client.calls)
        assert result == {"batchItemFailures": []}
        times = []
        for i in range(rounds):
            started = time.perf_counter()
            processor.process(batches[i % len(batches)])
            times.append(time.perf_counter() - started)
    per_type = Counter(_event(n)["event_type"] for n in range(BATCH, 2 * BATCH))
    minimum_writes = sum(math.ceil(c / 25) for c in per_type.values())
    users = len({_event(n)["user_id"] for n in range(BATCH, 2 * BATCH) if n % 3 == 2})
    pairs = len({(_event(n)["source"], _event(n)["metric_name"])
                 for n in range(BATCH, 2 * BATCH) if n % 3 == 1})  # fmt: skip
    median_s = statistics.median(times)
    best_s = min(times)
    rps = BATCH / median_s

    result_ = Result("telemetry", "Kinesis batch processing: records/s (AWS stubbed), AWS calls")
    result_.row("setup", f"{rounds} batches of {BATCH} mixed records, one thread, AWS stubbed")
    result_.row("batch time", f"median {median_s * 1000:.1f} ms, best {best_s * 1000:.1f} ms")
    result_.row("throughput", f"{rps:,.0f} records/s (median), {BATCH / best_s:,.0f} (best)")
    result_.row(
        "calls for one batch",
        ", ".join(f"{name} {count}" for name, count in sorted(one_batch.items())),
    )
    result_.row(
        "batch mix",
        ", ".join(f"{k} {v}" for k, v in sorted(per_type.items()))
        + f"; {pairs} (source, metric) pairs, {users} transacting users",
    )
    result_.check(
        "records/s per core (median)", round(rps), f">= {TARGET_RPS:,}", rps >= TARGET_RPS
    )
    result_.check(
        "BatchWriteItem calls / 500 records",
        one_batch["dynamodb:BatchWriteItem"],
        f"== {minimum_writes} (ceil(n/25)/table)",
        one_batch["dynamodb:BatchWriteItem"] == minimum_writes,
    )
    result_.check("PutObject calls / batch", one_batch["s3:PutObject"], "== 1",
                  one_batch["s3:PutObject"] == 1)  # fmt: skip
    result_.check("PublishBatch calls (no alerts)", one_batch["sns:PublishBatch"], "== 0",
                  one_batch["sns:PublishBatch"] == 0)  # fmt: skip
    result_.check("BatchGetItem (baselines)", one_batch["dynamodb:BatchGetItem"], "info", None)
    result_.check("UpdateItem (baselines)", one_batch["dynamodb:UpdateItem"], f"== {pairs} pairs",
                  one_batch["dynamodb:UpdateItem"] == pairs)  # fmt: skip
    result_.check("Query (velocity)", one_batch["dynamodb:Query"], f"== {users} users",
                  one_batch["dynamodb:Query"] == users)  # fmt: skip
    result_.metrics = {
        "batch": BATCH,
        "rounds": rounds,
        "median_s": median_s,
        "best_s": best_s,
        "records_per_s": rps,
        "calls_per_batch": dict(one_batch),
        "minimum_batch_writes": minimum_writes,
    }
    return result_
