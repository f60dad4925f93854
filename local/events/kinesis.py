"""Kinesis streams (`@app.on_kinesis_record`), read as streams.py describes, with Lambda's
`kinesis` records: `data` base64, `approximateArrivalTimestamp` in epoch seconds, `eventID`
`shardId-...:<sequence number>`. A record expires after the stream's retention period; a
batch given up on is described by a `KinesisBatchInfo` (arrival times to the millisecond).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from local.events.core import EventRuntime
from local.events.streams import StreamPoller, StreamShard, stream_shard

#: GetRecords returns at most this many records a call.
KINESIS_MAX_RECORDS = 10_000


class KinesisPoller(StreamPoller):
    SOURCE = "aws:kinesis"
    KIND = "Kinesis"
    BATCH_INFO = "KinesisBatchInfo"
    ARRIVAL_TIMESPEC = "milliseconds"
    MAX_RECORDS = KINESIS_MAX_RECORDS

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._kinesis = runtime.client("kinesis")
        stream = str(source.stream)
        self._stream = stream.rsplit("/", 1)[1] if stream.startswith("arn:") else stream
        self._role_arn = ""

    def _find_stream(self) -> str:
        summary = self._kinesis.describe_stream_summary(StreamName=self._stream)
        description = summary["StreamDescriptionSummary"]
        app_name = getattr(self._runtime.app, "app_name", "app")
        self._role_arn = f"arn:aws:iam::{self._runtime.account()}:role/{app_name}-local"
        if description.get("RetentionPeriodHours"):
            self.retention_seconds = int(description["RetentionPeriodHours"]) * 3600
        return str(description["StreamARN"])

    def _list_shards(self) -> list[StreamShard]:
        shards: list[StreamShard] = []
        page = self._kinesis.list_shards(StreamName=self._stream)
        while True:
            shards += [stream_shard(shard) for shard in page.get("Shards", [])]
            if not page.get("NextToken"):
                return shards
            page = self._kinesis.list_shards(NextToken=page["NextToken"])

    def _iterator(self, shard_id: str, kind: str, after: str | None = None) -> str:
        position = {"StartingSequenceNumber": after} if after is not None else {}
        return str(
            self._kinesis.get_shard_iterator(
                StreamName=self._stream, ShardId=shard_id, ShardIteratorType=kind, **position
            )["ShardIterator"]
        )

    def _read(self, iterator: str, limit: int) -> tuple[list[dict[str, Any]], str | None, int]:
        page = self._kinesis.get_records(ShardIterator=iterator, Limit=limit)
        behind = int(page.get("MillisBehindLatest") or 0)
        return page.get("Records", []), page.get("NextShardIterator"), behind

    def sequence_number(self, record: dict[str, Any]) -> str:
        return str(record["SequenceNumber"])

    def lambda_record(self, record: dict[str, Any], shard_id: str) -> dict[str, Any]:
        return kinesis_lambda_record(
            record, shard_id, self.arn, self._runtime.region, self._role_arn
        )

    def arrival(self, record: dict[str, Any]) -> datetime:
        arrived = record["ApproximateArrivalTimestamp"]
        if isinstance(arrived, datetime):
            return arrived if arrived.tzinfo else arrived.replace(tzinfo=UTC)
        return datetime.fromtimestamp(float(arrived), UTC)


def kinesis_lambda_record(
    record: dict[str, Any], shard_id: str, stream_arn: str, region: str, role_arn: str
) -> dict[str, Any]:
    """A Kinesis GetRecords record as Lambda puts it in an event."""
    arrived = record["ApproximateArrivalTimestamp"]
    data = record["Data"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data,
            "approximateArrivalTimestamp": (
                arrived.timestamp() if isinstance(arrived, datetime) else float(arrived)
            ),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": role_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }
