"""Telemetry: `POST /events` onto a Kinesis stream, and the stream's processor.

- `telemetry_ingest().ingest(body) -> dict` for `POST /events` (`ingest`): the 202 answer,
  or an ApiError (400, 503) when no event was accepted;
- `telemetry_processor().process(records, remaining_ms) -> {"batchItemFailures": [...]}`
  for the `@app.on_kinesis_record` handler, given `event.to_dict()["Records"]` and the
  context's `get_remaining_time_in_millis` (a deadline; None: none) (`processor`). It
  prints its EMF metrics itself (Powertools `flush_metrics`), so the handler needs no
  decorator.

Resource names are read when a factory is first called; each factory says with `@needs`
what it does with which resource (`core.resources`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.core.resources import Resource, needs

if TYPE_CHECKING:
    from chalicelib.telemetry.ingest import TelemetryIngest
    from chalicelib.telemetry.processor import TelemetryProcessor

TELEMETRY_STREAM = Resource("TelemetryStream")
ACTIVITIES_TABLE = Resource("ActivitiesTable")
METRICS_TABLE = Resource("MetricsTable")
TRANSACTIONS_TABLE = Resource("TransactionsTable")
BASELINES_TABLE = Resource("BaselinesTable")
ANOMALY_ALERTS_TOPIC = Resource("AnomalyAlertsTopic")
DATA_LAKE_BUCKET = Resource("DataLakeBucket")
TELEMETRY_QUARANTINE_QUEUE = Resource("TelemetryQuarantineQueue")
TRANSACTIONS_BY_USER_INDEX = "by-user"
STREAM_UNAVAILABLE = "stream unavailable, retry"  # the reason `ingest` gives (ingest.py)


@cache
@needs(TELEMETRY_STREAM.allow("kinesis:PutRecords"))
def telemetry_ingest() -> TelemetryIngest:
    """The `POST /events` service, putting records on the telemetry stream."""
    from chalicelib.telemetry.adapters import KinesisStream
    from chalicelib.telemetry.ingest import TelemetryIngest

    return TelemetryIngest(KinesisStream(TELEMETRY_STREAM.name))


@cache
@needs(
    ACTIVITIES_TABLE.allow("dynamodb:BatchWriteItem"),
    METRICS_TABLE.allow("dynamodb:BatchWriteItem"),
    TRANSACTIONS_TABLE.allow("dynamodb:BatchWriteItem"),
    # Fraud velocity: a user's recent transactions.
    TRANSACTIONS_TABLE.allow("dynamodb:Query", within=f"/index/{TRANSACTIONS_BY_USER_INDEX}"),
    BASELINES_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
    ANOMALY_ALERTS_TOPIC.allow("sns:Publish"),
    DATA_LAKE_BUCKET.allow("s3:PutObject", within="/telemetry/*"),
    TELEMETRY_QUARANTINE_QUEUE.allow("sqs:GetQueueUrl", "sqs:SendMessage"),
)
def telemetry_processor() -> TelemetryProcessor:
    """The stream processor, wired to DynamoDB, SNS, SQS and S3 on first use."""
    from chalicelib.core import aws
    from chalicelib.telemetry.adapters import (
        DynamoBaselines,
        DynamoItemWriter,
        DynamoTransactionHistory,
        S3Archive,
        SnsAlerts,
        SqsQuarantine,
    )
    from chalicelib.telemetry.processor import TelemetryProcessor

    tables = {
        "activities": ACTIVITIES_TABLE.name,
        "metrics": METRICS_TABLE.name,
        "transactions": TRANSACTIONS_TABLE.name,
    }
    topic = ANOMALY_ALERTS_TOPIC.name
    queue = TELEMETRY_QUARANTINE_QUEUE.name
    return TelemetryProcessor(
        tables,
        DynamoItemWriter(),
        DynamoBaselines(BASELINES_TABLE.name),
        DynamoTransactionHistory(tables["transactions"], TRANSACTIONS_BY_USER_INDEX),
        SnsAlerts(lambda: aws.topic_arn(topic)),
        SqsQuarantine(lambda: aws.queue_url(queue)),
        S3Archive(DATA_LAKE_BUCKET.name),
    )
