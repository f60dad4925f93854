"""The order workflow's executions in Step Functions: started, stopped and looked at by order.

An order's execution is named after the order. Starting it again with the same input is
harmless (Step Functions answers with the running execution, or ExecutionAlreadyExists once it
has ended), so a retried request can simply start it again. The ARNs are built from the state
machine's name (configuration holds names, never account ids).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.core import aws
from chalicelib.core.aws import error_code

#: DescribeExecution's answer for an execution that was never started.
NOT_STARTED = None


class StepFunctionsWorkflow:
    def __init__(self, state_machine_name: str, client: Callable[[], Any] | None = None) -> None:
        self._name = state_machine_name
        self._client = client or (lambda: aws.client("stepfunctions"))

    def _arn(self, kind: str, *parts: str) -> str:
        meta = self._client().meta
        prefix = f"arn:{meta.partition}:states:{meta.region_name}:{aws.account_id()}"
        return ":".join([prefix, kind, self._name, *parts])

    def state_machine_arn(self) -> str:
        return self._arn("stateMachine")

    def execution_arn(self, order_id: str) -> str:
        return self._arn("execution", order_id)

    def start(self, order_id: str, execution_input: Mapping[str, Any]) -> None:
        client = self._client()
        # Started before, by this order's first request: nothing to do.
        with contextlib.suppress(client.exceptions.ExecutionAlreadyExists):
            client.start_execution(
                stateMachineArn=self.state_machine_arn(),
                name=order_id,
                input=json.dumps(dict(execution_input), sort_keys=True),
            )

    def stop(self, order_id: str, cause: str) -> None:
        """Stop the order's execution if it runs; one that never started or has ended is
        left alone."""
        from botocore.exceptions import ClientError

        try:
            self._client().stop_execution(
                executionArn=self.execution_arn(order_id), error="OrderCancelled", cause=cause
            )
        except ClientError as exc:
            if error_code(exc) not in ("ExecutionDoesNotExist", "ValidationException"):
                raise

    def status(self, order_id: str) -> str | None:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None if it was never started."""
        from botocore.exceptions import ClientError

        try:
            answer = self._client().describe_execution(executionArn=self.execution_arn(order_id))
        except ClientError as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return NOT_STARTED
            raise
        return str(answer["status"])
