"""Athena SQL (Trino's dialect) -> DuckDB SQL, with the tables it reads and their partition
predicates, answering as Athena would or failing loudly.

sqlglot does the dialect translation. Where it would leave DuckDB answering differently from
Athena, the tree is changed here or the query is refused with a NOT_SUPPORTED error that names
the function (the README lists them):

- integer division truncates in Athena (7 / 2 = 3): types are inferred from the Glue schema and
  a division of two integers becomes a truncating one; a division whose operand types cannot be
  inferred is refused rather than guessed;
- `approx_percentile` and `approx_distinct` are computed exactly (`quantile_disc`, the value
  at that rank; `count(DISTINCT)`): within any error bound Athena gives, and the same on every
  run;
- `date_add` on a DATE stays a DATE; `from_iso8601_timestamp` with a non-UTC offset is an error
  (DuckDB would keep the instant but lose the zone, so `date()` of it would differ);
- Joda-pattern functions, `map_agg`, `with_timezone`, `to_iso8601`, `slice` and
  `regexp_replace` with `$n` references are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from local.athena.catalog import CatalogError, Table

#: Functions DuckDB lacks or runs differently, refused by name (Trino's names).
UNSUPPORTED_FUNCTIONS = {
    "format_datetime": "Joda-Time patterns",
    "parse_datetime": "Joda-Time patterns",
    "map_agg": "no DuckDB equivalent",
    "with_timezone": "no DuckDB equivalent",
    "to_iso8601": "no DuckDB equivalent",
    "slice": "DuckDB's slice takes an end, Trino's a length",
}
_INTEGER_TYPES = exp.DataType.INTEGER_TYPES


class QueryError(Exception):
    """The query fails, with Athena's error category and text."""


@dataclass
class TableScan:
    """One reference to a lake table in the query: DuckDB reads it from `view`."""

    table: Table
    view: str
    partition_filters: list[str]  # DuckDB predicates over the partition columns only
    times_read: int = 1  # a WITH query referenced twice is read twice, as in Athena


@dataclass
class Translation:
    sql: str
    scans: list[TableScan] = field(default_factory=list)


def translate(
    query: str, default_database: str | None, load_table: Callable[[str, str], Table]
) -> Translation:
    try:
        statements = [s for s in sqlglot.parse(query, read="athena") if s is not None]
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = f"line {first.get('line', 1)}:{first.get('col', 1)}: " if first else ""
        raise QueryError(f"SYNTAX_ERROR: {where}{first.get('description', error)}") from None
    if len(statements) != 1:
        raise QueryError("INVALID_INPUT: Only one sql statement is allowed.")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryError(
            "NOT_SUPPORTED: the local engine runs queries (SELECT, WITH, UNION) only; DDL and "
            "writes are made through Glue and S3"
        )
    _refuse_unsupported(tree)
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    references: list[tuple[exp.Table, Table]] = []
    for node in list(tree.find_all(exp.Table)):
        if not node.name or (not node.args.get("db") and node.name.lower() in cte_names):
            continue
        database = (node.args.get("db") and node.args["db"].name) or default_database
        if not database:
            raise QueryError("SCHEMA_NOT_FOUND: no database given for table " + node.name)
        try:
            references.append((node, load_table(database.lower(), node.name.lower())))
        except CatalogError as error:
            raise QueryError(str(error)) from None
    _name_outputs(tree)
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for _, table in references:
        schema.setdefault(table.database, {})[table.name] = table.schema()
    tree = _typed(tree, schema, default_database)
    _rewrite_functions(tree)
    scans = []
    for index, node in enumerate(t for t in tree.find_all(exp.Table) if _is_lake(t, references)):
        table = _table_for(node, references)
        alias = node.alias_or_name
        view = f"lake_scan_{index}"
        scans.append(TableScan(table, view, _partition_filters(node, alias, table),
                               _times_read(node, tree)))  # fmt: skip
        node.replace(exp.alias_(exp.to_table(view), alias, table=True))
    return Translation(tree.sql(dialect="duckdb"), scans)


def _refuse_unsupported(tree: exp.Expression) -> None:
    for function in tree.find_all(exp.Func):
        name = (function.name if isinstance(function, exp.Anonymous) else "").lower()
        if isinstance(function, exp.ParseDatetime):
            name = "parse_datetime"
        elif isinstance(function, exp.ArraySlice):
            name = "slice"
        if name in UNSUPPORTED_FUNCTIONS:
            raise QueryError(
                f"NOT_SUPPORTED: {name} does not run locally as in Athena "
                f"({UNSUPPORTED_FUNCTIONS[name]}); see the README's local Athena section"
            )
        if isinstance(function, exp.RegexpReplace):
            replacement = function.args.get("replacement")
            if replacement is not None and "$" in replacement.sql():
                raise QueryError(
                    "NOT_SUPPORTED: regexp_replace with $n group references does not run "
                    "locally as in Athena (DuckDB writes \\1)"
                )


def _name_outputs(tree: exp.Expression) -> None:
    """Name the outer query's columns as Athena does (`_col0`, or the column's own name), so
    that type inference (which names them too) keeps Athena's names."""
    selects = [tree] if isinstance(tree, exp.Select) else []
    if isinstance(tree, exp.SetOperation):
        selects = [tree.this] if isinstance(tree.this, exp.Select) else []
    for select in selects:
        for index, projection in enumerate(select.expressions):
            if isinstance(projection, exp.Alias | exp.Star) or (
                isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)
            ):
                continue
            name = projection.name if isinstance(projection, exp.Column) else f"_col{index}"
            projection.replace(exp.alias_(projection.copy(), name, quoted=True))


def _typed(
    tree: exp.Expression, schema: dict[str, dict[str, dict[str, str]]], database: str | None
) -> exp.Expression:
    """The tree with columns qualified and types inferred. Divisions are made Athena's: two
    integers truncate. If inference fails, a query that divides is refused."""
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify

    try:
        typed = qualify(tree.copy(), schema=schema, db=database, dialect="athena",
                        validate_qualify_columns=False, identify=False)  # fmt: skip
        typed = annotate_types(typed, schema=schema, dialect="athena")
    except Exception as error:  # sqlglot cannot qualify every valid query (lambdas, UNNEST)
        if tree.find(exp.Div):
            raise QueryError(
                "NOT_SUPPORTED: the local engine could not infer this query's types, so it "
                f"cannot divide as Athena does (integer division truncates): {error}"
            ) from None
        return tree
    for division in list(typed.find_all(exp.Div)):
        left, right = division.left, division.right
        if left.type is None or right.type is None or left.is_type(exp.DataType.Type.UNKNOWN):
            raise QueryError("NOT_SUPPORTED: cannot infer the operand types of " + division.sql())
        if left.is_type(*_INTEGER_TYPES) and right.is_type(*_INTEGER_TYPES):
            division.replace(exp.IntDiv(this=left.copy(), expression=right.copy()))
        else:
            division.set("typed", False)
    return typed


def _rewrite_functions(tree: exp.Expression) -> None:
    for node in list(tree.find_all(exp.ApproxQuantile)):
        node.replace(
            exp.Anonymous(this="quantile_disc", expressions=[node.this, node.args["quantile"]])
        )
    for node in list(tree.find_all(exp.ApproxDistinct)):
        node.replace(exp.Count(this=exp.Distinct(expressions=[node.this])))
    for node in list(tree.find_all(exp.DateAdd)):
        if node.this.is_type(exp.DataType.Type.DATE):
            node.replace(exp.cast(node.copy(), exp.DataType.Type.DATE))
    for node in list(tree.find_all(exp.FromISO8601Timestamp)):
        text = node.this
        node.replace(
            exp.Case(
                ifs=[
                    exp.If(
                        this=exp.RegexpLike(
                            this=text.copy(), expression=exp.Literal.string(r"(Z|[+-]00(:?00)?)$")
                        ),
                        true=exp.cast(text.copy(), exp.DataType.Type.TIMESTAMPTZ),
                    )
                ],
                default=exp.Anonymous(
                    this="error",
                    expressions=[
                        exp.Literal.string(
                            "NOT_SUPPORTED: from_iso8601_timestamp with a non-UTC offset "
                            "does not run locally as in Athena"
                        )
                    ],
                ),
            )
        )


def _is_lake(node: exp.Table, references: list[tuple[exp.Table, Table]]) -> bool:
    return any(_same(node, ref, table) for ref, table in references)


def _table_for(node: exp.Table, references: list[tuple[exp.Table, Table]]) -> Table:
    return next(table for ref, table in references if _same(node, ref, table))


def _same(node: exp.Table, reference: exp.Table, table: Table) -> bool:
    if node.name.lower() != table.name:
        return False
    database = node.args.get("db")
    return database is None or database.name.lower() == table.database


def _partition_filters(node: exp.Table, alias: str, table: Table) -> list[str]:
    """The conjuncts of the WHERE around `node` that only read its partition columns, as
    DuckDB predicates over unqualified names: what Athena prunes partitions with."""
    select = node.find_ancestor(exp.Select)
    where = select.args.get("where") if select else None
    if where is None or _null_supplying(node, select):
        return []
    conjuncts = where.this.flatten() if isinstance(where.this, exp.And) else [where.this]
    filters = []
    for conjunct in conjuncts:
        columns = list(conjunct.find_all(exp.Column))
        if not columns or conjunct.find(exp.Subquery, exp.Select):
            continue
        if all(
            c.name.lower() in table.partition_keys and (not c.table or c.table == alias)
            for c in columns
        ):
            bare = conjunct.copy()
            for column in bare.find_all(exp.Column):
                column.replace(exp.column(column.name.lower(), quoted=True))
            filters.append(bare.sql(dialect="duckdb"))
    return filters


def _null_supplying(node: exp.Table, select: exp.Select) -> bool:
    """The table is on the NULL side of an outer join: a WHERE over its partition columns
    (`u.region IS NULL`) filters the joined rows, not the table, so it cannot prune it."""
    joins = select.args.get("joins") or []
    later = joins
    if isinstance(node.parent, exp.Join):
        if node.parent.side in ("LEFT", "FULL"):
            return True
        later = joins[[id(j) for j in joins].index(id(node.parent)) + 1 :]
    return any(join.side in ("RIGHT", "FULL") for join in later)


def _times_read(node: exp.Expression, tree: exp.Expression) -> int:
    """How many times Athena reads the table at `node`: once, times the number of references
    to each WITH query it sits in (Trino inlines WITH queries)."""
    cte = node.find_ancestor(exp.CTE)
    if cte is None:
        return 1
    name = cte.alias_or_name
    total = 0
    for reference in tree.find_all(exp.Table):
        if reference.name == name and not reference.args.get("db"):
            total += _times_read(reference, tree)
    return max(total, 1)
