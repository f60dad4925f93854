"""How a stream event source mapping gives up on records, as the deployed one does: its
settings, read from `infra/functions.json` (the file both deploy paths apply, `make package`
merging it and `infra/deploy.py` setting it after `chalice deploy`), and the on-failure record
Lambda sends to the mapping's destination.

The settings of a handler's mapping are `Resources.<LogicalId>.Properties.Events.
<LogicalId><Kind>EventSource.Properties` (`<Kind>` Kinesis or Dynamodb, the names `chalice
package` gives): `BisectBatchOnFunctionError`, `MaximumRetryAttempts`,
`MaximumRecordAgeInSeconds` and `DestinationConfig.OnFailure.Destination`. What is not there
has Lambda's default: no bisection, -1 (no limit: records are retried until they expire from
the stream) for both limits, no destination. A destination names a queue or topic of
`infra/resources.json` (`{"Fn::GetAtt": [<queue>, "Arn"]}`, `{"Ref": <topic>}`) or an ARN;
its `${Stage}` is the stage the app runs as (`APP_STAGE`).

The on-failure record is Lambda's for streams (documented in "Retain discarded records"
for DynamoDB and Kinesis): `requestContext` (`requestId`, `functionArn`, `condition`:
RetryAttemptsExhausted or RecordAgeExceeded, `approximateInvokeCount`), `responseContext`
(`statusCode`, `executedVersion`, `functionError` when the function raised), `version`,
`timestamp`, and `DDBStreamBatchInfo` or `KinesisBatchInfo` (`shardId`, the first and last
sequence numbers, their approximate arrival, `batchSize`, `streamArn`). It holds no record:
the records stay in the stream, where the sequence numbers find them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.core import clock
from infra.paths import PROJECT_DIR

log = logging.getLogger(__name__)

#: What the deploy applies (infra/package.py and infra/deploy.py read the same files).
FUNCTION_SETTINGS = PROJECT_DIR / "infra" / "functions.json"
RESOURCES_TEMPLATE = PROJECT_DIR / "infra" / "resources.json"

#: Lambda's limits (CreateEventSourceMapping): -1 is "no limit".
MAX_RETRY_ATTEMPTS = 10_000
RECORD_AGE_SECONDS = (60, 604_800)
#: Tries at sending one on-failure record before it is logged instead (an error line that
#: holds the whole record) and the shard goes on.
DESTINATION_ATTEMPTS = 3

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(frozen=True)
class Destination:
    """An on-failure destination: an SQS queue or SNS topic, by name."""

    service: str  # "sqs" or "sns"
    name: str
    #: The resources.json resource it refers to (None for a destination given as an ARN).
    logical_id: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"{'queue' if self.service == 'sqs' else 'topic'} {self.name}"


@dataclass(frozen=True)
class StreamMapping:
    """The error handling settings of one stream event source mapping (Lambda's defaults
    where none is set)."""

    bisect: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1
    destination: Destination | None = None

    def exhausted(self, failures: int) -> bool:
        """Whether a batch that failed `failures` times (its first invocation and its
        retries) is given up on."""
        return 0 <= self.maximum_retry_attempts < failures

    def retry_note(self, failures: int) -> str:
        """`retry 2 of 10` while retries are bounded, `retried` otherwise."""
        if self.maximum_retry_attempts < 0:
            return "retried"
        return f"retry {failures} of {self.maximum_retry_attempts}"


def stream_mapping(handler: str, kind: str, stage: str | None = None) -> StreamMapping:
    """The settings infra/functions.json gives the mapping of `handler` (a Chalice function
    name) whose kind is `kind` ("Kinesis" or "Dynamodb"); ValueError if they are not valid."""
    from chalice.utils import to_cfn_resource_name

    logical_id = to_cfn_resource_name(handler)
    resources = json.loads(FUNCTION_SETTINGS.read_text()).get("Resources", {})
    events = resources.get(logical_id, {}).get("Properties", {}).get("Events", {})
    suffix = f"{kind}EventSource"
    named = [name for name in events if name.endswith(suffix)]
    if f"{logical_id}{suffix}" in events:
        named = [f"{logical_id}{suffix}"]
    if not named:
        return StreamMapping()
    if len(named) > 1:
        raise ValueError(f"{FUNCTION_SETTINGS.name}: {logical_id} has several {suffix}s: {named}")
    where = f"{FUNCTION_SETTINGS.name}: {logical_id}.{named[0]}"
    properties = events[named[0]].get("Properties", {})
    bisect = properties.get("BisectBatchOnFunctionError", False)
    retries = properties.get("MaximumRetryAttempts", -1)
    age = properties.get("MaximumRecordAgeInSeconds", -1)
    if not isinstance(bisect, bool):
        raise ValueError(f"{where}: BisectBatchOnFunctionError must be true or false")
    if not _whole(retries) or not -1 <= retries <= MAX_RETRY_ATTEMPTS:
        raise ValueError(f"{where}: MaximumRetryAttempts must be -1 to {MAX_RETRY_ATTEMPTS}")
    low, high = RECORD_AGE_SECONDS
    if not _whole(age) or not (age == -1 or low <= age <= high):
        raise ValueError(f"{where}: MaximumRecordAgeInSeconds must be -1 or {low} to {high}")
    target = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    found = None if target is None else destination(target, where, stage)
    return StreamMapping(bisect, retries, age, found)


def async_destination(handler: str, stage: str | None = None) -> Destination | None:
    """The on-failure destination infra/functions.json gives the asynchronous invocations of
    `handler` (`Resources.<LogicalId>.Properties.EventInvokeConfig.DestinationConfig`):
    where Lambda sends an event that failed its attempts. None if it has none."""
    from chalice.utils import to_cfn_resource_name

    logical_id = to_cfn_resource_name(handler)
    resources = json.loads(FUNCTION_SETTINGS.read_text()).get("Resources", {})
    config = resources.get(logical_id, {}).get("Properties", {}).get("EventInvokeConfig", {})
    target = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    where = f"{FUNCTION_SETTINGS.name}: {logical_id}.EventInvokeConfig"
    return None if target is None else destination(target, where, stage)


def function_arn(runtime: Any, handler: str) -> str:
    """The ARN of the deployed function of `handler` (`<app>-<stage>-<name>`), as on-failure
    records name it."""
    stage = os.environ.get("APP_STAGE", "local")
    name = f"{getattr(runtime.app, 'app_name', 'app')}-{stage}-{handler}"
    return f"arn:aws:lambda:{runtime.region}:{runtime.account()}:function:{name}"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def destination(
    target: Any, where: str, stage: str | None, resources: dict[str, Any] | None = None
) -> Destination:
    """A destination as functions.json names it (or a RedrivePolicy's
    `deadLetterTargetArn`): an ARN, or a queue or topic of resources.json (`resources`, else
    RESOURCES_TEMPLATE's) by reference."""
    if isinstance(target, str):
        match = re.fullmatch(r"arn:aws[\w-]*:(sqs|sns):[^:]*:[^:]*:([^:/]+)", target)
        if match is None:
            raise ValueError(f"{where}: not an SQS queue or SNS topic ARN: {target}")
        return Destination(match.group(1), match.group(2))
    if isinstance(target, dict) and set(target) == {"Fn::GetAtt"}:
        logical_id, attribute = target["Fn::GetAtt"]
        wanted = {"Arn": "AWS::SQS::Queue", "TopicArn": "AWS::SNS::Topic"}.get(attribute)
    elif isinstance(target, dict) and set(target) == {"Ref"}:
        logical_id, wanted = target["Ref"], "AWS::SNS::Topic"  # a queue's Ref is its URL
    else:
        raise ValueError(f"{where}: an on-failure destination Lambda cannot use: {target}")
    if resources is None:
        resources = json.loads(RESOURCES_TEMPLATE.read_text())["Resources"]
    resource = resources.get(logical_id)
    if resource is None or resource.get("Type") != wanted:
        raise ValueError(f"{where}: the destination {target} is not a {wanted} of "
                         f"{RESOURCES_TEMPLATE.name}")  # fmt: skip
    service, key = ("sqs", "QueueName") if wanted == "AWS::SQS::Queue" else ("sns", "TopicName")
    name = resource.get("Properties", {}).get(key)
    if name is None:
        raise ValueError(f"{where}: {logical_id} has no {key} (its name would be generated)")
    return Destination(service, substituted(name, where, stage), str(logical_id))


def substituted(name: Any, where: str, stage: str | None) -> str:
    """A resource's name: a string, or `Fn::Sub` of one with `${Stage}`."""
    text = name.get("Fn::Sub") if isinstance(name, dict) else name
    if not isinstance(text, str):
        raise ValueError(f"{where}: a destination name that is not a string: {name}")
    stage = stage or os.environ.get("APP_STAGE")
    if "${Stage}" in text and not stage:
        raise ValueError(f"{where}: {text} needs the stage, and APP_STAGE is not set")
    text = text.replace("${Stage}", stage or "")
    if "${" in text:
        raise ValueError(f"{where}: {text}: only ${{Stage}} is substituted here")
    return text


@dataclass
class FailedBatch:
    """Records given up on, and why: what the on-failure record says."""

    condition: str
    shard_id: str
    stream_arn: str
    numbers: list[str]  # sequence numbers, in shard order
    arrivals: tuple[datetime, datetime]  # the first and the last record's
    invocations: int  # how many times the batch was invoked, all failed
    function_error: bool  # whether the last invocation raised (not a partial answer)


def on_failure_record(
    failed: FailedBatch, function_arn: str, batch_info: str, arrival_timespec: str
) -> dict[str, Any]:
    """Lambda's on-failure record for a stream batch (`batch_info`: DDBStreamBatchInfo or
    KinesisBatchInfo; arrivals to the second for DynamoDB, the millisecond for Kinesis)."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": failed.condition,
            "approximateInvokeCount": failed.invocations,
        }
    }
    if failed.invocations:
        response = {"statusCode": 200, "executedVersion": "$LATEST"}
        if failed.function_error:
            response["functionError"] = "Unhandled"
        record["responseContext"] = response
    first, last = failed.arrivals
    record.update(
        version="1.0",
        timestamp=clock.timestamp(timespec="milliseconds"),
    )
    record[batch_info] = {
        "shardId": failed.shard_id,
        "startSequenceNumber": failed.numbers[0],
        "endSequenceNumber": failed.numbers[-1],
        "approximateArrivalOfFirstRecord": clock.timestamp(first, timespec=arrival_timespec),
        "approximateArrivalOfLastRecord": clock.timestamp(last, timespec=arrival_timespec),
        "batchSize": len(failed.numbers),
        "streamArn": failed.stream_arn,
    }
    return record


def send_on_failure(runtime: Any, destination: Destination, record: dict[str, Any]) -> bool:
    """Sends `record` to `destination`, trying DESTINATION_ATTEMPTS times (the runtime's
    retry backoff apart); False, with an error line holding the record, if it could not."""
    body = json.dumps(record)
    wait = runtime.retry_backoff[0]
    for attempt in range(1, DESTINATION_ATTEMPTS + 1):
        try:
            if destination.service == "sqs":
                sqs = runtime.client("sqs")
                url = sqs.get_queue_url(QueueName=destination.name)["QueueUrl"]
                sqs.send_message(QueueUrl=url, MessageBody=body)
            else:
                arn = f"arn:aws:sns:{runtime.region}:{runtime.account()}:{destination.name}"
                runtime.client("sns").publish(TopicArn=arn, Message=body)
            return True
        except Exception as exc:
            log.warning("sending an on-failure record to %s failed (attempt %d of %d): %s",
                        destination.describe(), attempt, DESTINATION_ATTEMPTS, exc)  # fmt: skip
            if attempt < DESTINATION_ATTEMPTS and runtime.stopping.wait(wait):
                break
            wait = min(wait * 2, runtime.retry_backoff[1])
    log.error("on-failure record not delivered to %s; here it is: %s", destination.describe(), body)
    return False
