"""The local event runtime (see core.py)."""

from local.events.core import (
    AsyncDelivery,
    EventRuntime,
    Invocation,
    ScheduledJob,
    StreamPoller,
    attribute_value_json,
    dynamodb_table_of,
    lambda_record,
    reported_identifiers,
    s3_record,
    stream_batch_failures,
)

__all__ = [
    "AsyncDelivery",
    "EventRuntime",
    "Invocation",
    "ScheduledJob",
    "StreamPoller",
    "attribute_value_json",
    "dynamodb_table_of",
    "lambda_record",
    "reported_identifiers",
    "s3_record",
    "stream_batch_failures",
]
