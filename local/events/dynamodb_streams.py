"""DynamoDB streams (`@app.on_dynamodb_record`), read as streams.py describes, with Lambda's
DynamoDB stream records: `eventName` INSERT/MODIFY/REMOVE, `dynamodb` with `Keys`,
`NewImage`, `OldImage` as AttributeValue JSON, `ApproximateCreationDateTime` in epoch seconds.
A record expires after 24 hours; a batch given up on is described by a `DDBStreamBatchInfo`
(arrival times to the second, as DynamoDB Streams stamps them).

A stream ARN whose label is not the table's current stream (the table was created again, or
the ARN was written down before it was) is replaced, with a warning, by the table's
`LatestStreamArn`.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.aws import error_code
from local.events.core import EventRuntime
from local.events.streams import StreamPoller, StreamShard, stream_shard

log = logging.getLogger(__name__)

#: GetRecords returns at most this many records a call.
DYNAMODB_STREAMS_MAX_RECORDS = 1_000


class DynamoDBStreamPoller(StreamPoller):
    SOURCE = "aws:dynamodb"
    KIND = "Dynamodb"
    BATCH_INFO = "DDBStreamBatchInfo"
    ARRIVAL_TIMESPEC = "seconds"
    MAX_RECORDS = DYNAMODB_STREAMS_MAX_RECORDS

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._streams = runtime.client("dynamodbstreams")
        self._dynamodb = runtime.client("dynamodb")

    def _find_stream(self) -> str:
        """The source's stream ARN; or, if that is not the table's stream (any more), the
        table's current one."""
        arn = str(self._source.stream_arn)
        try:
            found = self._streams.describe_stream(StreamArn=arn, Limit=1)["StreamDescription"]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            found = None
        # AWS does not know an ARN with another label; moto answers with the current label.
        if found is not None and found.get("StreamLabel") in (None, arn.rsplit("/", 1)[-1]):
            return arn
        table = dynamodb_table_of(arn)
        current = self._dynamodb.describe_table(TableName=table)["Table"].get("LatestStreamArn")
        if not current:
            raise LookupError(f"table {table} has no stream")
        log.warning("%s: no stream %s; reading table %s's current stream %s instead",
                    self.name, arn, table, current)  # fmt: skip
        return str(current)

    def _list_shards(self) -> list[StreamShard]:
        shards: list[StreamShard] = []
        after: dict[str, str] = {}
        while True:
            found = self._streams.describe_stream(StreamArn=self.arn, **after)
            shards += [stream_shard(shard) for shard in found["StreamDescription"]["Shards"]]
            last = found["StreamDescription"].get("LastEvaluatedShardId")
            if not last:
                return shards
            after = {"ExclusiveStartShardId": last}

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        position = {"SequenceNumber": after} if after is not None else {}
        return str(
            self._streams.get_shard_iterator(
                StreamArn=self.arn, ShardId=shard_id, ShardIteratorType=kind, **position
            )["ShardIterator"]
        )

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        page = self._streams.get_records(ShardIterator=iterator, Limit=limit)
        return page.get("Records", []), page.get("NextShardIterator"), 0

    def sequence_number(self, record: dict[str, Any]) -> str:
        return str(record["dynamodb"]["SequenceNumber"])

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        return dynamodb_lambda_record(record, self.arn, self._runtime.region)

    def arrival(self, record: dict[str, Any]) -> datetime:
        created = record["dynamodb"]["ApproximateCreationDateTime"]
        if isinstance(created, datetime):
            return created if created.tzinfo else created.replace(tzinfo=UTC)
        return datetime.fromtimestamp(float(created), UTC)


def dynamodb_table_of(stream_arn: str) -> str:
    """`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL` -> NAME."""
    parts = stream_arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 else []
    if len(resource) < 2 or resource[0] != "table" or not resource[1]:
        raise ValueError(f"not a DynamoDB stream ARN: {stream_arn}")
    return resource[1]


def dynamodb_lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A DynamoDB Streams GetRecords record (as boto3 parses it) as Lambda puts it in an
    event: epoch seconds for the datetime, AttributeValue JSON for the images."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = created.timestamp()
    for image in ("Keys", "NewImage", "OldImage"):
        if image in change:
            change[image] = {name: attribute_value_json(v) for name, v in change[image].items()}
    lambda_record = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion") or region,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # deletions by TTL
        lambda_record["userIdentity"] = record["userIdentity"]
    return lambda_record


def attribute_value_json(value: Any) -> Any:
    """An AttributeValue as boto3 parsed it, back in its JSON form (binary as base64)."""
    if not isinstance(value, dict):
        return value
    wire: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == "B":
            wire[kind] = _base64(inner)
        elif kind == "BS":
            wire[kind] = [_base64(item) for item in inner]
        elif kind == "M":
            wire[kind] = {name: attribute_value_json(item) for name, item in inner.items()}
        elif kind == "L":
            wire[kind] = [attribute_value_json(item) for item in inner]
        else:
            wire[kind] = inner
    return wire


def _base64(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value
