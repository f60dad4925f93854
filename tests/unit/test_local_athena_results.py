"""results.py: values, types, CSV files and pages as Athena gives them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time
from decimal import Decimal

import duckdb
import pytest

from local.athena.results import column_info, csv_body, java_double, page, text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12.5, "12.5"),
        (3.0, "3.0"),
        (1.0e7, "1.0E7"),
        (9999999.0, "9999999.0"),
        (1.5e-4, "1.5E-4"),
        (0.001, "0.001"),
        (9.9e-4, "9.9E-4"),
        (1.23456789e8, "1.23456789E8"),
        (-2.5e-10, "-2.5E-10"),
        (1e21, "1.0E21"),
        (0.1, "0.1"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
    ],
)
def test_java_double(value: float, expected: str) -> None:
    assert java_double(value) == expected


def test_text_of_floats_goes_through_java_double() -> None:
    assert text(1.0e7) == "1.0E7"
    assert text(2.0) == "2.0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, "true"),
        (False, "false"),
        (7, "7"),
        ("plain", "plain"),
        ("", ""),
        (Decimal("1.50"), "1.50"),
        (Decimal("-0.000001"), "-0.000001"),
        (date(2024, 1, 2), "2024-01-02"),
        (datetime(2024, 1, 2, 3, 4, 5, 678901), "2024-01-02 03:04:05.678"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05.000"),
        (datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), "2024-01-02 03:04:05.120 UTC"),
        (time(1, 2, 3), "01:02:03"),
        ([1, None, "a"], "[1, null, a]"),
        (["", "b"], "[, b]"),
        ([1.0, 2.5], "[1.0, 2.5]"),
        ([], "[]"),
        ({"a": 1, "b": None}, "{a=1, b=null}"),
        ({"k": ""}, "{k=}"),
        ({"k": [1, 2]}, "{k=[1, 2]}"),
        ({"x": {"y": True}}, "{x={y=true}}"),
        (b"\x01\xff", "01 ff"),
    ],
)
def test_text(value: object, expected: str | None) -> None:
    assert text(value) == expected


def test_text_of_duckdb_values() -> None:
    row = duckdb.sql(
        "SELECT MAP {'a': 1.5::DOUBLE, 'b': NULL} m, [DATE '2024-03-01', NULL] l,"
        " {'x': 1, 'y': 'z'} s, 12.30::DECIMAL(10, 2) d"
    ).fetchall()[0]
    assert [text(v) for v in row] == [
        "{a=1.5, b=null}",
        "[2024-03-01, null]",
        "{x=1, y=z}",
        "12.30",
    ]


def test_csv_body_quotes_every_value() -> None:
    body = csv_body(["a", "b", "c"], [['x"y', None, ""], ["1", "2,3", "line\nbreak"]])
    assert body == b'"a","b","c"\n"x""y",,""\n"1","2,3","line\nbreak"\n'
    parsed = list(csv.reader(io.StringIO(body.decode())))
    assert parsed == [["a", "b", "c"], ['x"y', "", ""], ["1", "2,3", "line\nbreak"]]


def test_csv_body_header_only() -> None:
    assert csv_body(["_col0"], []) == b'"_col0"\n'


# --- pages ----------------------------------------------------------------------------------

COLUMNS = [column_info("n", "BIGINT"), column_info("s", "VARCHAR")]
ROWS: list[list[str | None]] = [[str(i), None if i == 2 else f"v{i}"] for i in range(5)]


def values(answer: dict) -> list[list[str | None]]:
    return [[d.get("VarCharValue") for d in r["Data"]] for r in answer["ResultSet"]["Rows"]]


def test_single_page_has_header_then_rows_and_no_token() -> None:
    answer = page(COLUMNS, ROWS, None, 1000)
    assert values(answer) == [["n", "s"], *ROWS]
    assert "NextToken" not in answer
    assert answer["ResultSet"]["ResultSetMetadata"]["ColumnInfo"] == COLUMNS
    assert answer["ResultSet"]["Rows"][3] == {"Data": [{"VarCharValue": "2"}, {}]}


def test_pages_of_two_header_only_on_the_first() -> None:
    seen, token, pages = [], None, 0
    while True:
        answer = page(COLUMNS, ROWS, token, 2)
        pages += 1
        seen.append(values(answer))
        token = answer.get("NextToken")
        if token is None:
            break
    assert pages == 3
    assert seen[0] == [["n", "s"], ["0", "v0"]]
    assert seen[1] == [["1", "v1"], ["2", None]]
    assert seen[2] == [["3", "v3"], ["4", "v4"]]
    assert all(row != ["n", "s"] for chunk in seen[1:] for row in chunk)


def test_exact_fit_last_page_has_no_token() -> None:
    first = page(COLUMNS, ROWS[:3], None, 2)  # header + 3 rows = 4 = two full pages
    assert first["NextToken"]
    last = page(COLUMNS, ROWS[:3], first["NextToken"], 2)
    assert values(last) == [["1", "v1"], ["2", None]]
    assert "NextToken" not in last


def test_empty_result_is_the_header_alone() -> None:
    answer = page(COLUMNS, [], None, 10)
    assert values(answer) == [["n", "s"]]
    assert "NextToken" not in answer


@pytest.mark.parametrize("token", ["-1", "99", "abc"])
def test_invalid_token(token: str) -> None:
    with pytest.raises(ValueError):
        page(COLUMNS, ROWS, token, 2)


# --- column types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duckdb_type", "kind", "precision", "scale"),
    [
        ("VARCHAR", "varchar", 2147483647, 0),
        ("BIGINT", "bigint", 19, 0),
        ("HUGEINT", "bigint", 19, 0),
        ("INTEGER", "integer", 10, 0),
        ("SMALLINT", "smallint", 5, 0),
        ("TINYINT", "tinyint", 3, 0),
        ("DOUBLE", "double", 17, 0),
        ("FLOAT", "real", 9, 0),
        ("DECIMAL(38,6)", "decimal", 38, 6),
        ("DECIMAL(10,2)", "decimal", 10, 2),
        ("BOOLEAN", "boolean", 0, 0),
        ("DATE", "date", 0, 0),
        ("TIMESTAMP", "timestamp", 0, 0),
        ("TIMESTAMP WITH TIME ZONE", "timestamp with time zone", 0, 0),
        ("VARCHAR[]", "array", 0, 0),
        ("MAP(VARCHAR, VARCHAR)", "map", 0, 0),
        ("STRUCT(a INTEGER)", "row", 0, 0),
    ],
)
def test_column_info_types(duckdb_type: str, kind: str, precision: int, scale: int) -> None:
    info = column_info("c", duckdb_type)
    assert (info["Type"], info["Precision"], info["Scale"]) == (kind, precision, scale)
    assert info["Name"] == info["Label"] == "c"
    assert info["CaseSensitive"] is (kind == "varchar")
    assert info["Nullable"] == "UNKNOWN"


def test_column_info_from_duckdb_descriptions() -> None:
    relation = duckdb.sql("SELECT sum(1::BIGINT) total, 1.5::DECIMAL(12, 3) d, count(*) n, [1] l")
    kinds = [column_info(n, t) for n, t in zip(relation.columns, relation.types, strict=True)]
    assert [(k["Name"], k["Type"], k["Precision"], k["Scale"]) for k in kinds] == [
        ("total", "bigint", 19, 0),
        ("d", "decimal", 12, 3),
        ("n", "bigint", 19, 0),
        ("l", "array", 0, 0),
    ]
