"""Telemetry: `POST /events` onto a Kinesis stream, and the stream's processor.

- `telemetry_ingest().ingest(body, principal) -> dict` for `POST /events` (`ingest`): the
  202 answer, or an ApiError: 403 (an event its caller may not send), 429 (over the caller's
  events or bytes per minute), 413 (more than a minute's worth in one request), 400 or 503
  (no event accepted);
- `telemetry_processor().process(records, remaining_ms) -> {"batchItemFailures": [...]}`
  for the `@app.on_kinesis_record` handler, given `event.to_dict()["Records"]` and the
  context's `get_remaining_time_in_millis` (a deadline; None: none) (`processor`). It
  prints its EMF metrics itself (Powertools `flush_metrics`), so the handler needs no
  decorator;
- `telemetry_owner_data()`: a user's telemetry, `export(user_id)` (`{"activities": [...],
  "transactions": [...]}`) and `erase(user_id)` (activities deleted, transactions
  pseudonymised, the data lake's identity forgotten; `{"activities": n, "transactions": n,
  "lake_identities": n}`), for the user erasure (`owner_data`);
- `telemetry_owner_export()`: the same `export(user_id)` with read grants only, for the
  API's `GET /users/{id}/export` (its function may not erase anything).

Resource names are read when a factory is first called; each factory says with `@needs`
what it does with which resource (`core.resources`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.core.resources import Resource, StageSetting, needs

if TYPE_CHECKING:
    from chalicelib.telemetry.ingest import TelemetryIngest
    from chalicelib.telemetry.owner_data import (
        DynamoTelemetryOwnerData,
        DynamoTelemetryOwnerExport,
    )
    from chalicelib.telemetry.processor import TelemetryProcessor

TELEMETRY_STREAM = Resource("TelemetryStream")
ACTIVITIES_TABLE = Resource("ActivitiesTable")
METRICS_TABLE = Resource("MetricsTable")
TRANSACTIONS_TABLE = Resource("TransactionsTable")
BASELINES_TABLE = Resource("BaselinesTable")
ANOMALY_ALERTS_TOPIC = Resource("AnomalyAlertsTopic")
DATA_LAKE_BUCKET = Resource("DataLakeBucket")
TELEMETRY_QUARANTINE_QUEUE = Resource("TelemetryQuarantineQueue")
#: A digest of the user id -> the data lake's pseudonym and secret (`pseudonyms`); never
#: read by analytics.
TELEMETRY_PSEUDONYMS_TABLE = Resource("TelemetryPseudonymsTable")
QUOTAS_TABLE = Resource("QuotasTable")
TRANSACTIONS_BY_USER_INDEX = "by-user"
STREAM_UNAVAILABLE = "stream unavailable, retry"  # the reason `ingest` gives (ingest.py)
#: Events, and their bytes on the stream, one user (or one machine identity) may have
#: accepted per minute (`ingest`).
EVENTS_PER_MINUTE = StageSetting("TelemetryEventsPerMinute")
EVENT_BYTES_PER_MINUTE = StageSetting("TelemetryEventBytesPerMinute")
MACHINE_EVENTS_PER_MINUTE = StageSetting("TelemetryMachineEventsPerMinute")
MACHINE_EVENT_BYTES_PER_MINUTE = StageSetting("TelemetryMachineEventBytesPerMinute")
#: Fraud alerts published per user and hour; further ones are counted, not published.
FRAUD_ALERTS_PER_USER_HOUR = StageSetting("TelemetryFraudAlertsPerUserHour")


@cache
@needs(
    TELEMETRY_STREAM.allow("kinesis:PutRecords"),
    # Events and bytes in one transaction (authorised per item as UpdateItem).
    QUOTAS_TABLE.allow("dynamodb:UpdateItem"),
    EVENTS_PER_MINUTE.used(),
    EVENT_BYTES_PER_MINUTE.used(),
    MACHINE_EVENTS_PER_MINUTE.used(),
    MACHINE_EVENT_BYTES_PER_MINUTE.used(),
)
def telemetry_ingest() -> TelemetryIngest:
    """The `POST /events` service: per-caller quotas, records on the telemetry stream."""
    from chalicelib.core.quotas import DynamoQuotas, Quota
    from chalicelib.telemetry.delivery import KinesisStream
    from chalicelib.telemetry.ingest import QUOTA_WINDOW_SECONDS, CallerQuotas, TelemetryIngest

    def per_minute(name: str, setting: StageSetting) -> Quota:
        return Quota(name, int(setting.value), QUOTA_WINDOW_SECONDS)

    return TelemetryIngest(
        KinesisStream(TELEMETRY_STREAM.name),
        DynamoQuotas(QUOTAS_TABLE.name),
        CallerQuotas(
            per_minute("events", EVENTS_PER_MINUTE),
            per_minute("event-bytes", EVENT_BYTES_PER_MINUTE),
        ),
        CallerQuotas(
            per_minute("machine-events", MACHINE_EVENTS_PER_MINUTE),
            per_minute("machine-event-bytes", MACHINE_EVENT_BYTES_PER_MINUTE),
        ),
    )


#: What reading a user's telemetry takes (the export).
OWNER_READS = (
    ACTIVITIES_TABLE.allow("dynamodb:Query"),
    TRANSACTIONS_TABLE.allow("dynamodb:Query", within=f"/index/{TRANSACTIONS_BY_USER_INDEX}"),
    TRANSACTIONS_TABLE.allow("dynamodb:BatchGetItem"),
)


@cache
@needs(*OWNER_READS)
def telemetry_owner_export() -> DynamoTelemetryOwnerExport:
    """A user's telemetry for `export(user_id)` only: the API's role may read it, not erase."""
    from chalicelib.telemetry.owner_data import DynamoTelemetryOwnerExport

    return DynamoTelemetryOwnerExport(
        ACTIVITIES_TABLE.name, TRANSACTIONS_TABLE.name, TRANSACTIONS_BY_USER_INDEX
    )


@cache
@needs(
    *OWNER_READS,
    ACTIVITIES_TABLE.allow("dynamodb:BatchWriteItem"),
    # Pseudonymises each transaction in a transaction (authorised per item as PutItem and
    # DeleteItem).
    TRANSACTIONS_TABLE.allow("dynamodb:PutItem", "dynamodb:DeleteItem"),
    # The lake identity becomes a tombstone.
    TELEMETRY_PSEUDONYMS_TABLE.allow("dynamodb:PutItem"),
)
def telemetry_owner_data() -> DynamoTelemetryOwnerData:
    """A user's telemetry: `export(user_id)` and `erase(user_id)` (`owner_data`)."""
    from chalicelib.telemetry.owner_data import DynamoTelemetryOwnerData
    from chalicelib.telemetry.pseudonyms import DynamoPseudonyms

    return DynamoTelemetryOwnerData(
        ACTIVITIES_TABLE.name,
        TRANSACTIONS_TABLE.name,
        DynamoPseudonyms(TELEMETRY_PSEUDONYMS_TABLE.name),
        TRANSACTIONS_BY_USER_INDEX,
    )


@cache
@needs(
    # Items written, and their stamps read first (producer duplicates, `duplicates`).
    ACTIVITIES_TABLE.allow("dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"),
    METRICS_TABLE.allow("dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"),
    TRANSACTIONS_TABLE.allow("dynamodb:BatchWriteItem", "dynamodb:BatchGetItem"),
    # Fraud velocity: a user's recent transactions.
    TRANSACTIONS_TABLE.allow("dynamodb:Query", within=f"/index/{TRANSACTIONS_BY_USER_INDEX}"),
    BASELINES_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:UpdateItem"),
    ANOMALY_ALERTS_TOPIC.allow("sns:Publish"),
    DATA_LAKE_BUCKET.allow("s3:PutObject", within="/telemetry/*"),
    TELEMETRY_QUARANTINE_QUEUE.allow("sqs:GetQueueUrl", "sqs:SendMessage"),
    # The lake identities: read, created once per user (a conditional put, which returns
    # the item there when it is refused).
    TELEMETRY_PSEUDONYMS_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:PutItem"),
    # The fraud alerts let through per user and hour (`tables.DynamoAlertBudget`).
    QUOTAS_TABLE.allow("dynamodb:UpdateItem"),
    FRAUD_ALERTS_PER_USER_HOUR.used(),
)
def telemetry_processor() -> TelemetryProcessor:
    """The stream processor, wired to DynamoDB, SNS, SQS and S3 on first use."""
    from chalicelib.core import aws
    from chalicelib.telemetry.delivery import S3Archive, SnsAlerts, SqsQuarantine
    from chalicelib.telemetry.duplicates import DynamoItemStamps
    from chalicelib.telemetry.processor import TelemetryProcessor
    from chalicelib.telemetry.pseudonyms import CachedPseudonyms, DynamoPseudonyms
    from chalicelib.telemetry.tables import (
        DynamoAlertBudget,
        DynamoBaselines,
        DynamoItemWriter,
        DynamoTransactionHistory,
    )

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
        CachedPseudonyms(DynamoPseudonyms(TELEMETRY_PSEUDONYMS_TABLE.name)),
        alert_budget=DynamoAlertBudget(
            QUOTAS_TABLE.name, limit=int(FRAUD_ALERTS_PER_USER_HOUR.value)
        ),
        stamps=DynamoItemStamps(),
    )
