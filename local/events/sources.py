"""Which delivery feeds which kind of Chalice event source: the one place a new kind of
source is registered.

`EventRuntime.start()` takes each of `app.event_sources` (the config objects Chalice's
decorators register), finds the first entry below whose config class it is an instance of,
and runs that delivery for it (see `Delivery` in core.py). A source of a kind not listed here
is reported as not delivered locally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalice.app import (
    CloudWatchEventConfig,
    DynamoDBEventConfig,
    KinesisEventConfig,
    S3EventConfig,
    ScheduledEventConfig,
    SNSEventConfig,
    SQSEventConfig,
)

from local.events.core import Delivery, EventRuntime
from local.events.dynamodb_streams import DynamoDBStreamPoller
from local.events.eventbridge import EventBridgeRule
from local.events.kinesis import KinesisPoller
from local.events.s3 import S3Notification
from local.events.schedules import ScheduledJob
from local.events.sns import SnsSubscription
from local.events.sqs import SqsPoller

#: The config class of a kind of Chalice event source -> what delivers it, called with
#: (runtime, source).
DELIVERIES: dict[type, Callable[[EventRuntime, Any], Delivery]] = {
    SQSEventConfig: SqsPoller,  # @app.on_sqs_message
    SNSEventConfig: SnsSubscription,  # @app.on_sns_message
    S3EventConfig: S3Notification,  # @app.on_s3_event
    CloudWatchEventConfig: EventBridgeRule,  # @app.on_cw_event
    ScheduledEventConfig: ScheduledJob,  # @app.schedule
    KinesisEventConfig: KinesisPoller,  # @app.on_kinesis_record
    DynamoDBEventConfig: DynamoDBStreamPoller,  # @app.on_dynamodb_record
}
