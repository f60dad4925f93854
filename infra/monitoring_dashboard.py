"""The stage's CloudWatch dashboard (see infra/monitoring.py): alarm states; every function's
errors, throttles and p99 duration; the API's 4xx, 5xx and p99 latency; the work queues'
oldest message and every failure queue's depth; the streams' iterator age; the state
machines' failed and timed-out executions; the app's EMF metrics.

The body is one JSON document per widget, each an `Fn::Sub` (`${Stage}`, `${AWS::Region}`,
the stage's metrics namespace and service name), joined: one line per widget in the file."""

from __future__ import annotations

import json
from typing import Any

from infra.monitoring import APP, BUSINESS_METRICS, Inventory, MetricGroup, setting

WIDTH, HEIGHT = 12, 6
PERIOD = 300
SUBSTITUTIONS = {
    "Namespace": setting("PowertoolsMetricsNamespace"),
    "Service": setting("PowertoolsServiceName"),
}


def _graph(title: str, metrics: list[list[Any]], stat: str = "Sum") -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {
            "title": title,
            "view": "timeSeries",
            "region": "${AWS::Region}",
            "stat": stat,
            "period": PERIOD,
            "metrics": metrics,
        },
    }


def _per_function(found: Inventory, metric: str, stat: str, only_readers: bool = False) -> list:
    return [
        ["AWS/Lambda", metric, "FunctionName", f.deployed,
         {"label": f.deployed.removeprefix(f"{APP}-${{Stage}}").lstrip("-") or "api"}]
        for f in found.functions
        if f.reads_stream or not only_readers
    ]  # fmt: skip


def _business(group: MetricGroup) -> dict[str, Any]:
    if group.value is None:  # one line per value of the dimension (the API's routes)
        metrics: list[list[Any]] = [
            [{"id": f"m{n}", "label": "",
              "expression": f"SEARCH('{{${{Namespace}},{group.dimension},service}} "
                            f"service=\"${{Service}}\" MetricName=\"{name}\"', "
                            f"'{group.stat}', {PERIOD})"}]
            for n, name in enumerate(group.names)
        ]  # fmt: skip
    else:
        metrics = [
            ["${Namespace}", name, group.dimension, group.value, "service", "${Service}"]
            for name in group.names
        ]
    return _graph(f"{group.title} [{group.dimension}]", metrics, group.stat)


def widgets(found: Inventory, alarm_names: list[str]) -> list[dict[str, Any]]:
    api = ["ApiName", found.api_name, "Stage", found.api_stage]
    alarm_arns = [
        f"arn:${{AWS::Partition}}:cloudwatch:${{AWS::Region}}:${{AWS::AccountId}}:alarm:{name}"
        for name in alarm_names
    ]
    found_widgets = [
        {"type": "alarm", "width": 24, "properties": {
            "title": "Alarms (each notifies the operations topic)", "alarms": alarm_arns,
            "sortBy": "stateUpdatedTimestamp", "states": ["ALARM", "INSUFFICIENT_DATA", "OK"]}},
        _graph("Lambda errors", _per_function(found, "Errors", "Sum")),
        _graph("Lambda throttles", _per_function(found, "Throttles", "Sum")),
        _graph("Lambda duration p99 (ms)", _per_function(found, "Duration", "p99"), "p99"),
        _graph("Lambda invocations", _per_function(found, "Invocations", "Sum")),
        _graph("API requests, 4xx, 5xx", [
            ["AWS/ApiGateway", "Count", *api], ["AWS/ApiGateway", "4XXError", *api],
            ["AWS/ApiGateway", "5XXError", *api]]),
        _graph("API latency p99 (ms)", [
            ["AWS/ApiGateway", "Latency", *api],
            ["AWS/ApiGateway", "IntegrationLatency", *api]], "p99"),
        _graph("SQS age of oldest message (s)", [
            ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q.name]
            for q in found.work_queues], "Maximum"),
        _graph("Dead-letter and failure queues: messages", [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q.name]
            for q in found.failure_queues], "Maximum"),
        _graph("Kinesis iterator age (ms)", [
            ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", name]
            for _, name in found.streams], "Maximum"),
        _graph("Stream consumers' iterator age (ms)",
               _per_function(found, "IteratorAge", "Maximum", only_readers=True), "Maximum"),
        _graph("Step Functions executions failed, timed out", [
            ["AWS/States", metric, "StateMachineArn",
             f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:"
             f"stateMachine:{name}"]
            for _, name in found.state_machines
            for metric in ("ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted")]),
    ]  # fmt: skip
    found_widgets.extend(_business(group) for group in BUSINESS_METRICS)
    x = y = 0
    for widget in found_widgets:  # left to right, then down
        width = widget.setdefault("width", WIDTH)
        if x + width > 24:
            x, y = 0, y + HEIGHT
        widget |= {"height": HEIGHT, "x": x, "y": y}
        x += width
    return found_widgets


def dashboard(found: Inventory, alarms: dict[str, Any]) -> dict[str, Any]:
    names = [alarm["Properties"]["AlarmName"]["Fn::Sub"] for alarm in alarms.values()]
    parts: list[Any] = []
    for n, widget in enumerate(widgets(found, sorted(names))):
        if n:
            parts.append(",")
        text = json.dumps(widget, separators=(",", ":"))
        used = {k: v for k, v in SUBSTITUTIONS.items() if "${" + k + "}" in text}
        parts.append({"Fn::Sub": [text, used] if used else text})
    body = {"Fn::Join": ["", ['{"start":"-PT6H","widgets":[', *parts, "]}"]]}
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": {"Fn::Sub": f"{APP}-${{Stage}}"},
            "DashboardBody": body,
        },
    }
