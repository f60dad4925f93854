"""S3 bucket notifications (`@app.on_s3_event`): a QueueConfiguration `local-events-<handler>`
(its events, prefix and suffix) is added to the bucket's notification configuration, the
others kept; each record is one invocation, `{"Records": [record]}` in S3's shape (the key
URL-encoded as S3 does; what the emulator leaves out of a record, such as the `sequencer`,
filled in); S3's `s3:TestEvent` is not delivered. A bucket that does not exist yet is waited
for. Retries and the failed queue: async_delivery.py.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from local.events.async_delivery import AsyncDelivery
from local.events.core import EventRuntime

#: One process's handlers on one bucket change its notification configuration one at a time.
_BUCKET_CONFIGURATION = threading.Lock()


class S3Notification(AsyncDelivery):
    """A bucket's object events, through a QueueConfiguration added to (never replacing) the
    bucket's notification configuration: one record per invocation, in S3's shape."""

    SOURCE = "aws:s3"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._s3 = runtime.client("s3")

    def configuration(self, queue_arn: str) -> dict[str, Any]:
        """The QueueConfiguration of the handler's events, prefix and suffix."""
        mine: dict[str, Any] = {
            "Id": self.queue_name,
            "QueueArn": queue_arn,
            "Events": list(self._source.events),
        }
        rules = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", self._source.prefix), ("suffix", self._source.suffix))
            if value
        ]
        if rules:
            mine["Filter"] = {"Key": {"FilterRules": rules}}
        return mine

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        bucket = self._source.bucket
        self._allow(queue_url, queue_arn, "s3.amazonaws.com", f"arn:aws:s3:::{bucket}")
        mine = self.configuration(queue_arn)
        with _BUCKET_CONFIGURATION:
            current = self._s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)
            queues = current.get("QueueConfigurations") or []
            if mine in queues:
                return
            others = [q for q in queues if q.get("Id") != self.queue_name]
            current["QueueConfigurations"] = [*others, mine]
            self._s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=current
            )

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        body = json.loads(message["Body"])
        if body.get("Event") == "s3:TestEvent":  # sent when a configuration is put
            return []
        account = self._runtime.account()
        return [{"Records": [s3_record(r, account)]} for r in body.get("Records") or []]


_sequencer_lock = threading.Lock()
_last_sequencer = [0]


def s3_sequencer() -> str:
    """A new `sequencer`: hexadecimal, greater than every one before it (S3's are greater for
    the later events of a key)."""
    with _sequencer_lock:
        _last_sequencer[0] = max(_last_sequencer[0] + 1, time.time_ns())
        return f"{_last_sequencer[0]:018X}"


def s3_record(record: dict[str, Any], account: str) -> dict[str, Any]:
    """An S3 event record (as an emulator sends it to a queue) as S3 puts it in the event of
    the function it invokes: the key URL-encoded as S3 encodes it (form encoding, a space as
    `+`, `/` kept), and the members S3 sends that an emulator may leave out (moto: the
    `sequencer`, the identities, the request's parameters and response elements)."""
    record = copy.deepcopy(record)
    s3 = record.setdefault("s3", {})
    s3.setdefault("bucket", {}).setdefault("ownerIdentity", {"principalId": account})
    found = s3.setdefault("object", {})
    if isinstance(found.get("key"), str):
        found["key"] = quote_plus(unquote_plus(found["key"]), safe="/")
    found.setdefault("sequencer", s3_sequencer())
    record.setdefault("userIdentity", {"principalId": f"AWS:{account}"})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    request = {
        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
        "x-amz-id-2": base64.b64encode(uuid.uuid4().bytes * 3).decode("ascii"),
    }
    record.setdefault("responseElements", request)
    return record
