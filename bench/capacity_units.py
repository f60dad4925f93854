"""DynamoDB's capacity units for the footprint benchmark (bench/footprint.py): item sizes and
the units a call consumes, by DynamoDB's sizing rules (1 KB a write unit, of the larger of
the item before and after; 4 KB a read unit, half of one eventually consistent; transactions
twice)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
_TYPES = {"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"}


def value_size(value: Any) -> int:
    """DynamoDB's size of one attribute value (wire format or plain Python)."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _TYPES:
        kind, inner = next(iter(value.items()))
        if kind == "S":
            return len(inner.encode())
        if kind == "N":
            return len(str(inner).lstrip("-").replace(".", "")) // 2 + 2
        if kind == "B":
            return len(inner)
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + item_size(inner)
        if kind == "L":
            return 3 + sum(1 + value_size(v) for v in inner)
        return sum(value_size({kind[0]: v}) for v in inner)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        return len(str(value).lstrip("-").replace(".", "")) // 2 + 2
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, dict):
        return 3 + item_size(value)
    if isinstance(value, list | set | tuple):
        return 3 + sum(1 + value_size(v) for v in value)
    return len(str(value))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(v) for name, v in item.items())


def write_units(before: int, after: int, factor: int = 1) -> int:
    """DynamoDB's write units: 1 KB of the larger of the item before and after the write (a
    delete: the deleted item; at least one unit), `factor` 2 in a transaction."""
    return factor * max(1, math.ceil(max(before, after) / 1024))


def wire(item: dict[str, Any]) -> dict[str, Any]:
    """A key in DynamoDB's wire format (the app may pass plain values through a resource)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {name: value if isinstance(value, dict) and len(value) == 1
            and next(iter(value)) in _TYPES else serializer.serialize(value)
            for name, value in item.items()}  # fmt: skip


def written(name: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, int]]:
    """(table, item or key, kind, unit factor) per item a write call writes: kind "Put",
    "Update", "Delete" or "ConditionCheck" (a transaction's check is charged as a write)."""
    if name in ("PutItem", "UpdateItem", "DeleteItem"):
        yield params["TableName"], params.get("Item") or params["Key"], name[:-4], 1
    elif name == "BatchWriteItem":
        for table, requests in params["RequestItems"].items():
            for request in requests:
                if "PutRequest" in request:
                    yield table, request["PutRequest"]["Item"], "Put", 1
                else:
                    yield table, request["DeleteRequest"]["Key"], "Delete", 1
    elif name == "TransactWriteItems":
        for entry in params["TransactItems"]:
            kind, body = next(iter(entry.items()))
            yield body["TableName"], body.get("Item") or body["Key"], kind, 2


def consistency(name: str, params: dict[str, Any]) -> Any:
    """A read's ConsistentRead: a flag, or {table: flag} for BatchGetItem."""
    if name == "BatchGetItem":
        return {table: bool(spec.get("ConsistentRead"))
                for table, spec in params.get("RequestItems", {}).items()}  # fmt: skip
    return bool(params.get("ConsistentRead"))


def read_units(name: str, table: str, parsed: dict[str, Any],
                consistent: Any = False) -> list[tuple[str, float]]:  # fmt: skip
    """(table, read units) of an answer: per 4 KB, half a unit eventually consistent (the
    default), one strongly consistent (`consistent`: a flag, or {table: flag} for
    BatchGetItem), two in a transaction."""

    def units(items: list[dict[str, Any]], per: float) -> float:
        return sum(per * max(1, math.ceil(item_size(i) / 4096)) for i in items) or per

    def per(t: str) -> float:
        flag = consistent.get(t, False) if isinstance(consistent, dict) else consistent
        return 1.0 if flag else 0.5

    if name == "GetItem":
        return [(table, units([parsed.get("Item") or {}], per(table)))]
    if name in ("Query", "Scan"):
        size = sum(item_size(i) for i in parsed.get("Items", []))
        return [(table, per(table) * max(1, math.ceil(size / 4096)))]
    if name == "BatchGetItem":
        return [(t, units(found, per(t))) for t, found in parsed.get("Responses", {}).items()]
    return [(table, units([r.get("Item") or {} for r in parsed.get("Responses", [])], 2))]
