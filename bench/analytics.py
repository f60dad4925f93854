"""The local Athena (local/athena/) on the telemetry lake: query time and bytes scanned as the
lake grows, and what the emulator adds on top of DuckDB itself.

moto in process (mock_aws) with the local engine installed, provisioned from
infra/resources.json (dev stage); `local.lake` writes 10k, 100k and 1M events (QUICK: 10k and
100k) over the 7 days before a fixed instant into the data-lake bucket (the objects are
deleted between sizes). For each size, three queries through the Athena API (the analytics
workgroup): the report's `by_kind` and `daily` for one day inside the range
(chalicelib/analytics/queries.py, which read that day's partitions only) and a full-table
`SELECT event_type, count(*) ... GROUP BY 1`. Per query: wall time from StartQueryExecution
to SUCCEEDED (GetQueryExecution polled every 5 ms), EngineExecutionTimeInMillis and
DataScannedInBytes, medians of several runs.

Overhead: the same translated SQL (local.athena.translate) run by DuckDB directly, over the
same files the engine reads (its own pruning and `view_sql`, the objects already on disk),
with the same connection settings; only the
query (execute + fetch) is timed. Emulator and direct runs alternate, so load hits both. The
direct rows are checked equal to the emulator's. Ratio: emulator wall / direct.

Checks: one day's bytes scanned <= 0.2 x the full table's (partition pruning; the `by_kind`
query reads the day once; `daily` reads it twice, its WITH query being referenced twice, as
Athena inlines it); overhead ratio <= 5 at 100k events. The rest is informational.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, date, datetime
from typing import Any

from bench import AWS_OVERRIDES, STAGE, Result, median, patched_environ, quiet_stdout, stage_env

END = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # fixed: the same partitions on every run
DAYS = 7
DAY = date(2026, 11, 23)  # a day inside the range
SEED = 7
POLL_S = 0.005
TIMEOUT_S = 600
PRUNE_MAX = 0.2  # one day's bytes / all days' bytes (7 days: ~0.14)
OVERHEAD_MAX, OVERHEAD_AT = 5.0, 100_000
FULL_SQL = "SELECT event_type, count(*) FROM telemetry_events GROUP BY 1"
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def _queries(database: str) -> dict[str, str]:
    from chalicelib.analytics.queries import report_queries

    report = report_queries(database, "telemetry_events", DAY, 1)
    return {"day by_kind": report["by_kind"], "day daily": report["daily"], "full": FULL_SQL}


def _empty_lake(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def _fill_lake(s3: Any, bucket: str, count: int) -> dict[str, Any]:
    from local import lake

    _empty_lake(s3, bucket)
    started = time.perf_counter()
    events = list(lake.generate(count, DAYS, END, SEED))
    generated = time.perf_counter()
    objects = lake.write(s3, bucket, iter(events))
    written = time.perf_counter()
    sizes = [o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
             for o in page.get("Contents", [])]  # fmt: skip
    return {"events": count, "objects": objects, "bytes": sum(sizes),
            "generate_s": generated - started, "write_s": written - generated,
            "events_per_s": count / (written - started),
            "write_events_per_s": count / (written - generated)}  # fmt: skip


def _through_athena(athena: Any, sql: str, database: str, workgroup: str) -> dict[str, Any]:
    started = time.perf_counter()
    execution_id = athena.start_query_execution(
        QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=workgroup
    )["QueryExecutionId"]
    while True:
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        if execution["Status"]["State"] in FINAL:
            break
        if time.perf_counter() - started > TIMEOUT_S:
            raise RuntimeError(f"query still {execution['Status']['State']} after {TIMEOUT_S} s")
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    status = execution["Status"]
    if status["State"] != "SUCCEEDED":
        raise RuntimeError(f"query {status['State']}: {status.get('StateChangeReason')}")
    stats = execution["Statistics"]
    return {"id": execution_id, "wall_s": wall,
            "engine_s": stats["EngineExecutionTimeInMillis"] / 1000,
            "bytes": stats["DataScannedInBytes"]}  # fmt: skip


def _athena_rows(athena: Any, execution_id: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id):
        rows += [tuple(d.get("VarCharValue") for d in r["Data"]) for r in page["ResultSet"]["Rows"]]
    return rows[1:]  # the header row


class Direct:
    """The translated SQL on DuckDB over the same files the engine reads (its own pruning
    and views, the objects already on disk): only DuckDB's query is timed."""

    def __init__(self, sql: str, database: str) -> None:
        import duckdb

        from local.athena import catalog, engine_for
        from local.athena.translate import translate

        self.engine = engine_for("123456789012", os.environ["AWS_DEFAULT_REGION"])
        backends = self.engine._backends
        started = time.perf_counter()
        self.translation = translate(
            sql, database, lambda db, name: catalog.glue_table(backends.glue, db, name)
        )
        self.translate_s = time.perf_counter() - started
        self.views: list[str] = []
        self.objects, self.prune_s = 0, 0.0
        connection = duckdb.connect()
        try:
            for scan in self.translation.scans:
                started = time.perf_counter()
                objects = self.engine.objects_read(connection, scan)
                self.prune_s += time.perf_counter() - started
                self.objects += len(objects)
                self.views.append(self.engine.view_sql(scan, objects))
        finally:
            connection.close()

    def run(self) -> tuple[float, list[tuple[Any, ...]]]:
        import duckdb

        from local.athena import results

        connection = duckdb.connect(config={"autoinstall_known_extensions": False,
                                            "TimeZone": "UTC", "threads": 2})  # fmt: skip
        try:
            for view in self.views:
                connection.execute(view)
            started = time.perf_counter()
            fetched = connection.execute(self.translation.sql).fetchall()
            elapsed = time.perf_counter() - started
        finally:
            connection.close()
        return elapsed, [tuple(results.text(v) for v in row) for row in fetched]


def _measure(athena: Any, outputs: dict[str, str], repeats: int) -> dict[str, Any]:
    database, workgroup = outputs["AnalyticsDatabaseName"], outputs["AnalyticsWorkGroupName"]
    out: dict[str, Any] = {}
    for name, sql in _queries(database).items():
        first = _through_athena(athena, sql, database, workgroup)  # warm-up, and the rows
        direct = Direct(sql, database)
        _, direct_rows = direct.run()
        if sorted(_athena_rows(athena, first["id"]), key=str) != sorted(direct_rows, key=str):
            raise RuntimeError(f"{name}: the emulator's rows differ from DuckDB's own")
        runs, directs = [], []
        for i in range(repeats):  # alternate which goes first
            order = ("athena", "direct") if i % 2 == 0 else ("direct", "athena")
            for side in order:
                if side == "athena":
                    runs.append(_through_athena(athena, sql, database, workgroup))
                else:
                    directs.append(direct.run()[0])
        if len({r["bytes"] for r in runs}) != 1:
            raise RuntimeError(f"{name}: DataScannedInBytes differs between runs")
        wall = median([r["wall_s"] for r in runs])
        out[name] = {
            "wall_s": wall,
            "wall_min_s": min(r["wall_s"] for r in runs),
            "engine_s": median([r["engine_s"] for r in runs]),
            "direct_s": median(directs),
            "overhead_ratio": wall / median(directs),
            "bytes": runs[0]["bytes"],
            "bytes_per_read": runs[0]["bytes"]
            // max(s.times_read for s in direct.translation.scans),
            "reads": [s.times_read for s in direct.translation.scans],
            "objects_read": direct.objects,
            "translate_s": direct.translate_s,
            "prune_s": direct.prune_s,
            "rows": len(direct_rows),
            "runs": len(runs),
        }
    return out


def run(quick: bool) -> Result:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    repeats = 5
    measured: dict[int, dict[str, Any]] = {}
    lakes: dict[int, dict[str, Any]] = {}
    with patched_environ(stage_env(), drop_prefixes=AWS_OVERRIDES), quiet_stdout():
        import boto3
        from moto import mock_aws

        from local import athena as local_athena
        from local.provision import provision

        local_athena.install()
        with mock_aws():
            moto_logger = logging.getLogger("moto")
            level = moto_logger.level
            moto_logger.setLevel(logging.ERROR)  # the skipped CloudWatch alarm: not news
            try:
                outputs = provision(STAGE, boto3.client("cloudformation"))
            finally:
                moto_logger.setLevel(level)
            s3, athena = boto3.client("s3"), boto3.client("athena")
            for size in sizes:
                lakes[size] = _fill_lake(s3, outputs["DataLakeBucketName"], size)
                measured[size] = _measure(athena, outputs, 3 if size >= 1_000_000 else repeats)
    return _report(sizes, lakes, measured, quick)


def _report(sizes: tuple[int, ...], lakes: dict[int, Any], measured: dict[int, Any],
            quick: bool) -> Result:  # fmt: skip
    result = Result("analytics", "Local Athena on the telemetry lake: time and bytes by size")
    result.row("setup", f"moto in process, dev stage; {DAYS} days of events before {END:%F %H}h "
               f"UTC, one day {DAY}; medians of 5 runs (1M: 3), polls every 5 ms")  # fmt: skip
    for size in sizes:
        lake = lakes[size]
        result.row(f"write {size:,} events", f"{lake['objects']} objects, "
                   f"{lake['bytes'] / 1e6:.1f} MB gzip; generate {lake['generate_s']:.1f} s + "
                   f"write {lake['write_s']:.1f} s = {lake['events_per_s']:,.0f} events/s "
                   f"(write alone {lake['write_events_per_s']:,.0f}/s)")  # fmt: skip
    base = sizes[0]
    for name in measured[base]:
        for size in sizes:
            q = measured[size][name]
            result.row(f"{name} @ {size:,}", f"wall {q['wall_s'] * 1000:.0f} ms (engine "
                       f"{q['engine_s'] * 1000:.0f} ms), direct DuckDB {q['direct_s'] * 1000:.0f}"
                       f" ms, x{q['overhead_ratio']:.1f}; {q['bytes'] / 1e6:.2f} MB scanned"
                       f" ({q['objects_read']} objects, {q['rows']} rows)")  # fmt: skip
        growth = ", ".join(
            f"{size // 1000}k x{_ratio(measured[size][name], measured[base][name], 'wall_s')}"
            f" (engine x{_ratio(measured[size][name], measured[base][name], 'engine_s')})"
            for size in sizes[1:]
        )
        result.row(f"{name}: wall vs {base // 1000}k", growth)
    for size in sizes:
        q = measured[size]
        prune = q["day by_kind"]["bytes"] / q["full"]["bytes"]
        daily = q["day daily"]["bytes_per_read"] / q["full"]["bytes"]
        result.check(f"one day / full bytes @ {size:,} (by_kind)", round(prune, 3),
                     f"<= {PRUNE_MAX} (1/7 = 0.143)", prune <= PRUNE_MAX,
                     note=f"daily: {daily:.3f} per read, read {q['day daily']['reads']} times",
                     absolute={"day_bytes": q["day by_kind"]["bytes"],
                               "full_bytes": q["full"]["bytes"]})  # fmt: skip
    for size in sizes:
        for name, q in measured[size].items():
            target = OVERHEAD_MAX if size == OVERHEAD_AT else None
            result.check(
                f"emulator wall / direct DuckDB, {name} @ {size // 1000}k",
                round(q["overhead_ratio"], 2),
                f"<= {OVERHEAD_MAX}" if target else "info",
                q["overhead_ratio"] <= OVERHEAD_MAX if target else None,
                note=f"{q['wall_s'] * 1000:.0f} ms vs {q['direct_s'] * 1000:.0f} ms; "
                f"engine {q['engine_s'] * 1000:.0f} ms; translate "
                f"{q['translate_s'] * 1000:.0f} ms, partition pruning "
                f"{q['prune_s'] * 1000:.0f} ms (each timed alone)",
                absolute={"wall_s": q["wall_s"], "direct_s": q["direct_s"]},
            )
    result.metrics = {"quick": quick, "end": END.isoformat(), "day": DAY.isoformat(),
                      "days": DAYS, "seed": SEED, "poll_s": POLL_S, "lake": lakes,
                      "queries": measured, "targets": {"prune_max": PRUNE_MAX,
                      "overhead_max": OVERHEAD_MAX, "overhead_at_events": OVERHEAD_AT},
                      "load_average": os.getloadavg()}  # fmt: skip
    return result


def _ratio(now: dict[str, Any], base: dict[str, Any], key: str) -> str:
    return f"{now[key] / base[key]:.1f}" if base[key] else "n/a (0 ms at base)"
