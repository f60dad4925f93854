"""Tables as Athena sees them: the Glue table's columns, location and partition projection,
and the lake objects of the partitions a query can reach.

Nothing here is canned: the table is read from the emulator's Glue (what provisioning created
from infra/resources.json), and the objects from its S3. Partition projection works as on AWS:
a partition exists if its values are within the projected ranges and objects are under its
path, the Hive layout `key=value/` below the location (a `storage.location.template` in
another layout is refused: NOT_SUPPORTED); no crawler, `MSCK REPAIR` or registered partition
is looked at. Hidden objects (`_...`, `.…`) are skipped, as Athena skips them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Hive / Glue column types -> DuckDB types (complex types are parsed below).
_SCALARS = {
    "string": "VARCHAR",
    "varchar": "VARCHAR",
    "char": "VARCHAR",
    "boolean": "BOOLEAN",
    "tinyint": "TINYINT",
    "smallint": "SMALLINT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "binary": "BLOB",
}


class CatalogError(Exception):
    """A table the query names cannot be read (Athena's own error text)."""


def duckdb_type(hive_type: str) -> str:
    """`map<string,struct<a:int,b:array<string>>>` -> `MAP(VARCHAR, STRUCT("a" INTEGER, ...))`."""
    text = hive_type.strip()
    lower = text.lower()
    if lower in _SCALARS:
        return _SCALARS[lower]
    if re.fullmatch(r"(var)?char\(\d+\)", lower):
        return "VARCHAR"
    if match := re.fullmatch(r"decimal\((\d+)\s*,\s*(\d+)\)", lower):
        return f"DECIMAL({match[1]}, {match[2]})"
    if lower.startswith("array<") and lower.endswith(">"):
        return f"{duckdb_type(text[6:-1])}[]"
    if lower.startswith("map<") and lower.endswith(">"):
        key, value = _split_top(text[4:-1])
        return f"MAP({duckdb_type(key)}, {duckdb_type(value)})"
    if lower.startswith("struct<") and lower.endswith(">"):
        members = []
        for member in _split_top(text[7:-1]):
            name, _, kind = member.partition(":")
            members.append(f'"{name.strip()}" {duckdb_type(kind)}')
        return f"STRUCT({', '.join(members)})"
    raise CatalogError(f"HIVE_UNSUPPORTED_FORMAT: column type {hive_type!r} is not supported")


def _split_top(text: str) -> list[str]:
    """Split on the commas that are not inside `<...>` or `(...)` (`decimal(10,2)`)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += char in "<("
        depth -= char in ">)"
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


@dataclass(frozen=True)
class LakeObject:
    key: str
    size: int
    partition: dict[str, str]
    etag: str = ""  # the object's version of its bytes (a changed object is read again)


@dataclass
class Table:
    database: str
    name: str
    bucket: str
    prefix: str  # the location's key prefix, ending in "/" (or "")
    columns: dict[str, str]  # name -> Glue type, data columns then partition keys
    partition_keys: list[str]
    serde: str
    compressed: bool = True
    projection: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def data_columns(self) -> dict[str, str]:
        return {k: v for k, v in self.columns.items() if k not in self.partition_keys}

    def schema(self) -> dict[str, str]:
        """Column -> type as sqlglot reads them (for type inference)."""
        return dict(self.columns)

    def in_projection(self, partition: dict[str, str]) -> bool:
        """The partition's values are within the projected ranges (integer and enum kinds);
        a partition outside them does not exist for Athena, whatever is stored there."""
        for name, rules in self.projection.items():
            value = partition.get(name)
            if value is None:
                return False
            kind = rules.get("type")
            if kind == "integer":
                low, high = (int(v) for v in rules["range"].split(","))
                digits = int(rules.get("digits", "0") or 0)
                if not value.isdigit() or not low <= int(value) <= high:
                    return False
                if digits and len(value) != digits:
                    return False
            elif kind == "enum" and value not in rules.get("values", "").split(","):
                return False
        return True


def glue_table(glue_backend: Any, database: str, name: str) -> Table:
    """The Glue table `database.name`, or Athena's TABLE_NOT_FOUND."""
    try:
        stored = glue_backend.get_table(database, name)
    except Exception:  # moto's EntityNotFound (database or table)
        raise CatalogError(
            f"TABLE_NOT_FOUND: Table 'awsdatacatalog.{database}.{name}' does not exist"
        ) from None
    version = stored.get_version(str(stored._current_version))
    descriptor = version.get("StorageDescriptor", {})
    location = descriptor.get("Location", "")
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", location)
    if not match:
        raise CatalogError(f"HIVE_METASTORE_ERROR: table {name} has no S3 location")
    prefix = match[2] if not match[2] or match[2].endswith("/") else match[2] + "/"
    columns = {c["Name"].lower(): c["Type"] for c in descriptor.get("Columns", [])}
    partition_keys = [c["Name"].lower() for c in version.get("PartitionKeys", [])]
    columns.update({c["Name"].lower(): c["Type"] for c in version.get("PartitionKeys", [])})
    parameters = version.get("Parameters", {})
    projection: dict[str, dict[str, str]] = {}
    if parameters.get("projection.enabled", "false").lower() == "true":
        for key, value in parameters.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "projection":
                projection.setdefault(parts[1].lower(), {})[parts[2]] = value
    template = parameters.get("storage.location.template")
    if projection and template is not None:
        hive = location.rstrip("/") + "/" + "/".join(f"{k}=${{{k}}}" for k in partition_keys)
        if template.rstrip("/") != hive:
            raise CatalogError(
                f"NOT_SUPPORTED: the local engine reads partitions in the Hive layout under the "
                f"location ({hive}/), not the template {template}"
            )
    serde = descriptor.get("SerdeInfo", {}).get("SerializationLibrary", "")
    if "json" not in serde.lower():
        raise CatalogError(
            f"NOT_SUPPORTED: the local engine reads JSON tables only (table {name}: {serde!r})"
        )
    return Table(database, name, match[1], prefix, columns, partition_keys, serde,
                 projection=projection)  # fmt: skip


def lake_objects(s3_backend: Any, table: Table) -> list[LakeObject]:
    """The table's objects (latest versions, deleted ones left out) in existing partitions."""
    try:
        bucket = s3_backend.get_bucket(table.bucket)
    except Exception:
        raise CatalogError(
            f"HIVE_FILESYSTEM_ERROR: the table's bucket {table.bucket} does not exist"
        ) from None
    found = []
    for name in [k for k in list(bucket.keys.keys()) if k.startswith(table.prefix)]:
        stored = bucket.keys.get(name)
        if stored is None or not hasattr(stored, "value") or name.endswith("/"):
            continue  # a delete marker or a "folder"
        if name.rsplit("/", 1)[-1].startswith(("_", ".")):
            continue  # Athena skips hidden files (`_SUCCESS`, `.tmp`)
        partition = _partition_of(name[len(table.prefix) :], table.partition_keys)
        if partition is None or not table.in_projection(partition):
            continue
        found.append(LakeObject(name, stored.size, partition, str(stored.etag).strip('"')))
    return found


def _partition_of(relative_key: str, partition_keys: list[str]) -> dict[str, str] | None:
    """`year=2026/month=12/.../x.gz` -> {"year": "2026", ...}; None if not in that layout."""
    parts = relative_key.split("/")
    if len(parts) != len(partition_keys) + 1:
        return None
    values = {}
    for name, part in zip(partition_keys, parts, strict=False):
        key, sep, value = part.partition("=")
        if not sep or key.lower() != name:
            return None
        values[name] = value
    return values


def object_bytes(s3_backend: Any, bucket: str, key: str) -> bytes:
    return s3_backend.get_bucket(bucket).keys[key].value
