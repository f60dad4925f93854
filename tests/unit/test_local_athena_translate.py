"""translate(): Athena (Trino) SQL -> DuckDB SQL, checked on the SQL it writes and, where the
values matter, on what DuckDB answers when it runs that SQL."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from local.athena.catalog import CatalogError, Table
from local.athena.translate import UNSUPPORTED_FUNCTIONS, QueryError, Translation, translate

EVENTS = Table(
    database="an",
    name="events",
    bucket="lake",
    prefix="events/",
    columns={
        "event_id": "string",
        "n": "int",
        "amount": "double",
        "d": "date",
        "ts": "string",
        "details": "map<string,string>",
        "year": "int",
        "month": "int",
        "day": "int",
    },
    partition_keys=["year", "month", "day"],
    serde="org.openx.data.jsonserde.JsonSerDe",
)
USERS = Table(
    database="an",
    name="users",
    bucket="lake",
    prefix="users/",
    columns={"user_id": "string", "age": "bigint", "region": "string"},
    partition_keys=["region"],
    serde="org.openx.data.jsonserde.JsonSerDe",
)
TABLES = {("an", "events"): EVENTS, ("an", "users"): USERS}


def load_table(database: str, name: str) -> Table:
    try:
        return TABLES[(database, name)]
    except KeyError:
        raise CatalogError(
            f"TABLE_NOT_FOUND: Table 'awsdatacatalog.{database}.{name}' does not exist"
        ) from None


def tr(query: str) -> Translation:
    return translate(query, "an", load_table)


def refused(query: str) -> str:
    with pytest.raises(QueryError) as raised:
        tr(query)
    return str(raised.value)


NO_USERS = "(SELECT 'u'::VARCHAR user_id, 1::BIGINT age, 'eu'::VARCHAR region WHERE false)"


def execute(query: str) -> duckdb.DuckDBPyConnection:
    """Translate and run on DuckDB over two rows of `events` (and none of `users`)."""
    translation = tr(query)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "TimeZone": "UTC"})
    con.execute(
        "CREATE TABLE rows_e AS SELECT * FROM (VALUES "
        "('a', 7, 7.0::DOUBLE, DATE '2024-01-31', '2024-01-01T00:00:00Z', MAP {'k': 'v'},"
        " 2024, 1, 31),"
        "('b', -7, 2.5::DOUBLE, DATE '2024-02-28', '2024-01-01T00:00:00+02:00',"
        " MAP {'k': 'w'}, 2024, 2, 28)"
        ") t(event_id, n, amount, d, ts, details, year, month, day)"
    )
    for scan in translation.scans:
        source = "rows_e" if scan.table is EVENTS else NO_USERS
        con.execute(f"CREATE VIEW {scan.view} AS SELECT * FROM {source}")
    return con.execute(translation.sql)


def run(query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = execute(query)
    return [d[0] for d in cursor.description], cursor.fetchall()


def filters(query: str) -> dict[str, list[str]]:
    return {s.table.name + ":" + s.view: s.partition_filters for s in tr(query).scans}


# --- values Athena would give --------------------------------------------------------------


def test_integer_division_truncates_toward_zero() -> None:
    _, rows = run("SELECT 7/2, -7/2, n/2, n/-2 FROM events ORDER BY event_id")
    assert rows == [(3, -3, 3, -3), (3, -3, -3, 3)]
    assert "//" in tr("SELECT n/2 FROM events").sql


def test_double_division_is_untouched() -> None:
    _, rows = run(
        "SELECT 7.0/2, 7/2.0, amount/2, CAST(n AS double)/2 FROM events ORDER BY event_id"
    )
    assert [tuple(float(v) for v in row) for row in rows] == [
        (3.5, 3.5, 3.5, 3.5),
        (3.5, 3.5, 1.25, -3.5),
    ]
    assert "//" not in tr("SELECT amount/2 FROM events").sql


def test_approx_percentile_is_exact_quantile_disc() -> None:
    sql = tr("SELECT approx_percentile(amount, 0.5) FROM events").sql
    assert "QUANTILE_DISC" in sql.upper()
    assert "APPROX" not in sql.upper()
    _, rows = run("SELECT approx_percentile(amount, 0.5), approx_percentile(n, 0.9) FROM events")
    assert rows == [(2.5, 7)]  # the value at that rank, not interpolated (4.75)


def test_approx_distinct_is_an_exact_count_distinct() -> None:
    sql = tr("SELECT approx_distinct(event_id) FROM events").sql
    assert "COUNT(DISTINCT" in sql.upper()
    _, rows = run("SELECT approx_distinct(event_id), approx_distinct(year) FROM events")
    assert rows == [(2, 1)]


def test_date_add_on_a_date_stays_a_date() -> None:
    cursor = execute(
        "SELECT date_add('day', 1, d), date_add('month', 1, d) FROM events ORDER BY event_id"
    )
    assert [str(d[1]) for d in cursor.description] == ["DATE", "DATE"]
    assert [[str(v) for v in row] for row in cursor.fetchall()] == [
        ["2024-02-01", "2024-02-29"],
        ["2024-02-29", "2024-03-28"],
    ]


def test_from_iso8601_timestamp_z_works_and_non_utc_offset_errors() -> None:
    _, rows = run("SELECT from_iso8601_timestamp(ts) FROM events WHERE event_id = 'a'")
    assert rows[0][0].isoformat() == "2024-01-01T00:00:00+00:00"
    with pytest.raises(duckdb.Error, match="from_iso8601_timestamp with a non-UTC offset"):
        run("SELECT from_iso8601_timestamp(ts) FROM events WHERE event_id = 'b'")


def test_map_subscript_reads_a_value() -> None:
    _, rows = run("SELECT details['k'] FROM events ORDER BY event_id")
    assert rows == [("v",), ("w",)]


# --- refused queries --------------------------------------------------------------------------

UNSUPPORTED_CALLS = {
    "format_datetime": "format_datetime(d, 'yyyy')",
    "parse_datetime": "parse_datetime(ts, 'yyyy')",
    "map_agg": "map_agg(event_id, n)",
    "with_timezone": "with_timezone(d, 'UTC')",
    "to_iso8601": "to_iso8601(d)",
    "slice": "slice(ARRAY[1, 2, 3], 1, 2)",
}


def test_every_unsupported_function_has_a_call_here() -> None:
    assert set(UNSUPPORTED_CALLS) == set(UNSUPPORTED_FUNCTIONS)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_FUNCTIONS))
def test_unsupported_functions_are_refused_by_name(name: str) -> None:
    message = refused(f"SELECT {UNSUPPORTED_CALLS[name]} FROM events")
    assert message.startswith("NOT_SUPPORTED: ")
    assert name in message
    assert UNSUPPORTED_FUNCTIONS[name] in message


def test_unsupported_function_inside_a_subquery_is_refused() -> None:
    message = refused("SELECT * FROM (SELECT to_iso8601(d) x FROM events) WHERE x IS NOT NULL")
    assert message.startswith("NOT_SUPPORTED: to_iso8601")


def test_regexp_replace_with_group_reference_is_refused_but_plain_runs() -> None:
    message = refused("SELECT regexp_replace(event_id, '(a)', '$1x') FROM events")
    assert message.startswith("NOT_SUPPORTED: regexp_replace")
    _, rows = run("SELECT regexp_replace(event_id, 'a', 'z') FROM events ORDER BY 1")
    assert rows == [("b",), ("z",)]


@pytest.mark.parametrize(
    "query",
    [
        "CREATE TABLE x (a int)",
        "DROP TABLE events",
        "INSERT INTO events (event_id) VALUES ('x')",
        "ALTER TABLE events ADD COLUMNS (c string)",
    ],
)
def test_ddl_and_writes_are_refused(query: str) -> None:
    assert refused(query).startswith("NOT_SUPPORTED: ")


def test_two_statements_are_refused() -> None:
    assert refused("SELECT 1; SELECT 2").startswith("INVALID_INPUT: ")


def test_syntax_error() -> None:
    message = refused("SELEC 1")
    assert message.startswith("SYNTAX_ERROR: line 1:")


def test_unknown_table() -> None:
    assert refused("SELECT * FROM missing") == (
        "TABLE_NOT_FOUND: Table 'awsdatacatalog.an.missing' does not exist"
    )


def test_table_without_database() -> None:
    with pytest.raises(QueryError, match="SCHEMA_NOT_FOUND"):
        translate("SELECT * FROM events", None, load_table)


# --- partition filters ----------------------------------------------------------------------


def test_only_conjuncts_over_partition_columns_prune() -> None:
    found = filters(
        "SELECT count(*) FROM events WHERE year = 2026 AND (day = 5 OR event_id = 'x')"
        " AND month IN (1, 2) AND amount > 3"
    )
    assert found == {"events:lake_scan_0": ['"year" = 2026', '"month" IN (1, 2)']}


def test_or_of_partition_columns_alone_prunes() -> None:
    found = filters("SELECT 1 FROM events WHERE day = 5 OR month = 2")
    assert found == {"events:lake_scan_0": ['"day" = 5 OR "month" = 2']}


def test_no_where_no_filters() -> None:
    assert filters("SELECT * FROM events") == {"events:lake_scan_0": []}


def test_qualified_alias_is_handled() -> None:
    found = filters("SELECT e.event_id FROM events e WHERE e.year = 2026 AND e.amount > 1")
    assert found == {"events:lake_scan_0": ['"year" = 2026']}
    assert "lake_scan_0 AS e" in tr("SELECT e.event_id FROM events e").sql


def test_self_join_filters_go_to_their_own_alias() -> None:
    found = filters(
        "SELECT 1 FROM events a JOIN events b ON a.event_id = b.event_id"
        " WHERE a.day = 1 AND b.day = 2"
    )
    assert found == {"events:lake_scan_0": ['"day" = 1'], "events:lake_scan_1": ['"day" = 2']}


def test_a_subquery_where_applies_to_its_own_table() -> None:
    found = filters(
        "SELECT event_id FROM events WHERE day IN"
        " (SELECT age FROM users u WHERE u.region = 'eu') AND year = 2025"
    )
    assert found == {
        "events:lake_scan_0": ['"year" = 2025'],
        "users:lake_scan_1": ["\"region\" = 'eu'"],
    }


def test_outer_query_where_does_not_prune_a_derived_table() -> None:
    found = filters("SELECT * FROM (SELECT * FROM events) s WHERE s.year = 2026")
    assert found == {"events:lake_scan_0": []}


def test_null_side_of_an_outer_join_is_not_pruned() -> None:
    left = filters(
        "SELECT 1 FROM events e LEFT JOIN users u ON e.event_id = u.user_id"
        " WHERE u.region IS NULL AND e.day = 1"
    )
    assert left == {"events:lake_scan_0": ['"day" = 1'], "users:lake_scan_1": []}
    right = filters(
        "SELECT 1 FROM users u RIGHT JOIN events e ON e.event_id = u.user_id"
        " WHERE u.region IS NULL AND e.day = 1"
    )
    assert right == {"users:lake_scan_0": [], "events:lake_scan_1": ['"day" = 1']}
    inner = filters(
        "SELECT 1 FROM events e JOIN users u ON e.event_id = u.user_id WHERE u.region = 'x'"
    )
    assert inner == {"events:lake_scan_0": [], "users:lake_scan_1": ["\"region\" = 'x'"]}


# --- reads and names ------------------------------------------------------------------------


def test_with_query_used_twice_is_read_twice() -> None:
    translation = tr(
        "WITH e AS (SELECT * FROM events WHERE day = 5)"
        " SELECT count(*) FROM e a JOIN e b ON a.event_id = b.event_id"
    )
    assert [(s.table.name, s.times_read, s.partition_filters) for s in translation.scans] == [
        ("events", 2, ['"day" = 5'])
    ]


def test_nested_with_queries_multiply_reads() -> None:
    translation = tr(
        "WITH e AS (SELECT * FROM events), f AS (SELECT * FROM e UNION ALL SELECT * FROM e)"
        " SELECT count(*) FROM f x JOIN f y ON x.event_id = y.event_id"
    )
    assert [s.times_read for s in translation.scans] == [4]


def test_plain_table_is_read_once() -> None:
    assert [s.times_read for s in tr("SELECT * FROM events").scans] == [1]


def test_output_names_follow_athena() -> None:
    names, _ = run(
        "SELECT count(*), event_id, amount AS a, n + 1, e.day, details['k']"
        " FROM events e GROUP BY 2, 3, 4, 5, 6"
    )
    assert names == ["_col0", "event_id", "a", "_col3", "day", "_col5"]


def test_star_keeps_the_table_columns() -> None:
    names, rows = run("SELECT * FROM events ORDER BY event_id")
    assert names == list(EVENTS.columns)
    assert len(rows) == 2


def test_union_takes_the_first_branch_names() -> None:
    names, rows = run("SELECT event_id FROM events UNION ALL SELECT 'x' ORDER BY 1")
    assert names == ["event_id"]
    assert rows == [("a",), ("b",), ("x",)]
