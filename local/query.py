"""`make query SQL="..."`: one Athena query on the local data lake, printed as a table.

It goes through the emulator's Athena like any client's: the analytics workgroup (its
result location and scan cutoff), the analytics database as the default, the SQL run by the
local engine (DuckDB). The state, bytes scanned and time are printed under the table; a
failed query prints Athena's reason and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sql", help="the query (Athena SQL); the table: telemetry_events")
    parser.add_argument("--max-rows", type=int, default=50)
    args = parser.parse_args(argv)
    from local.provision import STATE_DIR, emulator_client
    from local.stack import running_state

    state = running_state(STATE_DIR)
    if state is None:
        return 1
    athena = emulator_client(state, "athena")
    resources = state["resources"]
    execution_id = athena.start_query_execution(
        QueryString=args.sql,
        WorkGroup=resources["AnalyticsWorkGroupName"],
        QueryExecutionContext={"Database": resources["AnalyticsDatabaseName"]},
    )["QueryExecutionId"]
    for _ in range(6000):  # 5 min of polls; a query still running then is reported so
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        if execution["Status"]["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.05)
    status, stats = execution["Status"], execution["Statistics"]
    if status["State"] != "SUCCEEDED":
        print(f"{status['State']}: {status.get('StateChangeReason', '')}", file=sys.stderr)
        return 1
    page = athena.get_query_results(QueryExecutionId=execution_id, MaxResults=args.max_rows + 1)
    rows = [[cell.get("VarCharValue", "NULL") for cell in row["Data"]]
            for row in page["ResultSet"]["Rows"]]  # fmt: skip
    print(table(rows[: args.max_rows + 1]))
    more = " (more rows not shown)" if "NextToken" in page or len(rows) > args.max_rows + 1 else ""
    print(f"\n{max(len(rows) - 1, 0)} row(s){more}; {stats['DataScannedInBytes']:,} bytes scanned; "
          f"{stats['EngineExecutionTimeInMillis']} ms in the engine; {execution_id}")  # fmt: skip
    return 0


def table(rows: list[list[str]]) -> str:
    """The header and rows as aligned text columns."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
