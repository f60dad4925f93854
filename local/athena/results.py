"""Query results as Athena gives them: column types by Athena's names, values as the text
Athena's GetQueryResults and its CSV files hold (Trino's formatting), and pages.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

#: DuckDB type names -> Athena's (`ResultSetMetadata.ColumnInfo[].Type`).
_TYPES = {
    "VARCHAR": "varchar",
    "BOOLEAN": "boolean",
    "TINYINT": "tinyint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "HUGEINT": "bigint",  # DuckDB sums BIGINTs into HUGEINT; Trino keeps bigint
    "UBIGINT": "bigint",
    "UINTEGER": "bigint",
    "FLOAT": "real",
    "DOUBLE": "double",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "TIME": "time",
    "BLOB": "varbinary",
    "UUID": "uuid",
    "INTERVAL": "interval day to second",
}


def column_info(name: str, duckdb_type: Any) -> dict[str, Any]:
    """One `ColumnInfo`, as Athena describes a result column."""
    text = str(duckdb_type).upper()
    precision, scale = 0, 0
    if text.startswith("DECIMAL"):
        kind = "decimal"
        precision, scale = (int(p) for p in text[8:-1].split(","))
    elif text.endswith("[]"):
        kind = "array"
    elif text.startswith("MAP("):
        kind = "map"
    elif text.startswith("STRUCT("):
        kind = "row"
    else:
        kind = _TYPES.get(text, text.lower())
    if kind in ("integer", "bigint", "smallint", "tinyint"):
        precision = {"integer": 10, "bigint": 19, "smallint": 5, "tinyint": 3}[kind]
    elif kind in ("double", "real"):
        precision = 17 if kind == "double" else 9
    elif kind == "varchar":
        precision = 2147483647
    return {
        "CatalogName": "hive",
        "SchemaName": "",
        "TableName": "",
        "Name": name,
        "Label": name,
        "Type": kind,
        "Precision": precision,
        "Scale": scale,
        "Nullable": "UNKNOWN",
        "CaseSensitive": kind == "varchar",
    }


def text(value: Any, kind: str = "") -> str | None:
    """A value as Athena's results show it; None for NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d} UTC"
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join("null" if v is None else text(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{text(k)}={'null' if v is None else text(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, bytes):
        return " ".join(f"{b:02x}" for b in value)
    return str(value)


def java_double(value: float) -> str:
    """A double as Java's Double.toString writes it (Trino's results do): the shortest digits
    that read back as the same double, `12.5`, `3.0`, `1.0E7`, `1.5E-4`, `NaN`, `Infinity`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(value)  # Python's repr: the same shortest digits, in decimal form here
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    shown = "".join(map(str, digits)).rstrip("0") or "0"
    power = len(digits) + int(exponent) - 1
    mantissa = shown[0] + "." + (shown[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}E{power}"


def csv_body(columns: list[str], rows: list[list[str | None]]) -> bytes:
    """Athena's result file: a header, every value quoted, NULL as an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        out.write(",".join("" if v is None else _quoted(v) for v in row) + "\n")
    return out.getvalue().encode()


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def page(
    columns: list[dict[str, Any]], rows: list[list[str | None]], token: str | None, size: int
) -> dict[str, Any]:
    """One GetQueryResults page: the header row first (the first page only), then the rows."""
    start = int(token) if token else 0
    if start < 0 or start > len(rows) + 1:
        raise ValueError("invalid NextToken")
    header = [[c["Name"] for c in columns]]
    every = header + rows  # Athena counts the header as a row of the first page
    chunk = every[start : start + size]
    answer: dict[str, Any] = {
        "UpdateCount": 0,
        "ResultSet": {
            "Rows": [
                {"Data": [{"VarCharValue": v} if v is not None else {} for v in row]}
                for row in chunk
            ],
            "ResultSetMetadata": {"ColumnInfo": columns},
        },
    }
    if start + size < len(every):
        answer["NextToken"] = str(start + size)
    return answer
