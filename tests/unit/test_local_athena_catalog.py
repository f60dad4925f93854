"""catalog.py: Glue types as DuckDB's, partition projection, the lake objects of a table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import duckdb
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.glue.models import glue_backends
from moto.s3.models import s3_backends

from local.athena.catalog import CatalogError, Table, duckdb_type, glue_table, lake_objects

REGION = "us-east-1"


@pytest.mark.parametrize(
    ("hive", "expected"),
    [
        ("string", "VARCHAR"),
        ("INT", "INTEGER"),
        ("bigint", "BIGINT"),
        ("double", "DOUBLE"),
        ("float", "FLOAT"),
        ("boolean", "BOOLEAN"),
        ("timestamp", "TIMESTAMP"),
        ("binary", "BLOB"),
        ("varchar(10)", "VARCHAR"),
        ("char(3)", "VARCHAR"),
        ("decimal(38,6)", "DECIMAL(38, 6)"),
        ("decimal(10, 2)", "DECIMAL(10, 2)"),
        ("array<string>", "VARCHAR[]"),
        ("array<map<string,bigint>>", "MAP(VARCHAR, BIGINT)[]"),
        ("map<string,string>", "MAP(VARCHAR, VARCHAR)"),
        (
            "map<string,struct<a:int,b:array<string>>>",
            'MAP(VARCHAR, STRUCT("a" INTEGER, "b" VARCHAR[]))',
        ),
        ("struct<x:decimal(10,2),y:char(3)>", 'STRUCT("x" DECIMAL(10, 2), "y" VARCHAR)'),
        ("map<string,decimal(12,4)>", "MAP(VARCHAR, DECIMAL(12, 4))"),
    ],
)
def test_duckdb_type(hive: str, expected: str) -> None:
    assert duckdb_type(hive) == expected
    duckdb.sql(f"SELECT CAST(NULL AS {expected})").fetchall()  # DuckDB reads it


def test_nested_type_round_trips_through_duckdb() -> None:
    kind = duckdb_type("map<string,struct<a:int,b:array<string>>>")
    relation = duckdb.sql(f"SELECT MAP {{'k': {{'a': 1, 'b': ['x']}}}}::{kind} v")
    assert str(relation.types[0]) == "MAP(VARCHAR, STRUCT(a INTEGER, b VARCHAR[]))"
    assert relation.fetchall() == [({"k": {"a": 1, "b": ["x"]}},)]


@pytest.mark.parametrize("hive", ["uniontype<int,string>", "interval", "decimal", "geometry"])
def test_unsupported_type(hive: str) -> None:
    with pytest.raises(CatalogError, match="HIVE_UNSUPPORTED_FORMAT"):
        duckdb_type(hive)


def projected(**projection: dict[str, str]) -> Table:
    return Table(
        "an",
        "t",
        "lake",
        "t/",
        {"a": "string", "year": "int", "month": "int"},
        ["year", "month"],
        "org.openx.data.jsonserde.JsonSerDe",
        projection=projection,
    )


YEAR = {"type": "integer", "range": "2020,2100"}
MONTH = {"type": "integer", "range": "1,12", "digits": "2"}


@pytest.mark.parametrize(
    ("partition", "inside"),
    [
        ({"year": "2026", "month": "12"}, True),
        ({"year": "2020", "month": "01"}, True),
        ({"year": "2100", "month": "12"}, True),
        ({"year": "2019", "month": "12"}, False),
        ({"year": "2101", "month": "01"}, False),
        ({"year": "2026", "month": "13"}, False),
        ({"year": "2026", "month": "00"}, False),
        ({"year": "2026", "month": "1"}, False),  # digits=2: month=1 is not a partition
        ({"year": "2026", "month": "001"}, False),
        ({"year": "02026", "month": "01"}, True),  # no digits rule for year
        ({"year": "x", "month": "01"}, False),
        ({"year": "-1", "month": "01"}, False),
        ({"year": "2026"}, False),
    ],
)
def test_in_projection_integer_ranges_and_digits(partition: dict[str, str], inside: bool) -> None:
    assert projected(year=YEAR, month=MONTH).in_projection(partition) is inside


def test_in_projection_enum_and_no_projection() -> None:
    table = projected(year=YEAR, month={"type": "enum", "values": "01,06"})
    assert table.in_projection({"year": "2026", "month": "06"})
    assert not table.in_projection({"year": "2026", "month": "07"})
    assert projected().in_projection({"year": "anything", "month": "13"})


# --- against moto's stores ------------------------------------------------------------------


@pytest.fixture
def stores() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            "s3": boto3.client("s3", region_name=REGION),
            "glue": boto3.client("glue", region_name=REGION),
            "s3_backend": s3_backends[DEFAULT_ACCOUNT_ID]["aws"],
            "glue_backend": glue_backends[DEFAULT_ACCOUNT_ID][REGION],
        }


def keys_of(stores: dict[str, Any], table: Table) -> dict[str, tuple[int, dict[str, str]]]:
    return {o.key: (o.size, o.partition) for o in lake_objects(stores["s3_backend"], table)}


def test_lake_objects_keep_only_the_hive_layout_in_range(stores: dict[str, Any]) -> None:
    stores["s3"].create_bucket(Bucket="lake")
    bodies = {
        "t/year=2026/month=12/a.gz": b"a" * 11,
        "t/year=2026/month=12/b.gz": b"b" * 7,
        "t/year=2021/month=01/c.gz": b"c" * 5,
        "t/year=2026/month=13/x.gz": b"out of range",
        "t/year=2026/month=1/x.gz": b"wrong digits",
        "t/year=2019/month=01/x.gz": b"before the range",
        "t/a.gz": b"no partition",
        "t/year=2026/x.gz": b"too shallow",
        "t/year=2026/month=12/sub/x.gz": b"too deep",
        "t/month=12/year=2026/x.gz": b"keys in the wrong order",
        "t/year=2026/day=12/x.gz": b"not a partition key",
        "t/year=2026/month=12/": b"",
        "other/year=2026/month=12/x.gz": b"another table",
        "tx/year=2026/month=12/x.gz": b"a sibling prefix",
    }
    for key, body in bodies.items():
        stores["s3"].put_object(Bucket="lake", Key=key, Body=body)
    table = projected(year=YEAR, month=MONTH)
    assert keys_of(stores, table) == {
        "t/year=2026/month=12/a.gz": (11, {"year": "2026", "month": "12"}),
        "t/year=2026/month=12/b.gz": (7, {"year": "2026", "month": "12"}),
        "t/year=2021/month=01/c.gz": (5, {"year": "2021", "month": "01"}),
    }


def test_lake_objects_of_a_versioned_bucket_leave_deleted_ones_out(stores: dict[str, Any]) -> None:
    s3 = stores["s3"]
    s3.create_bucket(Bucket="lake")
    s3.put_bucket_versioning(Bucket="lake", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="lake", Key="t/year=2026/month=11/gone.gz", Body=b"first")
    s3.delete_object(Bucket="lake", Key="t/year=2026/month=11/gone.gz")
    s3.put_object(Bucket="lake", Key="t/year=2026/month=12/kept.gz", Body=b"old version")
    s3.put_object(Bucket="lake", Key="t/year=2026/month=12/kept.gz", Body=b"new")
    assert keys_of(stores, projected(year=YEAR, month=MONTH)) == {
        "t/year=2026/month=12/kept.gz": (3, {"year": "2026", "month": "12"}),
    }


def test_lake_objects_of_a_missing_bucket(stores: dict[str, Any]) -> None:
    with pytest.raises(CatalogError):
        lake_objects(stores["s3_backend"], projected())


def create_table(stores: dict[str, Any], serde: str = "org.openx.data.jsonserde.JsonSerDe") -> None:
    stores["glue"].create_database(DatabaseInput={"Name": "an"})
    stores["glue"].create_table(
        DatabaseName="an",
        TableInput={
            "Name": "events",
            "PartitionKeys": [{"Name": "Year", "Type": "int"}, {"Name": "month", "Type": "int"}],
            "Parameters": {
                "projection.enabled": "true",
                "projection.year.type": "integer",
                "projection.year.range": "2020,2100",
                "projection.month.type": "integer",
                "projection.month.range": "1,12",
                "projection.month.digits": "2",
                "classification": "json",
            },
            "StorageDescriptor": {
                "Location": "s3://lake/events",
                "Columns": [
                    {"Name": "Event_Id", "Type": "string"},
                    {"Name": "details", "Type": "map<string,string>"},
                ],
                "SerdeInfo": {"SerializationLibrary": serde},
            },
        },
    )


def test_glue_table_reads_location_columns_and_projection(stores: dict[str, Any]) -> None:
    create_table(stores)
    table = glue_table(stores["glue_backend"], "an", "events")
    assert (table.bucket, table.prefix) == ("lake", "events/")
    assert table.columns == {
        "event_id": "string",
        "details": "map<string,string>",
        "year": "int",
        "month": "int",
    }
    assert table.partition_keys == ["year", "month"]
    assert table.data_columns == {"event_id": "string", "details": "map<string,string>"}
    assert table.projection == {
        "year": {"type": "integer", "range": "2020,2100"},
        "month": {"type": "integer", "range": "1,12", "digits": "2"},
    }


def test_glue_table_missing(stores: dict[str, Any]) -> None:
    with pytest.raises(CatalogError, match=r"TABLE_NOT_FOUND: Table 'awsdatacatalog\.an\.nope'"):
        glue_table(stores["glue_backend"], "an", "nope")


def test_glue_table_that_is_not_json_is_refused(stores: dict[str, Any]) -> None:
    create_table(stores, serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    with pytest.raises(CatalogError, match="NOT_SUPPORTED"):
        glue_table(stores["glue_backend"], "an", "events")
