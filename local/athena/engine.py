"""The local Athena: each query really runs, on DuckDB, over the emulator's S3 objects.

A query goes QUEUED -> RUNNING -> SUCCEEDED / FAILED / CANCELLED on a worker thread, and each
change is sent to EventBridge's default bus as Athena sends it ("Athena Query State Change",
source `aws.athena`), so rules and `@app.on_cw_event` handlers see it. Running a query:

1. translate it (translate.py): Athena SQL -> DuckDB SQL, the lake tables it reads and the
   predicates on their partition columns;
2. list each table's objects (catalog.py) and keep those of the partitions the predicates
   allow, evaluated by DuckDB on the partition values: Athena's partition pruning. The bytes
   scanned are those objects' sizes (times the reads of a WITH query used twice), checked
   against the workgroup's cutoff before anything is read;
3. have those objects as files in their Hive layout (each copied once per ETag, into a
   directory the process removes at exit) and run the query with
   `read_json(..., columns=<the Glue schema>, hive_partitioning=true)` for each table;
4. write the result as Athena does: `<output>/<id>.csv` (every value quoted) and
   `<id>.csv.metadata`, and keep the rows for GetQueryResults.

The workgroup's settings apply: an enforced result location, the bytes-scanned cutoff.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from local.athena import catalog, results
from local.athena.translate import QueryError, TableScan, translate

log = logging.getLogger("local.athena")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class InvalidRequest(Exception):
    """Athena's InvalidRequestException (HTTP 400)."""


@dataclass
class Execution:
    id: str
    query: str
    database: str | None
    catalog_name: str
    workgroup: str
    output: str
    cutoff: int | None
    state: str = "QUEUED"
    reason: str | None = None
    error_type: int | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    bytes_scanned: int = 0
    engine_ms: int = 0
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    events_sent: int = 0

    def describe(self) -> dict[str, Any]:
        """GetQueryExecution's `QueryExecution`."""
        ended = self.completed or time.time()
        status: dict[str, Any] = {"State": self.state, "SubmissionDateTime": self.submitted}
        if self.completed:
            status["CompletionDateTime"] = self.completed
        if self.reason:
            status["StateChangeReason"] = self.reason
        if self.error_type is not None:
            status["AthenaError"] = {"ErrorCategory": 2, "ErrorType": self.error_type,
                                     "Retryable": False, "ErrorMessage": self.reason}  # fmt: skip
        queued = int(((self.started or ended) - self.submitted) * 1000)
        context = {"Catalog": self.catalog_name}
        if self.database:
            context["Database"] = self.database
        return {
            "QueryExecutionId": self.id,
            "Query": self.query,
            "StatementType": "DML",
            "ResultConfiguration": {"OutputLocation": self.output},
            "QueryExecutionContext": context,
            "Status": status,
            "Statistics": {
                "EngineExecutionTimeInMillis": self.engine_ms,
                "DataScannedInBytes": self.bytes_scanned,
                "TotalExecutionTimeInMillis": int((ended - self.submitted) * 1000),
                "QueryQueueTimeInMillis": queued,
                "ServicePreProcessingTimeInMillis": 0,
                "QueryPlanningTimeInMillis": 0,
                "ServiceProcessingTimeInMillis": 0,
                "ResultReuseInformation": {"ReusedPreviousResult": False},
            },
            "WorkGroup": self.workgroup,
            "EngineVersion": {
                "SelectedEngineVersion": "Athena engine version 3",
                "EffectiveEngineVersion": "Athena engine version 3",
            },
        }


class Backends(Protocol):
    """The emulator's in-process stores the engine reads and writes. `s3` and `glue` are
    looked up on every use: a new moto session (a test's) makes new ones."""

    @property
    def s3(self) -> Any: ...

    @property
    def glue(self) -> Any: ...

    def send_event(self, event: dict[str, Any]) -> None: ...


class LocalAthena:
    def __init__(self, backends: Backends, workers: int = 2) -> None:
        self._backends = backends
        self._executions: dict[str, Execution] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="local-athena")
        # The lake's objects as files for DuckDB, by ETag: copied once, read by every query.
        self._files = Path(tempfile.mkdtemp(prefix="local-athena-"))
        atexit.register(shutil.rmtree, self._files, ignore_errors=True)

    # --- the API ------------------------------------------------------------------------

    def start(
        self,
        query: str,
        context: dict[str, Any] | None,
        result_configuration: dict[str, Any] | None,
        workgroup: str,
        workgroup_configuration: dict[str, Any],
        token: str | None,
    ) -> str:
        if not query or not query.strip():
            raise InvalidRequest("QueryString must not be empty")
        context = context or {}
        configured = workgroup_configuration.get("ResultConfiguration") or {}
        asked = (result_configuration or {}).get("OutputLocation")
        enforced = workgroup_configuration.get("EnforceWorkGroupConfiguration", True)
        location = configured.get("OutputLocation") if enforced or not asked else asked
        location = location or asked
        if not location:
            raise InvalidRequest(
                "No output location provided. An output location is required either through "
                "the Workgroup result configuration setting or as an API input."
            )
        with self._lock:
            if token and (workgroup, token) in self._tokens:
                earlier = self._executions[self._tokens[(workgroup, token)]]
                if earlier.query != query:
                    raise InvalidRequest("IdempotentParameterMismatch: the token was used for "
                                         "another query")  # fmt: skip
                return earlier.id
            execution_id = str(uuid.uuid4())
            cutoff = workgroup_configuration.get("BytesScannedCutoffPerQuery")
            execution = Execution(
                id=execution_id,
                query=query,
                database=context.get("Database"),
                catalog_name=context.get("Catalog", "AwsDataCatalog"),
                workgroup=workgroup,
                output=location.rstrip("/") + f"/{execution_id}.csv",
                cutoff=int(cutoff) if cutoff else None,
            )
            self._executions[execution_id] = execution
            if token:
                self._tokens[(workgroup, token)] = execution_id
        self._send(execution, previous=None)
        self._pool.submit(self._run, execution)
        return execution_id

    def describe(self, execution_id: str) -> dict[str, Any]:
        return self._get(execution_id).describe()

    def results(self, execution_id: str, token: str | None, size: int | None) -> dict[str, Any]:
        execution = self._get(execution_id)
        if execution.state != "SUCCEEDED":
            if execution.state in FINAL:
                raise InvalidRequest(
                    f"Query did not finish successfully. Final query state: {execution.state}"
                    + (f"\n{execution.reason}" if execution.reason else "")
                )
            raise InvalidRequest(f"Query has not yet finished. Current state: {execution.state}")
        size = 1000 if size is None else size
        if not 1 <= size <= 1000:
            raise InvalidRequest("MaxResults must be between 1 and 1000")
        try:
            return results.page(execution.columns, execution.rows, token, size)
        except ValueError as error:
            raise InvalidRequest(str(error)) from None

    def stop(self, execution_id: str) -> None:
        execution = self._get(execution_id)
        with self._lock:
            if execution.state in FINAL:
                return
            previous, execution.state = execution.state, "CANCELLED"
            execution.reason = "Query cancelled by user"
            execution.completed = time.time()
        self._send(execution, previous)

    def list(self, workgroup: str | None) -> list[str]:
        found = [e for e in self._executions.values() if workgroup in (None, e.workgroup)]
        return [e.id for e in sorted(found, key=lambda e: e.submitted, reverse=True)]

    def _get(self, execution_id: str) -> Execution:
        execution = self._executions.get(execution_id or "")
        if execution is None:
            raise InvalidRequest(f"QueryExecution {execution_id} was not found")
        return execution

    # --- running a query ------------------------------------------------------------------

    def _run(self, execution: Execution) -> None:
        with self._lock:
            if execution.state != "QUEUED":
                return  # cancelled while queued
            execution.state, execution.started = "RUNNING", time.time()
        self._send(execution, "QUEUED")
        try:
            columns, rows, scanned = self._execute(execution)
        except QueryError as error:
            self._end(execution, "FAILED", str(error), error_type=1100)
            return
        except _Cancelled as cancelled:
            execution.bytes_scanned = cancelled.scanned
            self._end(execution, "CANCELLED", str(cancelled))
            return
        except Exception as error:  # the engine's own message, as Athena shows Trino's
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            self._end(execution, "FAILED", _athena_message(message), error_type=1100)
            return
        execution.columns, execution.rows, execution.bytes_scanned = columns, rows, scanned
        body = results.csv_body([c["Name"] for c in columns], rows)
        bucket, key = _split_s3(execution.output)
        try:
            self._backends.s3.put_object(bucket_name=bucket, key_name=key, value=body)
            metadata = json.dumps({"ColumnInfo": columns}).encode()
            self._backends.s3.put_object(bucket_name=bucket, key_name=key + ".metadata",
                                         value=metadata)  # fmt: skip
        except Exception as error:
            self._end(execution, "FAILED", f"Unable to write the query results to "
                      f"{execution.output}: {error}", error_type=1300)  # fmt: skip
            return
        self._end(execution, "SUCCEEDED", None)

    def _execute(
        self, execution: Execution
    ) -> tuple[list[dict[str, Any]], list[list[str | None]], int]:
        import duckdb

        translation = translate(execution.query, execution.database, self._table)
        connection = duckdb.connect(config={"autoinstall_known_extensions": False,
                                            "TimeZone": "UTC", "threads": 2})  # fmt: skip
        try:
            plans = [(scan, self.objects_read(connection, scan)) for scan in translation.scans]
            scanned = sum(sum(o.size for o in objects) * scan.times_read for scan, objects in plans)
            if execution.cutoff is not None and scanned > execution.cutoff:
                raise _Cancelled(
                    "Query cancelled! Bytes scanned limit was exceeded (this query would scan "
                    f"{scanned} bytes; the workgroup's cutoff is {execution.cutoff})",
                    execution.cutoff,
                )
            for scan, objects in plans:
                connection.execute(self.view_sql(scan, objects))
            started = time.perf_counter()
            cursor = connection.execute(translation.sql)
            described = cursor.description or []
            fetched = cursor.fetchall()
            execution.engine_ms = int((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
        columns = [results.column_info(d[0], d[1]) for d in described]
        rows = [[results.text(value) for value in row] for row in fetched]
        return columns, rows, scanned

    def _table(self, database: str, name: str) -> catalog.Table:
        return catalog.glue_table(self._backends.glue, database, name)

    def objects_read(self, connection: Any, scan: TableScan) -> list[catalog.LakeObject]:
        """The objects of the partitions the query's partition predicates allow."""
        found = catalog.lake_objects(self._backends.s3, scan.table)
        if not scan.partition_filters or not found:
            return found
        keys = scan.table.partition_keys
        types = {k: catalog.duckdb_type(scan.table.columns[k]) for k in keys}
        partitions = sorted({tuple(o.partition[k] for k in keys) for o in found})
        rows = ", ".join(
            "(" + ", ".join([*(f"CAST({_literal(v)} AS {types[k]})"
                               for k, v in zip(keys, p, strict=True)),
                             _literal("/".join(p))]) + ")"
            for p in partitions
        )  # fmt: skip
        names = ", ".join([*(f'"{k}"' for k in keys), "partition_path"])
        where = " AND ".join(f"({f})" for f in scan.partition_filters)
        try:
            kept = {row[0] for row in connection.execute(
                f"SELECT partition_path FROM (VALUES {rows}) AS lake_partitions({names}) "
                f"WHERE {where}").fetchall()}  # fmt: skip
        except Exception as error:  # Athena too prunes only with what it can evaluate
            log.warning("local Athena: partitions not pruned by %s (%s)", where, error)
            return found
        return [o for o in found if "/".join(o.partition[k] for k in keys) in kept]

    def view_sql(self, scan: TableScan, objects: list[catalog.LakeObject]) -> str:
        """The view DuckDB reads `scan`'s table from: `objects` as files (copied once per
        ETag) through `read_json` with the Glue schema."""
        table = scan.table
        data = {k: catalog.duckdb_type(v) for k, v in table.data_columns.items()}
        hive = {k: catalog.duckdb_type(table.columns[k]) for k in table.partition_keys}
        if not objects:
            typed = [f'CAST(NULL AS {t}) AS "{k}"' for k, t in {**data, **hive}.items()]
            return f"CREATE TEMP VIEW {scan.view} AS SELECT {', '.join(typed)} WHERE false"
        paths = []
        for stored in objects:
            # under a directory per ETag, the key's Hive layout kept for hive_partitioning
            path = self._files / (stored.etag or "none") / table.bucket / stored.key
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + f".{threading.get_ident()}.part")
                partial.write_bytes(
                    catalog.object_bytes(self._backends.s3, table.bucket, stored.key))  # fmt: skip
                partial.replace(path)  # whole or absent, whatever another query reads
            paths.append(str(path))
        names = ", ".join(f'"{k}"' for k in [*data, *hive])
        return (
            f"CREATE TEMP VIEW {scan.view} AS SELECT {names} FROM read_json({paths!r}, "
            f"format='newline_delimited', compression='auto', columns={data!r}, "
            f"hive_partitioning=true, hive_types={hive!r}, hive_types_autocast=false)"
        )

    def _end(
        self, execution: Execution, state: str, reason: str | None, error_type: int | None = None
    ) -> None:
        with self._lock:
            if execution.state in FINAL:
                return  # cancelled meanwhile
            previous = execution.state
            execution.state, execution.reason, execution.error_type = state, reason, error_type
            execution.completed = time.time()
        self._send(execution, previous)

    def _send(self, execution: Execution, previous: str | None) -> None:
        """Athena's state-change event, on the default bus."""
        execution.events_sent += 1
        detail = {
            "currentState": execution.state,
            "queryExecutionId": execution.id,
            "sequenceNumber": str(execution.events_sent),
            "statementType": "DML",
            "versionId": "0",
            "workgroupName": execution.workgroup,
        }
        if previous:
            detail["previousState"] = previous
        try:
            self._send_now(detail)
        except Exception:  # the query's state stands; a lost event must be seen, not raised
            log.exception("local Athena: the state-change event was not delivered")

    def _send_now(self, detail: dict[str, Any]) -> None:
        self._backends.send_event({
            "Source": "aws.athena",
            "DetailType": "Athena Query State Change",
            "Detail": json.dumps(detail),
            # (no "Time": moto stamps the event itself, as EventBridge does)
            "Resources": [],
        })  # fmt: skip


class _Cancelled(Exception):
    def __init__(self, message: str, scanned: int) -> None:
        super().__init__(message)
        self.scanned = scanned


def _split_s3(url: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([^/]+)/(.+)", url)
    if not match:
        raise InvalidRequest(f"the output location {url} is not an S3 URL")
    return match[1], match[2]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _athena_message(message: str) -> str:
    """DuckDB's error as the query's failure reason, marked as the local engine's."""
    return f"GENERIC_USER_ERROR: {message} (local engine: DuckDB)"
