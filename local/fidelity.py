"""What the emulator does the way AWS does it where stock moto (5.2.5) does not. Applied by
`local.emulator` in the emulator's process, before it serves anything.

- **Atomic DynamoDB writes.** moto checks a condition and then applies the write as two
  steps, with no lock, on the server's threads: two concurrent conditional updates of one
  item can both pass their check (two orders for the last unit would both get it), and a
  transaction that fails restores whole deep-copied tables, erasing what other threads wrote
  meanwhile. Here every write (PutItem, UpdateItem, DeleteItem, BatchWriteItem's items,
  TransactWriteItems) holds one lock, from reading the item it returns values of to the
  write, and a transaction checks all its conditions before it applies anything, so a
  cancelled one changes nothing and a failing one undoes only its own items, leaving no
  record on the table's stream (which is read under the same lock).
  `tests/unit/test_fidelity_dynamodb.py` races them. TransactWriteItems honours its
  ClientRequestToken as DynamoDB does for 10 minutes (moto ignored it): botocore sends one
  token per call, the same on its retries, so a retry after an answer lost to a timeout
  finds its transaction done instead of failing on its own writes' conditions
  (`tests/unit/test_fidelity_tokens.py`).
- **S3 object writes one at a time.** moto's PutObject stores the new object, then reads it
  back for its ETag (the bucket's event notification); a DeleteObject on another server thread
  in between closes the object's buffer, and the PUT fails with a 500 ("I/O operation on
  closed file"). An upload link posted again while the pipeline removes the previous post
  does exactly that. Here PutObject, DeleteObject and DeleteObjects hold one lock
  (`tests/unit/test_fidelity_s3.py` races them).
- **Lambda runs the app's own handlers.** moto runs a function's code in Docker, which this
  machine has not. Every invocation moto makes (the Invoke API, so `aws lambda invoke`, and
  Step Functions' Lambda tasks) goes to the local runtime's invoke endpoint
  (`local/events/invoke.py`, in the stack's process) in Lambda's wire format; the handler's
  result, or its error (`errorType`, which Step Functions' Retry and Catch match), comes back
  as Lambda answers it (`Unhandled`, where moto says `Handled`).
- **State machines execute.** moto's executing Step Functions backend (an ASL interpreter)
  is switched on before anything is created: the two backends keep separate state. A stopped
  execution stays ABORTED: moto let a task that failed after the stop (its Retry and Catch
  no longer run) turn the execution FAILED. A stop that comes before the execution's thread
  has begun waits for it (moto failed with a 500). Its tasks share one AWS client per service
  (moto made one per task, most of the emulator's CPU for an order).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

#: Held by every DynamoDB write in the emulator.
DYNAMODB_WRITE_LOCK = threading.RLock()
#: Held by every S3 object write and delete in the emulator.
S3_WRITE_LOCK = threading.RLock()
#: How long DynamoDB answers a TransactWriteItems' ClientRequestToken again.
TRANSACTION_TOKEN_SECONDS = 600
#: Added to a function's own timeout for the HTTP call to the local runtime, which enforces
#: the function's timeout itself.
INVOKE_MARGIN_SECONDS = 30


def apply(lambda_endpoint: str | None) -> None:
    """Everything above; without `lambda_endpoint` Lambda invocations are left to moto."""
    from local import athena, rekognition

    atomic_dynamodb_writes()
    serial_s3_object_writes()
    execute_state_machines()
    athena.install()  # queries run for real, on DuckDB (local/athena/)
    rekognition.install()  # DetectLabels looks at the picture (local/vision.py)
    dump_without_docker()
    if lambda_endpoint:
        run_lambdas_in_local_runtime(lambda_endpoint)


def execute_state_machines() -> None:
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramRunning

    default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = True
    stop_waits_for_start()
    if getattr(Environment, "_ends_once", False):
        return

    def only_while_running(method: Any) -> Any:
        def end(self: Any, *args: Any, **kwargs: Any) -> None:
            with self._state_mutex:  # an RLock in moto
                if isinstance(self._program_state, ProgramRunning):
                    method(self, *args, **kwargs)

        return end

    # As set_stop and set_ended already do: an execution ends once, as whatever ended it first.
    Environment.set_error = only_while_running(Environment.set_error)  # type: ignore[method-assign]
    Environment.set_timed_out = only_while_running(Environment.set_timed_out)  # type: ignore[method-assign]
    Environment._ends_once = True  # type: ignore[attr-defined]
    _one_client_per_service()


def stop_waits_for_start() -> None:
    """A StopExecution right after StartExecution could come before the execution's thread
    had made its environment: moto failed with a 500 (AttributeError on None). AWS stops such
    an execution; here the stop waits for the environment (milliseconds), then stops it."""
    import time

    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    if getattr(ExecutionWorker, "_stop_waits", False):
        return
    original = ExecutionWorker.stop

    def stop(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
        deadline = time.monotonic() + 10
        while self.env is None and time.monotonic() < deadline:
            time.sleep(0.002)
        original(self, stop_date=stop_date, error=error, cause=cause)

    ExecutionWorker.stop = stop  # type: ignore[method-assign]
    ExecutionWorker._stop_waits = True  # type: ignore[attr-defined]


def _one_client_per_service() -> None:
    """moto's interpreter makes a new boto3 client for every task it runs (tens of ms of CPU
    each: most of the emulator's work for an order); they are all alike, so keep one per
    region and service."""
    import sys

    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for
    clients: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        with lock:
            if (region, service) not in clients:
                clients[(region, service)] = original(region, service, state_credentials)
            return clients[(region, service)]

    boto_client.boto_client_for = boto_client_for
    for module in list(sys.modules.values()):  # those that imported it by name already
        if getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for


# --- DynamoDB -----------------------------------------------------------------------------


def atomic_dynamodb_writes() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoDBBackend, "_writes_are_atomic", False):
        return
    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoDBBackend, name, _locked(getattr(DynamoDBBackend, name)))
        # The handler reads the item it returns old values of before it calls the backend.
        setattr(DynamoHandler, name, _locked(getattr(DynamoHandler, name)))
    StreamShard.get = _locked(StreamShard.get)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    DynamoHandler.transact_write_items = _idempotent(DynamoHandler.transact_write_items)  # type: ignore[method-assign]
    DynamoDBBackend._writes_are_atomic = True  # type: ignore[attr-defined]


def _idempotent(handle: Any) -> Any:
    """TransactWriteItems with a ClientRequestToken that succeeded within the last
    TRANSACTION_TOKEN_SECONDS: that answer again, nothing applied; the same token with
    other items: IdempotentParameterMismatchException. A cancelled or failed one is not
    remembered (its retry runs)."""
    import time

    from moto.dynamodb.exceptions import DynamodbException

    done: dict[str, tuple[float, str, Any]] = {}  # token -> (when, request, answer)

    def transact_write_items(self: Any) -> Any:
        token = self.body.get("ClientRequestToken")
        if not token:
            return handle(self)
        request = json.dumps(self.body.get("TransactItems"), sort_keys=True)
        with DYNAMODB_WRITE_LOCK:
            now = time.monotonic()
            expired = now - TRANSACTION_TOKEN_SECONDS
            for old in [t for t, (when, _, _) in done.items() if when < expired]:
                del done[old]
            if token in done:
                if done[token][1] != request:
                    raise DynamodbException(
                        "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                        "The request uses the same client token as a previous, but not "
                        "identical request.",
                    )
                return done[token][2]
            answer = handle(self)
            done[token] = (now, request, answer)
            return answer

    return transact_write_items


def _locked(method: Any, lock: Any = DYNAMODB_WRITE_LOCK) -> Any:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    locked.__wrapped__ = method  # type: ignore[attr-defined]
    return locked


# --- S3 -----------------------------------------------------------------------------------


def serial_s3_object_writes() -> None:
    from moto.s3.models import S3Backend

    if getattr(S3Backend, "_object_writes_are_serial", False):
        return
    for name in ("put_object", "delete_object", "delete_objects"):
        setattr(S3Backend, name, _locked(getattr(S3Backend, name), S3_WRITE_LOCK))
    S3Backend._object_writes_are_serial = True  # type: ignore[attr-defined]


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """TransactWriteItems as DynamoDB does it: all or nothing, isolated from other writes,
    with moto's own errors (CancellationReasons in request order)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with DYNAMODB_WRITE_LOCK:
        planned: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        reasons: list[tuple[Any, Any, Any]] = []
        seen: set[tuple[str, str]] = set()
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise MockValidationException("Unsupported transaction operation")
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            marker = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            passed = condition is None or get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current)
            if passed:
                reasons.append((None, None, None))
            else:
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                reasons.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, old))
            planned.append((op_type, op, key))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)

        undo: list[tuple[str, dict[str, Any], Any]] = []
        streams = {
            name: (table.stream_shard, len(table.stream_shard.items))
            for name in {op["TableName"] for _, op, _ in planned}
            if (table := self.get_table(name)).stream_shard is not None
        }
        try:
            for op_type, op, key in planned:
                if op_type == "ConditionCheck":
                    continue
                undo.append(
                    (op["TableName"], key, copy.deepcopy(self.get_item(op["TableName"], key)))
                )
                names, values = (
                    op.get("ExpressionAttributeNames"),
                    op.get("ExpressionAttributeValues"),
                )
                if op_type == "Put":
                    self.put_item(op["TableName"], op["Item"])
                elif op_type == "Delete":
                    self.delete_item(op["TableName"], key)
                else:
                    self.update_item(op["TableName"], key, op["UpdateExpression"], names, values)
        except Exception:
            for table_name, key, before in reversed(undo):
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before.to_json()["Attributes"])
            for shard, mark in streams.values():  # DynamoDB streams nothing it undid
                del shard.items[mark:]
            raise


# --- Lambda -------------------------------------------------------------------------------


def run_lambdas_in_local_runtime(endpoint: str) -> None:
    """Send every Lambda invocation moto makes to the local runtime's invoke endpoint."""
    from moto.awslambda.models import LambdaFunction

    def invoke_in_local_runtime(self: Any, event: Any = None) -> tuple[str, bool, str]:
        return invoke_endpoint(
            endpoint, self.function_name, event, float(self.timeout) + INVOKE_MARGIN_SECONDS
        )

    original_invoke = LambdaFunction.invoke

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> Any:
        answer = original_invoke(self, body, request_headers, response_headers)
        if "x-amz-function-error" in response_headers:  # an exception the handler let out
            response_headers["x-amz-function-error"] = "Unhandled"
        return answer

    LambdaFunction._invoke_lambda = invoke_in_local_runtime  # type: ignore[method-assign]
    LambdaFunction.invoke = invoke  # type: ignore[method-assign]


def dump_without_docker() -> None:
    """moto's state dump (`/moto-api/data.json`) reads every attribute of every object, and a
    function's `docker_client` connects to Docker, failing the whole dump once a function
    exists; the dump skips attributes that raise AttributeError."""
    from moto.awslambda.models import LambdaFunction

    def no_docker(self: Any) -> Any:
        raise AttributeError("functions run in the local runtime, not in Docker")

    LambdaFunction.docker_client = property(no_docker)  # type: ignore[assignment,method-assign]
    dump_reads_each_attribute_once()


def dump_reads_each_attribute_once() -> None:
    """moto's dump checked that each attribute serializes with one read and serialized it with
    another: a table's first item written in between (a dict keyed by DynamoType) failed the
    whole dump with a 500, and with it `make token`. Each attribute is now read once, copied
    as JSON then; one that changes while being read is left out, like one that does not
    serialize."""
    from moto.core import model_instances
    from moto.moto_api._internal.responses import MotoAPIResponse

    def snapshot(instance: Any) -> dict[str, Any]:
        fields = {}
        for name in dir(instance):
            if not name.startswith("_"):
                with contextlib.suppress(TypeError, AttributeError, ValueError, RuntimeError):
                    fields[name] = json.loads(json.dumps(getattr(instance, name)))
        return fields

    def model_data(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        results = {
            service: {
                name: [snapshot(i) for i in list(model.instances_tracked)]
                for name, model in sorted(models.items())
            }
            for service, models in sorted(model_instances.model_data.items())
        }
        return 200, {"Content-Type": "application/javascript"}, json.dumps(results)

    MotoAPIResponse.model_data = model_data  # type: ignore[method-assign]


def invoke_endpoint(
    endpoint: str, function_name: str, event: Any, timeout: float
) -> tuple[str, bool, str]:
    """(payload, errored, logs) of one invocation at the local runtime, as moto's
    `_invoke_lambda` returns them. An unreachable runtime is an error of Lambda's service,
    which Step Functions retries like AWS's own (`Lambda.ServiceException`)."""
    name = urllib.parse.quote(function_name, safe="")
    request = urllib.request.Request(
        f"{endpoint}/2015-03-31/functions/{name}/invocations",
        data=json.dumps({} if event is None else event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read().decode()
            return payload, bool(response.headers.get("X-Amz-Function-Error")), ""
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace")[:500]
    except OSError as error:
        message = f"the local Lambda runtime at {endpoint} did not answer: {error}"
    failure = {"errorType": "Lambda.ServiceException", "errorMessage": message}
    return json.dumps(failure), True, ""
