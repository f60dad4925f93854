"""Kinesis records in, DynamoDB items and archive objects out (pure, no AWS).

Table layouts (every key is derived from the event, so a redelivered record, or a record the
producer put twice, overwrites the same item):

- activities: `pk` = `USER#<user_id>`, `sk` = `<timestamp>#<event_id>`: a user's activity in
  time order; `expires_at` (epoch seconds) 90 days after the event, the table's TTL.
- metrics: `pk` = `<source>#<metric_name>`, `sk` = `<timestamp>#<event_id>`: one series per
  (source, metric) in time order.
- transactions: `pk` = `TXN#<user_id>#<transaction_id>` (no sort key), with `user_id` and
  `occurred_at` for the `by-user` index. A transaction id is its owner's: the same id sent
  by two users is two transactions, and nobody can overwrite another user's. The (owner,
  transaction id), not the event id, is the identity: two events about one transaction leave
  one item (the last written). Items stored before ids were per owner (`TXN#<transaction_id>`)
  are still read (`transaction_id_of`).

The sender's stamp (`model.STAMP_FIELDS`) is checked by the processor and stored nowhere: the
items keep the event as its sender described it.

The archive (the data lake) keeps less, and no person (`lake_fields`, `pseudonymised`): of
each event the fields in `LAKE_FIELDS` (what the reports read, and what describes an event
without naming anyone); a user's event under the user's pseudonym, its client-chosen
identifiers (`LAKE_DIGESTS`) as keyed digests (`pseudonyms.LakeIdentity`). Free text
(`details`, `merchant`, `category`) and the `ip_address` stay in the tables only, where the
erasure reaches them. `activity_type` (a slug) and a metric's `tags` are kept: categories
and machine labels, which clients must not fill with personal data.

Numbers are written as DynamoDB `N` strings made by `Decimal` exactly as boto3's
TypeSerializer does (`str(Decimal(repr(float)))`); the serializer here is a small fast path
for the few shapes these items have (tested equal to TypeSerializer). `details` (free-form
JSON) is stored as a JSON string: its numbers could exceed DynamoDB's range and make the
whole batch write fail on every retry.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import math
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact
from typing import TYPE_CHECKING, Any

from chalicelib.core import clock
from chalicelib.telemetry.model import SYSTEM_METRIC, TRANSACTION, USER_ACTIVITY

if TYPE_CHECKING:
    from chalicelib.telemetry.pseudonyms import LakeIdentity

ACTIVITY_TTL_SECONDS = 90 * 24 * 3600
ARCHIVE_PREFIX = "telemetry"


@dataclass
class Record:
    """One Kinesis record as Lambda delivers it, decoded."""

    index: int
    sequence: str
    shard: str
    partition_key: str
    arrival: float
    data: str  # base64, as delivered
    event: dict[str, Any] | None = None
    reason: str | None = None  # why it is quarantined
    table: str = ""  # where `item` goes (`table_and_item`), when the event is valid
    item: dict[str, Any] | None = None
    correlation_id: str | None = None  # of the request that sent it (`core.correlation`)


class Malformed(ValueError):
    pass


def parse_record(index: int, record: Any) -> Record:
    """The parts of a Lambda Kinesis record (`kinesis.data` still base64). A record without
    a sequence number cannot even be reported: `Malformed`."""
    kinesis = record.get("kinesis") if isinstance(record, dict) else None
    if not isinstance(kinesis, dict) or not isinstance(kinesis.get("sequenceNumber"), str):
        raise Malformed("not a Kinesis record")
    event_id = record.get("eventID") or ""
    shard = event_id.split(":", 1)[0] if ":" in event_id else "shardId-unknown"
    arrival = kinesis.get("approximateArrivalTimestamp")
    return Record(
        index=index,
        sequence=kinesis["sequenceNumber"],
        shard=shard,
        partition_key=str(kinesis.get("partitionKey", "")),
        arrival=float(arrival) if isinstance(arrival, int | float) else 0.0,
        data=kinesis.get("data") if isinstance(kinesis.get("data"), str) else "",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_payload(data: str) -> Any:
    """The JSON value a record carries, or `Malformed` saying why not."""
    try:
        payload = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("data is not valid base64") from None
    try:
        return json.loads(payload, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError):
        raise Malformed("data is not UTF-8 JSON") from None
    except RecursionError:
        raise Malformed("data is JSON nested too deeply") from None


# --- DynamoDB attribute values --------------------------------------------------------------


#: DynamoDB's numbers: 38 significant digits, magnitudes from 1e-130 to below 1e126.
DYNAMO_DIGITS = 38
DYNAMO_MIN = Decimal("1e-130")
DYNAMO_MAX = Decimal("1e126")
#: A computed float this close to 0 (a decaying mean) is written as 0.
TINY = 1e-100


def number(value: int | float | Decimal) -> dict[str, str]:
    """`value` as a DynamoDB `N` (the model has checked it is storable). An int of more than
    38 digits (trailing zeros, e.g. 10**40) is written in exponent form: `1E+40`."""
    if isinstance(value, int):
        text = str(value)
        if len(text.lstrip("-")) > DYNAMO_DIGITS:
            text = str(Decimal(value).normalize(_EXACT))
        return {"N": text}
    if isinstance(value, float):
        value = Decimal(repr(value))
    return {"N": str(value)}


_EXACT = Context(prec=DYNAMO_DIGITS, traps=[Inexact])


def computed_number(value: float) -> str:
    """A computed float (a baseline's mean) as a DynamoDB `N` it will take: finite, within
    range, |value| < `TINY` written as 0. `ValueError` if it cannot be (never for a mean
    of values the model let through)."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a number DynamoDB can store")
    if abs(value) < TINY:
        return "0"
    exact = Decimal(repr(float(value)))
    if not DYNAMO_MIN <= abs(exact) < DYNAMO_MAX:
        raise ValueError(f"{value} is out of DynamoDB's range")
    return str(exact)


def string_map(values: dict[str, str]) -> dict[str, Any]:
    return {"M": {k: {"S": v} for k, v in values.items()}}


def table_and_item(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(`activities` | `metrics` | `transactions`, the item as attribute values)."""
    kind = event["event_type"]
    common = {
        "event_id": {"S": event["event_id"]},
        "event_type": {"S": kind},
        "timestamp": {"S": event["timestamp"]},
    }
    if kind == USER_ACTIVITY:
        item = {
            "pk": {"S": f"USER#{event['user_id']}"},
            "sk": {"S": f"{event['timestamp']}#{event['event_id']}"},
            **common,
            "user_id": {"S": event["user_id"]},
            "activity_type": {"S": event["activity_type"]},
            "expires_at": {
                "N": str(clock.epoch_seconds(event["timestamp"]) + ACTIVITY_TTL_SECONDS)
            },
        }
        for name in ("session_id", "ip_address"):
            if name in event:
                item[name] = {"S": event[name]}
        if "details" in event:
            item["details"] = {"S": json.dumps(event["details"], separators=(",", ":"))}
        return "activities", item
    if kind == SYSTEM_METRIC:
        item = {
            "pk": {"S": f"{event['source']}#{event['metric_name']}"},
            "sk": {"S": f"{event['timestamp']}#{event['event_id']}"},
            **common,
            "source": {"S": event["source"]},
            "metric_name": {"S": event["metric_name"]},
            "value": number(event["value"]),
        }
        if "tags" in event:
            item["tags"] = string_map(event["tags"])
        return "metrics", item
    if kind == TRANSACTION:
        item = {
            "pk": {"S": transaction_key(event["user_id"], event["transaction_id"])},
            **common,
            "transaction_id": {"S": event["transaction_id"]},
            "user_id": {"S": event["user_id"]},
            "occurred_at": {"S": event["timestamp"]},
            "amount": number(event["amount"]),
            "currency": {"S": event["currency"]},
            "status": {"S": event.get("status", "pending")},
        }
        for name in ("merchant", "category"):
            if name in event:
                item[name] = {"S": event[name]}
        return "transactions", item
    raise ValueError(f"unknown event_type {kind}")


def transaction_key(user_id: str, transaction_id: str) -> str:
    """The transactions table's `pk`: the transaction id within its owner's."""
    return f"TXN#{user_id}#{transaction_id}"


def transaction_id_of(pk: str) -> str:
    """The transaction id in a `pk` (`TXN#<user>#<id>`, or `TXN#<id>` as stored before ids
    were per owner): ids never hold `#`."""
    return pk.rsplit("#", 1)[-1]


def item_key(item: dict[str, Any]) -> str:
    """The item's primary key as one string (to find duplicates within a batch)."""
    sk = item.get("sk")
    return item["pk"]["S"] if sk is None else f"{item['pk']['S']}\x00{sk['S']}"


# --- archive -----------------------------------------------------------------------------


def archive_key(shard: str, first_sequence: str, last_sequence: str, arrival: float) -> str:
    """`telemetry/year=/month=/day=/hour=/<shard>-<first>-<last>.jsonl.gz`, the hour being
    the first record's arrival (UTC): a redelivered batch writes the same key."""
    moment = clock.from_epoch(arrival)
    return (
        f"{ARCHIVE_PREFIX}/year={moment:%Y}/month={moment:%m}/day={moment:%d}/hour={moment:%H}/"
        f"{shard}-{first_sequence}-{last_sequence}.jsonl.gz"
    )


#: What the archive keeps of each type of event (`lake_fields`).
LAKE_FIELDS: dict[str, tuple[str, ...]] = {
    USER_ACTIVITY: (
        *("event_type", "event_id", "timestamp"),
        *("user_id", "activity_type", "session_id"),
    ),
    SYSTEM_METRIC: (
        *("event_type", "event_id", "timestamp"),
        *("source", "metric_name", "value", "tags"),
    ),
    TRANSACTION: (
        *("event_type", "event_id", "timestamp"),
        *("transaction_id", "user_id", "amount", "currency", "status"),
    ),
}
#: The identifiers a client chooses for a user's events: keyed digests in the archive.
LAKE_DIGESTS = ("event_id", "session_id", "transaction_id")


def lake_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of a (validated) event that the archive keeps, not pseudonymised yet."""
    return {name: event[name] for name in LAKE_FIELDS[event["event_type"]] if name in event}


def pseudonymised(kept: dict[str, Any], identity: LakeIdentity | None) -> dict[str, Any]:
    """`kept` (`lake_fields`) as the archive holds it: a user's event (one with a `user_id`)
    under the user's pseudonym, its identifiers as the identity's digests. Events of no user
    (system metrics) are left as they are; a user's event without an identity, or with an
    erased user's, is an error."""
    if "user_id" not in kept:
        return kept
    if identity is None:
        raise ValueError("a user's event is archived only under the user's pseudonym")
    if identity.erased:
        raise ValueError("an erased user's event is never archived")
    lake = {**kept, "user_id": identity.pseudonym}
    for name in LAKE_DIGESTS:
        if name in lake:
            lake[name] = identity.digest(name, lake[name])
    return lake


def archive_line(event: dict[str, Any]) -> bytes:
    """One archived event (`pseudonymised`) as a line of the archive (UTF-8 JSON). Never
    with its sender's stamp: `LAKE_FIELDS` holds none of `model.STAMP_FIELDS`."""
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def archive_body(events: list[dict[str, Any]]) -> bytes:
    """Archived events (`pseudonymised`) as gzip JSON lines (mtime 0: the same batch gives
    the same bytes)."""
    lines = b"".join(archive_line(event) for event in events)
    return gzip.compress(lines, compresslevel=5, mtime=0)


def quarantine_message(record: Record, reason: str) -> dict[str, Any]:
    """The quarantine message of a record. `dedup_id` (`<shardId>:<sequenceNumber>`, also a
    message attribute) is the record's identity: a record redelivered after its message was
    sent is quarantined again, with the same id, for consumers to drop."""
    message = {
        "dedup_id": f"{record.shard}:{record.sequence}",
        "reason": reason,
        "data": record.data,
        "shard_id": record.shard,
        "sequence_number": record.sequence,
        "partition_key": record.partition_key,
        "approximate_arrival_timestamp": record.arrival,
    }
    if record.correlation_id:
        message["correlation_id"] = record.correlation_id
    return message
