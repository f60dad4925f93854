"""Stream mapping settings for the fixture app's handlers, in the files the deploy reads
(infra/functions.json and infra/resources.json), written for a test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chalice.app import DynamoDBEventConfig
from chalice.utils import to_cfn_resource_name

from local.events import stream_failures
from tests.fixtures import event_app

#: The fixture's on-failure queue, as resources.json would declare it, and its name in `dev`.
FAILURE_QUEUE_ID = "FixtureStreamFailureQueue"
FAILURE_QUEUE = "event-fixture-dev-stream-failures"
RESOURCES = {
    FAILURE_QUEUE_ID: {
        "Type": "AWS::SQS::Queue",
        "Properties": {"QueueName": {"Fn::Sub": "event-fixture-${Stage}-stream-failures"}},
    },
    "FixtureTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "fixture-failures"}},
}
#: `DestinationConfig` sending to that queue.
TO_FAILURE_QUEUE = {
    "DestinationConfig": {
        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": [FAILURE_QUEUE_ID, "Arn"]}}
    }
}


def event_source_id(handler: str) -> tuple[str, str]:
    """The logical ids `chalice package` gives a fixture handler and its stream event source."""
    logical_id = to_cfn_resource_name(handler)
    [source] = [s for s in event_app.app.event_sources if s.name == handler]
    kind = "Dynamodb" if isinstance(source, DynamoDBEventConfig) else "Kinesis"
    return logical_id, f"{logical_id}{kind}EventSource"


def use_mappings(
    monkeypatch: pytest.MonkeyPatch, directory: Path, mappings: dict[str, dict[str, Any]]
) -> None:
    """The runtime reads `mappings` (handler -> its event source's properties) as the
    fixture's infra/functions.json, next to a resources.json with its failure queue."""
    resources: dict[str, Any] = {}
    for handler, properties in mappings.items():
        logical_id, event = event_source_id(handler)
        resources[logical_id] = {"Properties": {"Events": {event: {"Properties": properties}}}}
    functions = directory / "functions.json"
    functions.write_text(json.dumps({"Resources": resources}))
    template = directory / "resources.json"
    template.write_text(json.dumps({"Resources": RESOURCES}))
    monkeypatch.setattr(stream_failures, "FUNCTION_SETTINGS", functions)
    monkeypatch.setattr(stream_failures, "RESOURCES_TEMPLATE", template)
