"""Prices, quotas and latencies the capacity model (ops.capacity) uses: dated constants.

Every figure carries its source and the date it stands for. This machine has no web access:
`checked` says how each figure was confirmed on 2026-12-07, either "stored copy" (the text of
the cited page, or of a third-party copy named in `note`, read through the project's
reference search that day) or "published value" (AWS's published figure as known when
written, not re-read that day: check it before relying on it). Latencies are estimates, not
published figures, and say so. Prices: us-east-1, USD, on-demand, no free tier, no Savings
Plans. Quotas: the defaults of a new account in us-east-1; most can be raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REGION = "us-east-1"
#: The day the figures below were checked (see each `checked`).
CHECKED_ON = "2026-12-07"
STORED, PUBLISHED, ESTIMATE = "stored copy", "published value", "estimate"


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str
    as_of: str
    checked: str
    note: str = ""


@dataclass(frozen=True)
class Tiered:
    """A price that falls with monthly volume: (tier size, price per unit) in order; the
    last tier's size is infinite."""

    tiers: tuple[tuple[float, float], ...]
    unit: str
    source: str
    as_of: str
    checked: str
    note: str = ""

    def cost(self, quantity: float) -> float:
        total, left = 0.0, quantity
        for size, price in self.tiers:
            used = min(left, size)
            total += used * price
            left -= used
            if left <= 0:
                break
        return total


_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_LAMBDA_LIMITS = "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"
_APIGW = "https://aws.amazon.com/api-gateway/pricing/"
_APIGW_LIMITS = "https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html"
_KINESIS = "https://aws.amazon.com/kinesis/data-streams/pricing/"
_KINESIS_LIMITS = "https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html"
_DDB = "https://aws.amazon.com/dynamodb/pricing/on-demand/"
_DDB_LIMITS = "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html"
_SFN = "https://aws.amazon.com/step-functions/pricing/"
_SFN_LIMITS = "https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html"
_S3 = "https://aws.amazon.com/s3/pricing/"
_S3_PERF = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html"
_ATHENA = "https://aws.amazon.com/athena/pricing/"
_CW = "https://aws.amazon.com/cloudwatch/pricing/"

PRICES: dict[str, Constant | Tiered] = {
    "lambda_request": Constant(
        0.20 / 1e6, "USD per invocation", _LAMBDA, "2024-01", STORED,
        "$0.20 per million; stored copy of https://docs.aws.amazon.com/whitepapers/latest/"
        "how-aws-pricing-works/lambda.html"),
    "lambda_gb_s": Tiered(
        ((6e9, 0.0000166667), (9e9, 0.000015), (math.inf, 0.0000133334)),
        "USD per GB-second (x86), tiers by monthly GB-s per account and region", _LAMBDA,
        "2024-01", STORED, "tiers in a stored third-party copy (cloudchipr.com, 2024); the "
        "first tier's price in the AWS whitepaper"),
    "api_gateway_rest": Tiered(
        ((333e6, 3.50e-6), (667e6, 2.80e-6), (19e9, 2.38e-6), (math.inf, 1.51e-6)),
        "USD per REST API request (Chalice deploys a REST API), tiers by monthly requests",
        _APIGW, "2024-01", PUBLISHED),
    "kinesis_shard_hour": Constant(0.015, "USD per provisioned shard-hour", _KINESIS,
                                   "2024-01", PUBLISHED),
    "kinesis_put_unit": Constant(0.014 / 1e6, "USD per PUT payload unit (25 KB of a record)",
                                 _KINESIS, "2024-01", PUBLISHED),
    "kinesis_on_demand_stream_hour": Constant(0.04, "USD per on-demand stream-hour", _KINESIS,
                                              "2024-01", PUBLISHED),
    "kinesis_on_demand_gb_in": Constant(
        0.08, "USD per GB written (on-demand; each record rounded up to 1 KB)", _KINESIS,
        "2024-01", PUBLISHED, "the 1 KB rounding is in the stored copy of the page"),
    "kinesis_on_demand_gb_out": Constant(0.04, "USD per GB read (on-demand)", _KINESIS,
                                         "2024-01", PUBLISHED),
    "dynamodb_wru": Constant(
        0.625 / 1e6, "USD per write request unit (on-demand)", _DDB, "2024-11-01", STORED,
        "after the 50% on-demand price cut of November 2024; stored third-party copy "
        "(airbyte.com, 2025)"),
    "dynamodb_rru": Constant(0.125 / 1e6, "USD per read request unit (on-demand)", _DDB,
                             "2024-11-01", STORED, "as dynamodb_wru"),
    "sfn_transition": Constant(
        0.025 / 1000, "USD per state transition (Standard; retries count)", _SFN, "2024-01",
        PUBLISHED, "also bench/orders.py's PRICE_PER_1000_TRANSITIONS_USD"),
    "s3_put": Constant(0.005 / 1000, "USD per PUT/COPY/POST/LIST request (Standard)", _S3,
                       "2024-01", PUBLISHED),
    "s3_storage_gb_month": Constant(0.023, "USD per GB-month (Standard, first 50 TB)", _S3,
                                    "2024-01", PUBLISHED),
    "athena_tb_scanned": Constant(5.0, "USD per TB scanned (10 MB minimum per query)",
                                  _ATHENA, "2024-01", PUBLISHED),
    "athena_min_bytes_per_query": Constant(
        10e6, "bytes billed at least per query (each query rounded up to 10 MB)", _ATHENA,
        "2024-01", PUBLISHED),
    "logs_gb_ingested": Constant(0.50, "USD per GB ingested (CloudWatch Logs, Standard)", _CW,
                                 "2024-01", PUBLISHED),
}  # fmt: skip

QUOTAS: dict[str, Constant] = {
    "lambda_account_concurrency": Constant(
        1000, "concurrent executions per account and region", _LAMBDA_LIMITS, "2024-01",
        PUBLISHED, "Service Quotas L-B99A9384 (adjustable)"),
    "lambda_scaling_per_10s": Constant(
        1000, "concurrent executions a function may add every 10 s",
        "https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html", "2023-11",
        PUBLISHED, "per function, since November 2023"),
    "lambda_mb_per_vcpu": Constant(
        1769, "MB of memory that buys one vCPU (CPU is proportional to memory)",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html", "2024-01",
        PUBLISHED),
    "api_gateway_rps": Constant(
        10_000, "requests/s per account and region, all APIs", _APIGW_LIMITS, "2017-06-06",
        STORED, "burst 5,000 (token bucket); Service Quotas L-8A5B8E43 (adjustable)"),
    "api_gateway_burst": Constant(5_000, "requests (bucket size)", _APIGW_LIMITS, "2017-06-06",
                                  STORED),
    "kinesis_shard_write_bytes": Constant(1_048_576, "bytes/s written per shard (data + key)",
                                          _KINESIS_LIMITS, "2024-01", STORED),
    "kinesis_shard_write_records": Constant(1000, "records/s written per shard",
                                            _KINESIS_LIMITS, "2024-01", STORED),
    "kinesis_shard_read_bytes": Constant(2_097_152, "bytes/s read per shard, shared by its "
                                         "consumers", _KINESIS_LIMITS, "2024-01", STORED),
    "kinesis_shards_per_region": Constant(500, "provisioned shards per account (us-east-1)",
                                          _KINESIS_LIMITS, "2024-01", PUBLISHED,
                                          "200 in most other regions; adjustable"),
    "dynamodb_partition_wcu": Constant(
        1000, "write units/s per partition (one key's ceiling)",
        "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
        "bp-partition-key-design.html", "2024-01", PUBLISHED),
    "dynamodb_partition_rcu": Constant(3000, "read units/s per partition", _DDB_LIMITS,
                                       "2024-01", PUBLISHED),
    "dynamodb_table_wcu": Constant(40_000, "write units/s per table (on-demand maximum)",
                                   _DDB_LIMITS, "2024-01", PUBLISHED, "adjustable"),
    "dynamodb_table_rcu": Constant(40_000, "read units/s per table (on-demand maximum)",
                                   _DDB_LIMITS, "2024-01", PUBLISHED, "adjustable"),
    "sfn_start_execution_rps": Constant(
        300, "StartExecution/s refill (bucket 1,300), Standard, us-east-1", _SFN_LIMITS,
        "2024-01", PUBLISHED, "adjustable; 150/s in smaller regions"),
    "sfn_transitions_rps": Constant(
        5000, "state transitions/s refill (bucket 5,000), Standard, us-east-1", _SFN_LIMITS,
        "2024-01", PUBLISHED, "adjustable; new accounts start lower (stored copy)"),
    "s3_put_per_prefix": Constant(3500, "PUT/COPY/POST/DELETE per second per prefix",
                                  _S3_PERF, "2018-07", PUBLISHED),
    "s3_get_per_prefix": Constant(5500, "GET/HEAD per second per prefix", _S3_PERF, "2018-07",
                                  PUBLISHED),
}  # fmt: skip

_LATENCY = (
    "estimate from typical in-region figures (DynamoDB: single-digit ms per item operation, "
    "AWS's own claim); not a published number: replace with X-Ray or CloudWatch figures"
)
#: Seconds an AWS call takes from a Lambda function in the same region, by operation.
LATENCIES: dict[str, Constant] = {
    name: Constant(seconds, "seconds per call", "estimate", CHECKED_ON, ESTIMATE, _LATENCY)
    for name, seconds in {
        "dynamodb.GetItem": 0.004, "dynamodb.PutItem": 0.006, "dynamodb.UpdateItem": 0.006,
        "dynamodb.DeleteItem": 0.006, "dynamodb.Query": 0.008, "dynamodb.BatchGetItem": 0.010,
        "dynamodb.BatchWriteItem": 0.015, "dynamodb.TransactWriteItems": 0.015,
        "kinesis.PutRecords": 0.020, "stepfunctions.StartExecution": 0.030,
        "s3.PutObject": 0.050, "sns.PublishBatch": 0.020, "sqs.SendMessageBatch": 0.015,
        "default": 0.020,
    }.items()
}  # fmt: skip


def latency(operation: str) -> float:
    """An AWS call's estimated latency in AWS ("service.Operation")."""
    return float(LATENCIES.get(operation, LATENCIES["default"]).value)


def every_constant() -> dict[str, Constant | Tiered]:
    return {**{f"price.{k}": v for k, v in PRICES.items()},
            **{f"quota.{k}": v for k, v in QUOTAS.items()},
            **{f"latency.{k}": v for k, v in LATENCIES.items()}}  # fmt: skip
