"""`POST /events`: 1 to 500 events checked one by one, the valid ones put on the stream.

The answer (202) says, per event, whether it was accepted (and its `event_id`, the client's
or a new one) or why not. When no event is accepted the request fails in the app's error
shape, each event's reason in `details`: 400 `validation_failed` if every event was refused,
503 `service_unavailable` if valid events could not be put on the stream (retry). A body that
is not `{"events": [1..500 items]}` is a 400 too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from chalicelib.core import clock
from chalicelib.core.errors import BadRequest, ServiceUnavailable, ValidationFailed
from chalicelib.telemetry import STREAM_UNAVAILABLE
from chalicelib.telemetry.model import MAX_EVENTS, Invalid, partition_key, validate_event


class RecordSink(Protocol):
    def put(self, records: Sequence[tuple[bytes, str]]) -> list[int]: ...


class TelemetryIngest:
    def __init__(
        self,
        stream: RecordSink,
        clock: Callable[[], datetime] = clock.now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._new_id = new_id

    def ingest(self, body: Any) -> dict[str, Any]:
        events = _events(body)
        now = self._clock()
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        for index, raw in enumerate(events):
            try:
                event = validate_event(raw, now, self._new_id)
            except Invalid as problem:
                result: dict[str, Any] = {"index": index, "accepted": False, "reason": str(problem)}
                client_id = raw.get("event_id") if isinstance(raw, dict) else None
                result["event_id"] = client_id if isinstance(client_id, str) else None
                results.append(result)
                continue
            valid.append((index, event))
            results.append({"index": index, "accepted": True, "event_id": event["event_id"]})
        if valid:
            records = [
                (json.dumps(event, separators=(",", ":")).encode(), partition_key(event))
                for _, event in valid
            ]
            for position in self._stream.put(records):
                index = valid[position][0]
                results[index]["accepted"] = False
                results[index]["reason"] = STREAM_UNAVAILABLE
        accepted = sum(1 for r in results if r["accepted"])
        if not accepted:
            details = [{"field": f"events[{r['index']}]", "issue": r["reason"]} for r in results]
            if any(r["reason"] == STREAM_UNAVAILABLE for r in results):
                raise ServiceUnavailable("The stream took none of the events; retry.", details)
            raise ValidationFailed("No event is valid.", details)
        return {"accepted": accepted, "rejected": len(results) - accepted, "results": results}


def _events(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise BadRequest('The body must be a JSON object: {"events": [...]}.')
    events = body.get("events")
    unknown = sorted(str(k) for k in body if k != "events")
    problems = [{"field": name, "issue": "is not allowed"} for name in unknown]
    if not isinstance(events, list):
        problems.append({"field": "events", "issue": "is required and must be a list"})
    elif not 1 <= len(events) <= MAX_EVENTS:
        problems.append({"field": "events", "issue": f"must hold 1 to {MAX_EVENTS} events"})
    if problems:
        raise ValidationFailed("The body is not valid.", problems)
    return events  # type: ignore[return-value]
