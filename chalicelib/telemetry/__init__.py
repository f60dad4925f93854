"""Telemetry: `POST /events` onto a Kinesis stream, and the stream's processor.

- `telemetry_ingest().ingest(body) -> dict` for `POST /events` (`ingest`): the 202 answer,
  or an ApiError (400, 503) when no event was accepted;
- `telemetry_processor().process(records, remaining_ms) -> {"batchItemFailures": [...]}`
  for the `@app.on_kinesis_record` handler, given `event.to_dict()["Records"]` and the
  context's `get_remaining_time_in_millis` (a deadline; None: none) (`processor`). It
  prints its EMF metrics itself (Powertools `flush_metrics`), so the handler needs no
  decorator.

Resource names come from the stage's settings (`core.settings`), read when a factory is
first called.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.telemetry.ingest import TelemetryIngest
    from chalicelib.telemetry.processor import TelemetryProcessor

TRANSACTIONS_BY_USER_INDEX = "by-user"
STREAM_UNAVAILABLE = "stream unavailable, retry"  # the reason `ingest` gives (ingest.py)


@cache
def telemetry_ingest() -> TelemetryIngest:
    """The `POST /events` service, putting records on the telemetry stream."""
    from chalicelib.core.settings import get_settings
    from chalicelib.telemetry.adapters import KinesisStream
    from chalicelib.telemetry.ingest import TelemetryIngest

    return TelemetryIngest(KinesisStream(get_settings().telemetry_stream_name))


@cache
def telemetry_processor() -> TelemetryProcessor:
    """The stream processor, wired to DynamoDB, SNS, SQS and S3 on first use."""
    from chalicelib.core import aws
    from chalicelib.core.settings import get_settings
    from chalicelib.telemetry.adapters import (
        DynamoBaselines,
        DynamoItemWriter,
        DynamoTransactionHistory,
        S3Archive,
        SnsAlerts,
        SqsQuarantine,
    )
    from chalicelib.telemetry.processor import TelemetryProcessor

    settings = get_settings()
    tables = {
        "activities": settings.activities_table_name,
        "metrics": settings.metrics_table_name,
        "transactions": settings.transactions_table_name,
    }
    topic = settings.anomaly_alerts_topic_name
    queue = settings.telemetry_quarantine_queue_name
    return TelemetryProcessor(
        tables,
        DynamoItemWriter(),
        DynamoBaselines(settings.baselines_table_name),
        DynamoTransactionHistory(tables["transactions"], TRANSACTIONS_BY_USER_INDEX),
        SnsAlerts(lambda: aws.topic_arn(topic)),
        SqsQuarantine(lambda: aws.queue_url(queue)),
        S3Archive(settings.data_lake_bucket_name),
    )
