"""Producer duplicates: the same event put on the stream twice, as two records.

Kinesis producers are at least once: when PutRecords's answer is lost, the retry puts the
event again as a new record (a new sequence number, on the same shard: the partition key
comes from the event). Its item overwrites the same key, but without this check it would be
alerted, folded into a baseline and archived a second time.

Every item is stamped with the record that wrote it (`SOURCE_RECORD` =
`<shardId>:<sequenceNumber>@<digest of the item>`). A shard's records are processed in
order, so a duplicate comes after its original with the same item: in the same batch (the
later one is dropped), or in a later one, where the stored item holds the same digest under
another record. The digest is of the item, not of the record's bytes, so a client's re-POST
of the same event (another correlation id) is caught too. The same record is a redelivery
(processed again: its earlier attempt may not have got to the archive). Another item under
the same key is a new event (a re-sent transaction, corrected), processed as before; an item
without a stamp (written before the stamps) is never taken for the original.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from chalicelib.core import aws
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import batch_get
from chalicelib.core.observability import logger
from chalicelib.telemetry.encoding import Record, item_key

#: The item's attribute naming the record that wrote it (never archived: `lake_fields`
#: reads the event, not the item).
SOURCE_RECORD = "source_record"


class ItemStamps(Protocol):
    def stamps(self, table: str, keys: Sequence[dict[str, Any]]) -> dict[str, str]:
        """The stored items among `keys` (primary keys as attribute values): `item_key` ->
        their `SOURCE_RECORD` ("" if none). Raises if they could not be read."""
        ...


def _dynamodb() -> Any:
    return aws.client("dynamodb")


class DynamoItemStamps:
    """BatchGetItem (`core.dynamo.batch_get`: 100 keys a call, UnprocessedKeys retried), the
    keys and stamps only, strongly consistent: the original was often written a moment ago."""

    def __init__(
        self, client: Callable[[], Any] = _dynamodb, backoff: Backoff | None = None
    ) -> None:
        self._client = client
        self._backoff = backoff or Backoff()

    def stamps(self, table: str, keys: Sequence[dict[str, Any]]) -> dict[str, str]:
        if not keys:
            return {}
        found = batch_get(
            self._client(),
            table,
            keys,
            self._backoff,
            ProjectionExpression="pk, sk, #source",
            ExpressionAttributeNames={"#source": SOURCE_RECORD},
            ConsistentRead=True,
        )
        return {item_key(item): item.get(SOURCE_RECORD, {}).get("S", "") for item in found}


def stamp_of(record: Record) -> str:
    """`<shardId>:<sequenceNumber>@<digest of the item, without its stamp>`."""
    item = record.item or {}
    if SOURCE_RECORD in item:
        item = {k: v for k, v in item.items() if k != SOURCE_RECORD}
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    return f"{record.shard}:{record.sequence}@{digest}"


def is_duplicate(stored: str, mine: str) -> bool:
    """Another record (`stored`, "" if none) with the same item as `mine`."""
    source, _, digest = stored.partition("@")
    own_source, _, own_digest = mine.partition("@")
    return bool(digest) and digest == own_digest and source != own_source


def drop_duplicates(
    records: Sequence[Record],
    tables: dict[str, str],
    stamps: ItemStamps | None,
    out_of_time: Callable[[], bool],
) -> tuple[int, set[int]]:
    """Stamp the items of `records` (valid, in sequence order) and drop (set to nothing:
    neither stored, alerted, folded, quarantined nor archived) the producer duplicates:
    (how many were dropped, the indexes whose items could not be checked: failures).
    `stamps` None: within the batch only."""
    seen: set[tuple[str, str, str]] = set()
    dropped = 0
    for record in records:
        item = record.item or {}
        stamp = stamp_of(record)
        key = (record.table, item_key(item), stamp.partition("@")[2])
        if key in seen:
            record.event = record.item = None
            dropped += 1
            continue
        seen.add(key)
        item[SOURCE_RECORD] = {"S": stamp}
    unchecked: set[int] = set()
    if stamps is not None:
        kept = [r for r in records if r.item is not None]
        for table in sorted({r.table for r in kept}):
            mine = [r for r in kept if r.table == table]
            stored = _read(stamps, tables[table], mine, out_of_time)
            if stored is None:
                unchecked.update(r.index for r in mine)
                continue
            for record in mine:
                item = record.item or {}
                if is_duplicate(stored.get(item_key(item), ""), item[SOURCE_RECORD]["S"]):
                    record.event = record.item = None
                    dropped += 1
    if dropped:
        logger.info("producer duplicates dropped", dropped=dropped)
    return dropped, unchecked


def _read(
    stamps: ItemStamps, table: str, records: list[Record], out_of_time: Callable[[], bool]
) -> dict[str, str] | None:
    """The stored stamps of the records' keys; None if out of time or unreadable."""
    if out_of_time():
        logger.warning("out of time; duplicate check left to the redelivery", table=table)
        return None
    keys: dict[str, dict[str, Any]] = {}
    for record in records:
        item = record.item or {}
        keys[item_key(item)] = {name: item[name] for name in ("pk", "sk") if name in item}
    try:
        return stamps.stamps(table, list(keys.values()))
    except Exception:
        logger.exception("stored items unreadable; their records will be redelivered", table=table)
        return None
