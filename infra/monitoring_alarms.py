"""The alarms of infra/monitoring.json (see infra/monitoring.py): every one notifies the
stage's operations topic when it fires and when it clears; thresholds are the stage's
`StageSettings`. Rates are metric math (errors / invocations), so a quiet hour with one
failure and a busy hour with a thousand are judged alike."""

from __future__ import annotations

from typing import Any

from infra.monitoring import (
    API_ALARM,
    API_HANDLER_LOGICAL_ID,
    APP,
    DASHBOARD,
    OPERATIONS_TOPIC,
    AppFunction,
    Inventory,
    setting,
)

RATE_PERIOD = 300


def _metric(
    metric_id: str, namespace: str, name: str, dimensions: dict[str, Any], stat: str, period: int
) -> dict[str, Any]:
    return {
        "Id": metric_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": False,
    }


def _alarm(
    name: str,
    description: str,
    threshold: Any,
    metrics: list[dict[str, Any]],
    expression: str,
    label: str,
    periods: tuple[int, int],
) -> dict[str, Any]:
    evaluation, to_alarm = periods
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": {"Fn::Sub": f"{APP}-${{Stage}}-{name}"},
            "AlarmDescription": {"Fn::Sub": [description, {"Threshold": threshold}]}
            if "${Threshold}" in description
            else {"Fn::Sub": description},
            "Metrics": [
                *metrics,
                {"Id": "value", "Expression": expression, "Label": label, "ReturnData": True},
            ],
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": evaluation,
            "DatapointsToAlarm": to_alarm,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": OPERATIONS_TOPIC}],
            "OKActions": [{"Ref": OPERATIONS_TOPIC}],
        },
    }


def _dashboard_hint() -> str:
    return f" Dashboard: {APP}-${{Stage}}."


def function_alarms(function: AppFunction) -> dict[str, Any]:
    """Error rate and throttles of one function; its iterator age if it reads a stream."""
    lid, deployed = function.logical_id, function.deployed
    name = {"FunctionName": {"Fn::Sub": deployed}}
    short = deployed.removeprefix(f"{APP}-${{Stage}}").lstrip("-") or "api"
    logs = f" Logs: /aws/lambda/{deployed} (each error line has the request or event id)."
    if lid == API_HANDLER_LOGICAL_ID:
        # Chalice answers an exception raised by a view with a 500: the invocation succeeds.
        failed = (
            "Lambda invocations failed in 2 of the last 3 5-minute periods: timeouts, crashes "
            "or init failures only (Chalice turns a view's exception into a 500 answer, which "
            f"Lambda counts as a success: {APP}-${{Stage}}-api-5xx-rate covers those); callers "
            "got 502/504."
        )
    else:
        failed = (
            "invocations failed in 2 of the last 3 5-minute periods. Events are retried, then "
            "dead-lettered (their queue's alarm follows)."
        )
    found = {
        f"{lid}ErrorRateAlarm": _alarm(
            f"{short}-error-rate",
            f"Over ${{Threshold}} % of {deployed}'s {failed}" + logs + _dashboard_hint(),
            setting("FunctionErrorRateAlarmPercent"),
            [
                _metric("errors", "AWS/Lambda", "Errors", name, "Sum", RATE_PERIOD),
                _metric("invocations", "AWS/Lambda", "Invocations", name, "Sum", RATE_PERIOD),
            ],
            "IF(invocations > 0, 100 * FILL(errors, 0) / invocations, 0)",
            "Error rate (%)",
            (3, 2),
        ),
        f"{lid}ThrottlesAlarm": _alarm(
            f"{short}-throttles",
            f"{deployed} was throttled over ${{Threshold}} times in 5 minutes: its reserved "
            "concurrency or the account's is used up. API callers got 429/5xx, event sources "
            "retry. Raise the function's reserved_concurrency (.chalice/config.json) or the "
            "account's limit, or find what floods it." + _dashboard_hint(),
            setting("ThrottlesAlarmCount"),
            [_metric("throttles", "AWS/Lambda", "Throttles", name, "Sum", RATE_PERIOD)],
            "FILL(throttles, 0)",
            "Throttles",
            (1, 1),
        ),
    }
    if function.reads_stream:
        found[f"{lid}IteratorAgeAlarm"] = _alarm(
            f"{short}-iterator-age",
            f"{deployed} is over ${{Threshold}} s behind its stream (iterator age, 2 minutes "
            "running): a batch keeps failing or the function is too slow or throttled. Records "
            "older than the stream's retention (24 h) are lost: look at its errors and "
            "duration now." + logs + _dashboard_hint(),
            setting("IteratorAgeAlarmSeconds"),
            [_metric("age", "AWS/Lambda", "IteratorAge", name, "Maximum", 60)],
            "age / 1000",
            "Iterator age (s)",
            (2, 2),
        )
    return found


def queue_alarm(queue_name: str, description: str, keeps_messages: bool = False) -> dict[str, Any]:
    """A dead-letter queue's alarm: not empty (it stays on until the messages are redriven).
    A queue that keeps its messages on purpose: new messages in 5 minutes, or its alarm would
    stay on until someone purged it and say nothing of the next arrival."""
    short = queue_name.removeprefix(f"{APP}-${{Stage}}-")
    queue = {"QueueName": {"Fn::Sub": queue_name}}
    if keeps_messages:
        return _alarm(
            f"{short}-new-messages",
            f"{description} New messages arrived in the last 5 minutes (they are kept: the "
            f"queue's depth is the backlog, not the news). Queue: {queue_name}."
            + _dashboard_hint(),
            0,
            [_metric("sent", "AWS/SQS", "NumberOfMessagesSent", queue, "Sum", RATE_PERIOD)],
            "FILL(sent, 0)",
            "New messages",
            (1, 1),
        )
    return _alarm(
        f"{short}-not-empty",
        description + " Queue: " + queue_name + "." + _dashboard_hint(),
        0,
        [_metric("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", queue, "Maximum", 60)],
        "FILL(visible, 0)",
        "Messages",
        (1, 1),
    )


def api_alarm(found: Inventory) -> dict[str, Any]:
    api = {"ApiName": {"Fn::Sub": found.api_name}, "Stage": found.api_stage}
    return _alarm(
        "api-5xx-rate",
        "Over ${Threshold} % of the API's requests answered 5xx in 2 of the last 3 5-minute "
        f"periods. The access log (/aws/apigateway/{APP}-${{Stage}}/access) has each request's "
        f"requestId; the handler's log (/aws/lambda/{APP}-${{Stage}}) the same id with the "
        "error. A 502/504 without a handler error is a timeout or a crash." + _dashboard_hint(),
        setting("Api5xxRateAlarmPercent"),
        [_metric("errors", "AWS/ApiGateway", "5XXError", api, "Sum", RATE_PERIOD),
         _metric("requests", "AWS/ApiGateway", "Count", api, "Sum", RATE_PERIOD)],
        "IF(requests > 0, 100 * FILL(errors, 0) / requests, 0)",
        "5xx rate (%)",
        (3, 2),
    )  # fmt: skip


def state_machine_alarm(name: str) -> dict[str, Any]:
    arn = {"StateMachineArn": {"Fn::Sub": f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:"
                                          f"${{AWS::AccountId}}:stateMachine:{name}"}}  # fmt: skip
    return _alarm(
        f"{name.removeprefix(f'{APP}-${{Stage}}-')}-failed-executions",
        f"Over ${{Threshold}} executions of {name} failed or timed out in 5 minutes. A "
        "refused order (invalid, out of stock, declined, undeliverable) ends its execution in "
        "success: FAILED means an unexpected error, a compensation that failed or a timeout, "
        "for a person to look at (the workflow or the nightly stuck-order sweep fails and "
        "compensates the order). Open a failed execution in the Step Functions console: its "
        "failing step and error are in the history." + _dashboard_hint(),
        setting("FailedExecutionsAlarmCount"),
        [_metric("failed", "AWS/States", "ExecutionsFailed", arn, "Sum", RATE_PERIOD),
         _metric("timedout", "AWS/States", "ExecutionsTimedOut", arn, "Sum", RATE_PERIOD)],
        "FILL(failed, 0) + FILL(timedout, 0)",
        "Failed or timed out",
        (1, 1),
    )  # fmt: skip


def alarms(found: Inventory) -> dict[str, Any]:
    """Every alarm of the stage, by logical id."""
    result: dict[str, Any] = {}
    for function in found.functions:
        result |= function_alarms(function)
    result[API_ALARM] = api_alarm(found)
    for queue in found.failure_queues:
        # The ids the hand-written alarms had: `OnboardingDeadLetterQueue` ->
        # `OnboardingDeadLetterAlarm` (CloudFormation updates them in place).
        result[queue.logical_id.removesuffix("Queue") + "Alarm"] = queue_alarm(
            queue.name, queue.alarm_description or "", queue.keeps_messages
        )
    for logical_id, name in found.state_machines:
        result[f"{logical_id}FailedExecutionsAlarm"] = state_machine_alarm(name)
    assert DASHBOARD not in result
    return result
