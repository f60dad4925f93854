"""The analytics ports on AWS: Athena (one workgroup) and the analytics-jobs table.

The table holds, per report day (`pk = REPORT#<day>`):
- `sk = REPORT`: the day's report: its latest run, state, request, and once finished its
  parts and errors. `kind = "daily"` puts it in the `recent` index (newest day first);
- `sk = RUN#<run>#<query>`: one job per run and query: its state, Athena's execution id,
  bytes scanned, timings, error, and the typed rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date
from typing import Any

from chalicelib.analytics import model
from chalicelib.analytics.ports import QueryExecution, QueryResult, RunExists
from chalicelib.core import aws, clock
from chalicelib.core.dynamo import from_item, query_page, to_item

RECENT_INDEX = "recent"
REPORT_KIND = "daily"


def _key(day: date, sk: str = "REPORT") -> dict[str, Any]:
    return {"pk": {"S": f"REPORT#{day.isoformat()}"}, "sk": {"S": sk}}


def _job_sk(run: int, query: str) -> str:
    return f"RUN#{run:04d}#{query}"


class AthenaQueries:
    """Queries in one workgroup: its enforced settings decide where results go and how many
    bytes a query may scan."""

    def __init__(self, workgroup: str, client: Callable[[], Any] | None = None) -> None:
        self._workgroup = workgroup
        self._client = client or (lambda: aws.client("athena"))

    def start(self, sql: str, token: str) -> str:
        answer = self._client().start_query_execution(
            QueryString=sql, WorkGroup=self._workgroup, ClientRequestToken=token
        )
        return answer["QueryExecutionId"]

    def describe(self, execution_id: str) -> QueryExecution:
        found = self._client().get_query_execution(QueryExecutionId=execution_id)
        execution = found["QueryExecution"]
        status, stats = execution["Status"], execution.get("Statistics", {})
        return QueryExecution(
            id=execution["QueryExecutionId"],
            query=execution.get("Query", ""),
            state=status["State"],
            reason=status.get("StateChangeReason"),
            bytes_scanned=int(stats.get("DataScannedInBytes", 0)),
            engine_ms=int(stats.get("EngineExecutionTimeInMillis", 0)),
            queue_ms=int(stats.get("QueryQueueTimeInMillis", 0)),
            total_ms=int(stats.get("TotalExecutionTimeInMillis", 0)),
            submitted_at=_timestamp(status.get("SubmissionDateTime")),
            completed_at=_timestamp(status.get("CompletionDateTime")),
        )

    def results(self, execution_id: str, max_rows: int) -> QueryResult:
        """The rows, page by page (the first row of the first page is the header)."""
        rows: list[dict[str, Any]] = []
        columns: list[dict[str, Any]] = []
        token: str | None = None
        first = True
        while True:
            request = {"QueryExecutionId": execution_id, "MaxResults": 1000}
            if token:
                request["NextToken"] = token
            page = self._client().get_query_results(**request)
            columns = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
            raw = page["ResultSet"]["Rows"][1:] if first else page["ResultSet"]["Rows"]
            first = False
            rows.extend(model.typed_rows(raw, columns))
            token = page.get("NextToken")
            if len(rows) > max_rows:
                return QueryResult(rows[:max_rows], True, _columns(columns))
            if not token:
                return QueryResult(rows, False, _columns(columns))


def _columns(columns: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"name": c["Name"], "type": c["Type"]} for c in columns]


def _timestamp(value: Any) -> str | None:
    """boto3 gives datetimes; keep the report's timestamps as the app's UTC text."""
    return clock.timestamp(value) if value is not None else None


class DynamoAnalyticsJobs:
    def __init__(self, table: str, client: Callable[[], Any] | None = None) -> None:
        self._table = table
        self._client = client or (lambda: aws.client("dynamodb"))

    def begin_run(
        self,
        day: date,
        queries: list[str],
        requested_by: str,
        request_id: str,
        force: bool,
        now: str,
    ) -> int:
        client = self._client()
        condition = "attribute_not_exists(pk)"
        if force:
            condition += " OR #state <> :running_state"
        try:
            answer = client.update_item(
                TableName=self._table,
                Key=_key(day),
                UpdateExpression=(
                    "SET #run = if_not_exists(#run, :zero) + :step, #state = :running_state, "
                    "requested_at = :now, requested_by = :by, request_id = :request, "
                    "queries = :queries, kind = :kind, report_date = :day "
                    "REMOVE parts, #errors, completed_at, bytes_scanned"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#run": "run", "#state": "state", "#errors": "errors"},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":step": {"N": "1"},
                    ":running_state": {"S": model.RUNNING},
                    ":now": {"S": now},
                    ":by": {"S": requested_by},
                    ":request": {"S": request_id},
                    ":queries": {"L": [{"S": q} for q in queries]},
                    ":kind": {"S": REPORT_KIND},
                    ":day": {"S": day.isoformat()},
                },
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except client.exceptions.ConditionalCheckFailedException as failed:
            existing = from_item(failed.response.get("Item", {}))
            if existing.get("request_id") == request_id and existing.get("state") == model.RUNNING:
                return int(existing["run"])  # a retry of the request that began this run
            raise RunExists(existing) from None
        return int(from_item(answer["Attributes"])["run"])

    def report(self, day: date) -> dict[str, Any] | None:
        item = self._client().get_item(TableName=self._table, Key=_key(day), ConsistentRead=True)
        return from_item(item["Item"]) if "Item" in item else None

    def jobs(self, day: date, run: int) -> list[dict[str, Any]]:
        answer = self._client().query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :run)",
            ExpressionAttributeValues={
                ":pk": {"S": f"REPORT#{day.isoformat()}"},
                ":run": {"S": f"RUN#{run:04d}#"},
            },
            ConsistentRead=True,
        )
        return [from_item(item) for item in answer.get("Items", [])]

    def add_job(self, day: date, run: int, query: str, now: str) -> None:
        client = self._client()
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            # (a retried start: the job is there)
            client.put_item(
                TableName=self._table,
                Item={
                    **_key(day, _job_sk(run, query)),
                    **to_item(
                        {
                            "report_date": day.isoformat(),
                            "run": run,
                            "query": query,
                            "state": model.STARTING,
                            "created_at": now,
                        }
                    ),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )

    def set_execution(self, day: date, run: int, query: str, execution_id: str) -> None:
        """The execution id; the state becomes QUEUED unless the end is already recorded."""
        client = self._client()
        key = _key(day, _job_sk(run, query))
        try:
            client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET query_execution_id = :id, #state = :queued",
                ConditionExpression="#state = :starting",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":id": {"S": execution_id},
                    ":queued": {"S": model.QUEUED},
                    ":starting": {"S": model.STARTING},
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET query_execution_id = :id",
                ExpressionAttributeValues={":id": {"S": execution_id}},
            )

    def finish_job(self, day: date, run: int, query: str, outcome: dict[str, Any]) -> bool:
        return self._set_if(
            _key(day, _job_sk(run, query)),
            outcome,
            "attribute_exists(pk) AND NOT #state IN (:s, :f, :c)",
            {"#state": "state"},
            {":s": {"S": model.SUCCEEDED}, ":f": {"S": model.FAILED},
             ":c": {"S": model.CANCELLED}},
        )  # fmt: skip

    def finish_run(self, day: date, run: int, outcome: dict[str, Any]) -> bool:
        return self._set_if(
            _key(day),
            outcome,
            "#run = :run AND #state = :running",
            {"#run": "run", "#state": "state"},
            {":run": {"N": str(run)}, ":running": {"S": model.RUNNING}},
        )

    def _set_if(
        self, key: dict[str, Any], fields: dict[str, Any], condition: str,
        condition_names: dict[str, str], condition_values: dict[str, Any],
    ) -> bool:  # fmt: skip
        """SET every field of `fields` on the item if `condition` holds; False if not."""
        client = self._client()
        values = to_item(fields)
        names = {f"#f{i}": name for i, name in enumerate(values)}
        try:
            client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(values))),
                ConditionExpression=condition,
                ExpressionAttributeNames={**names, **condition_names},
                ExpressionAttributeValues={
                    **{f":v{i}": value for i, value in enumerate(values.values())},
                    **condition_values,
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def recent(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """From the `recent` index (a report's summary attributes): pages of `limit`, each
        continuing before the last day of the previous one."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": RECENT_INDEX,
            "KeyConditionExpression": "kind = :kind"
            + (" AND report_date < :before" if before else ""),
            "ExpressionAttributeValues": {":kind": {"S": REPORT_KIND}}
            | ({":before": {"S": before}} if before else {}),
            "ScanIndexForward": False,
        }
        items, last = query_page(self._client(), request, limit, "report_date")
        return [from_item(item) for item in items], last
