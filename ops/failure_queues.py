"""The stage's dead-letter and failure queues, read from the templates the deploy applies:

- a dead-letter queue: another queue's `RedrivePolicy.deadLetterTargetArn`
  (infra/resources.json); its messages go back to that source queue;
- an on-failure destination of asynchronous invocations (`EventInvokeConfig` in
  infra/functions.json: SNS-, EventBridge- and schedule-triggered functions): it holds
  Lambda's on-failure records, whose `requestPayload` is replayed to the function;
- an on-failure destination of stream event source mappings (`DestinationConfig` of an
  `Events.*` entry): it holds `DDBStreamBatchInfo` / `KinesisBatchInfo` records, whose
  batches are read again from the stream and replayed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.paths import PROJECT_DIR
from infra.wiring import function_name
from local.events.stream_failures import destination, substituted

RESOURCES_TEMPLATE = PROJECT_DIR / "infra" / "resources.json"
FUNCTION_SETTINGS = PROJECT_DIR / "infra" / "functions.json"

DEAD_LETTER, ASYNC_FAILURES, STREAM_FAILURES = "dead-letter", "async", "stream"
#: The stream resources a mapping of each kind reads (`chalice package` names its events
#: `<Function><Kind>EventSource`).
STREAM_TYPES = {"DynamodbEventSource": "AWS::DynamoDB::Table",
                "KinesisEventSource": "AWS::Kinesis::Stream"}  # fmt: skip


@dataclass(frozen=True)
class FailureQueue:
    logical_id: str
    name: str
    kind: str  # DEAD_LETTER, ASYNC_FAILURES or STREAM_FAILURES
    #: A dead-letter queue's source queues; the functions whose failures a destination holds.
    sources: tuple[str, ...]
    #: A stream failure queue's streams, by kind: DynamoDB tables and Kinesis streams (names
    #: in the stage). Only records of these are read: a record naming another is refused.
    tables: tuple[str, ...] = ()
    kinesis_streams: tuple[str, ...] = ()
    stage: str = ""

    def functions(self) -> frozenset[str]:
        """The deployed names of the functions whose records this queue may hold: the only
        ones a replay invokes."""
        if self.kind == DEAD_LETTER:
            return frozenset()
        return frozenset(function_name(self.stage, source) for source in self.sources)

    def action(self) -> str:
        """What redriving it does, in a few words."""
        sources = ", ".join(self.sources)
        if self.kind == DEAD_LETTER:
            return f"moves its messages back to {sources}"
        if self.kind == ASYNC_FAILURES:
            return f"replays each failed event to its function ({sources})"
        return f"reads each failed batch from the stream, replays it to {sources}"


def failure_queues(
    stage: str,
    resources_path: Path = RESOURCES_TEMPLATE,
    functions_path: Path = FUNCTION_SETTINGS,
) -> list[FailureQueue]:
    """Every dead-letter and failure queue of `stage`, in template order."""
    resources = json.loads(resources_path.read_text())["Resources"]
    functions = json.loads(functions_path.read_text()).get("Resources", {})
    sources: dict[str, list[str]] = {}  # logical id -> sources
    streams: dict[str, set[tuple[str, str]]] = {}  # logical id -> (resource type, name)
    kinds: dict[str, str] = {}
    for logical_id, resource in resources.items():
        target = (resource.get("Properties", {}).get("RedrivePolicy") or {}).get(
            "deadLetterTargetArn"
        )
        dlq = _queue(target, resources, f"{resources_path.name}: {logical_id}", stage)
        if resource.get("Type") == "AWS::SQS::Queue" and dlq:
            kinds[dlq] = DEAD_LETTER
            sources.setdefault(dlq, []).append(_name(resources, logical_id, stage))
    for function_id, function in functions.items():
        properties = function.get("Properties", {})
        declared = [(ASYNC_FAILURES, "", properties.get("EventInvokeConfig") or {})]
        declared += [
            (STREAM_FAILURES, event_id, event.get("Properties") or {})
            for event_id, event in (properties.get("Events") or {}).items()
        ]
        for kind, event_id, settings in declared:
            target = ((settings.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
                "Destination"
            )
            where = f"{functions_path.name}: {function_id}"
            queue = _queue(target, resources, where, stage)
            if queue:
                kinds[queue] = kind
                listed = sources.setdefault(queue, [])
                if _snake(function_id) not in listed:
                    listed.append(_snake(function_id))
                read = _streams(event_id, settings.get("Stream"), resources, stage)
                streams.setdefault(queue, set()).update(read)
    return [
        FailureQueue(
            logical_id,
            _name(resources, logical_id, stage),
            kind,
            tuple(sources[logical_id]),
            tuple(sorted(n for t, n in streams.get(logical_id, ()) if "DynamoDB" in t)),
            tuple(sorted(n for t, n in streams.get(logical_id, ()) if "Kinesis" in t)),
            stage,
        )
        for logical_id, kind in sorted(
            kinds.items(), key=lambda item: list(resources).index(item[0])
        )
    ]


def find(queues: list[FailureQueue], wanted: str, prefix: str) -> FailureQueue | None:
    """The queue named `wanted`: its name, its logical id, or its name without the stage's
    prefix (`welcome-dlq`)."""
    for queue in queues:
        if wanted in (queue.name, queue.logical_id, queue.name.removeprefix(prefix)):
            return queue
    return None


def _queue(target: Any, resources: dict[str, Any], where: str, stage: str) -> str | None:
    """The logical id of the resources.json queue `target` refers to, None if it refers to
    none (a topic, an ARN, nothing)."""
    if target is None:
        return None
    try:
        found = destination(target, where, stage, resources)
    except ValueError:
        return None
    return found.logical_id if found.service == "sqs" else None


def _streams(
    event_id: str, stream: Any, resources: dict[str, Any], stage: str
) -> set[tuple[str, str]]:
    """The streams (resource type, name in `stage`) an event source mapping reads: the one
    its `Stream` refers to, else (Chalice writes Kinesis mappings' ARNs itself) every
    stream of its kind the template declares."""
    kind = next((t for suffix, t in STREAM_TYPES.items() if event_id.endswith(suffix)), None)
    if kind is None:
        return set()
    named = [r for r in resources if resources[r].get("Type") == kind]
    if isinstance(stream, dict) and isinstance(stream.get("Fn::GetAtt"), list):
        named = [r for r in named if r == stream["Fn::GetAtt"][0]]
    key = "TableName" if kind == "AWS::DynamoDB::Table" else "Name"
    found = set()
    for logical_id in named:
        name = resources[logical_id].get("Properties", {}).get(key)
        if name is not None:
            found.add((kind, substituted(name, f"{logical_id}.{key}", stage)))
    return found


def _name(resources: dict[str, Any], logical_id: str, stage: str) -> str:
    name = resources[logical_id]["Properties"]["QueueName"]
    return substituted(name, f"{logical_id}.QueueName", stage)


def _snake(logical_id: str) -> str:
    """A function's Chalice name from its logical id (`WelcomeNewUser` -> welcome_new_user)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in logical_id).lstrip("_")
