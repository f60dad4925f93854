"""Athena in the emulator, for real: moto's Athena API with its query calls answered by a
local engine (engine.py) that runs each query on DuckDB over the emulator's S3 objects.

moto keeps what it does well (workgroups, named queries, data catalogs); StartQueryExecution,
GetQueryExecution, BatchGetQueryExecution, GetQueryResults, StopQueryExecution and
ListQueryExecutions come here. `install()` is called once by the emulator process.
"""

from __future__ import annotations

import json
import threading
from typing import Any

_lock = threading.Lock()


class MotoBackends:
    """moto's stores for one account and region, looked up on every use: each moto session
    (every test's `mock_aws`) makes new ones."""

    def __init__(self, account: str, region: str) -> None:
        self.account, self.region = account, region

    @property
    def s3(self) -> Any:
        from moto.s3.models import s3_backends

        return s3_backends[self.account]["aws"]

    @property
    def glue(self) -> Any:
        from moto.glue.models import glue_backends

        return glue_backends[self.account][self.region]

    def send_event(self, event: dict[str, Any]) -> None:
        from moto.events.models import events_backends

        events_backends[self.account][self.region].put_events([event])


def engine_for(account: str, region: str) -> Any:
    """The local Athena of one account and region, kept on moto's Athena backend: a new moto
    session (each test's `mock_aws`) is a new AWS, with its own executions and tokens."""
    from moto.athena.models import athena_backends

    from local.athena.engine import LocalAthena

    backend = athena_backends[account][region]
    with _lock:
        engine = backend.__dict__.get("local_engine")
        if engine is None:
            engine = backend.__dict__["local_engine"] = LocalAthena(MotoBackends(account, region))
        return engine


def install() -> None:
    from moto.athena.responses import AthenaResponse

    from local.athena.engine import InvalidRequest

    def _engine(self: Any) -> Any:
        return engine_for(self.current_account, self.region)

    def _answer(call: Any) -> Any:
        try:
            return json.dumps(call())
        except InvalidRequest as error:
            return (
                json.dumps({"__type": "InvalidRequestException", "Message": str(error)}),
                {"status": 400},
            )

    def start_query_execution(self: Any) -> Any:
        name = self._get_param("WorkGroup") or "primary"
        workgroup = self.athena_backend.get_work_group(name)
        if workgroup is None:
            return self.error(f"WorkGroup {name} is not found.", 400)
        if workgroup["State"] != "ENABLED":
            return self.error(f"WorkGroup {name} is disabled.", 400)
        return _answer(lambda: {"QueryExecutionId": _engine(self).start(
            self._get_param("QueryString"),
            self._get_param("QueryExecutionContext"),
            self._get_param("ResultConfiguration"),
            name,
            workgroup["Configuration"],
            self._get_param("ClientRequestToken"),
        )})  # fmt: skip

    def get_query_execution(self: Any) -> Any:
        execution_id = self._get_param("QueryExecutionId")
        return _answer(lambda: {"QueryExecution": _engine(self).describe(execution_id)})

    def batch_get_query_execution(self: Any) -> Any:
        found, missing = [], []
        for execution_id in self._get_param("QueryExecutionIds") or []:
            try:
                found.append(_engine(self).describe(execution_id))
            except InvalidRequest as error:
                missing.append({"QueryExecutionId": execution_id, "ErrorMessage": str(error)})
        return json.dumps({"QueryExecutions": found, "UnprocessedQueryExecutionIds": missing})

    def get_query_results(self: Any) -> Any:
        return _answer(lambda: _engine(self).results(
            self._get_param("QueryExecutionId"), self._get_param("NextToken"),
            self._get_param("MaxResults")))  # fmt: skip

    def stop_query_execution(self: Any) -> Any:
        return _answer(lambda: _engine(self).stop(self._get_param("QueryExecutionId")) or {})

    def list_query_executions(self: Any) -> Any:
        return json.dumps({"QueryExecutionIds": _engine(self).list(self._get_param("WorkGroup"))})

    AthenaResponse.start_query_execution = start_query_execution
    AthenaResponse.get_query_execution = get_query_execution
    AthenaResponse.batch_get_query_execution = batch_get_query_execution
    AthenaResponse.get_query_results = get_query_results
    AthenaResponse.stop_query_execution = stop_query_execution
    AthenaResponse.list_query_executions = list_query_executions
