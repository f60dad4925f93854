"""`POST /events`: 1 to 500 events checked one by one, the valid ones put on the stream.

Who may send what (the caller is the authorizer's principal, never the body):

- `user_activity` and `transaction` belong to the caller: a missing `user_id` is the
  caller's, another user's is refused. Admins may send them for any user. A machine
  identity sends none (it is nobody's user).
- `system_metric` is taken only from a trusted producer: a machine identity (client
  credentials) with the `telemetry/metrics.write` scope, or an admin.

A request with any event its caller may not send is refused whole: 403 `forbidden`, each
offending event in `details` (`events[i].user_id`, `events[i].event_type`), nothing put on
the stream and nothing counted against the quota. Authorisation is about the request, not
the data: a client that sends someone else's events has a bug or an intent, and a partial
success would hide either.

Then the quotas (`core.quotas`): the valid events count against the caller's events per
minute and against their bytes on the stream per minute (`TelemetryEventsPerMinute` and
`TelemetryEventBytesPerMinute`, or the `TelemetryMachine...` pair for a machine identity),
both in one transaction, all or none, before they are put; over either the request is a 429
with `Retry-After`, and nothing is put. A request that holds more than a whole minute's
events or bytes could never fit: 413, nothing counted. The bytes are what Kinesis counts
against a shard's 1 MiB a second (data and partition key): all of a user's events share one
shard (the partition key is the user), so the bytes quota is what keeps one caller from
crowding out the other users of that shard. (Events the stream then refuses still count: the
count cannot wait for the stream without letting concurrent requests overshoot it.)

The answer (202) says, per event, whether it was accepted (and its `event_id`, the client's
or a new one) or why not. When no event is accepted the request fails in the app's error
shape, each event's reason in `details`: 400 `validation_failed` if every event was refused,
503 `service_unavailable` if valid events could not be put on the stream (retry). A body that
is not `{"events": [1..500 items]}` is a 400 too. Every event put on the stream carries its
sender (`model.stamp`), which the processor checks again, and the request's correlation id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.auth.tokens import Principal
from chalicelib.core import clock, correlation
from chalicelib.core.errors import BadRequest, Forbidden, ServiceUnavailable, ValidationFailed
from chalicelib.core.quotas import Quota, Quotas
from chalicelib.telemetry import STREAM_UNAVAILABLE
from chalicelib.telemetry.model import (
    AS_ADMIN,
    AS_MACHINE,
    AS_USER,
    MAX_EVENTS,
    METRICS_WRITE_SCOPE,
    SYSTEM_METRIC,
    USER_EVENTS,
    Invalid,
    partition_key,
    stamp,
    submitter_problem,
    validate_event,
)

QUOTA_WINDOW_SECONDS = 60


class RecordSink(Protocol):
    def put(self, records: Sequence[tuple[bytes, str]]) -> list[int]: ...


@dataclass(frozen=True)
class CallerQuotas:
    """What one caller may put on the stream per window: events, and their bytes."""

    events: Quota
    bytes: Quota


def record_bytes(record: tuple[bytes, str]) -> int:
    """What Kinesis counts of a record against its shard's throughput: data and key."""
    data, key = record
    return len(data) + len(key.encode())


def submitter_kind(principal: Principal) -> str:
    """How the caller acts: `machine` only with the metrics scope (a machine client without
    it may send nothing), `admin`, else `user`."""
    if principal.is_machine:
        return AS_MACHINE if METRICS_WRITE_SCOPE in principal.scopes else ""
    return AS_ADMIN if principal.is_admin else AS_USER


class TelemetryIngest:
    def __init__(
        self,
        stream: RecordSink,
        quotas: Quotas,
        user_quotas: CallerQuotas,
        machine_quotas: CallerQuotas,
        clock: Callable[[], datetime] = clock.now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._stream = stream
        self._quotas = quotas
        self._user_quotas = user_quotas
        self._machine_quotas = machine_quotas
        self._clock = clock
        self._new_id = new_id

    def ingest(self, body: Any, principal: Principal) -> dict[str, Any]:
        events = _events(body)
        now = self._clock()
        kind = submitter_kind(principal)
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        forbidden: list[dict[str, str]] = []
        for index, raw in enumerate(events):
            try:
                event = validate_event(_owned(raw, principal), now, self._new_id)
            except Invalid as problem:
                result: dict[str, Any] = {"index": index, "accepted": False, "reason": str(problem)}
                client_id = raw.get("event_id") if isinstance(raw, dict) else None
                result["event_id"] = client_id if isinstance(client_id, str) else None
                results.append(result)
                continue
            problem = (
                submitter_problem(event, principal.user_id, kind)
                if kind
                else f"a machine identity needs the {METRICS_WRITE_SCOPE} scope"
            )
            if problem is not None:
                name = "event_type" if event["event_type"] == SYSTEM_METRIC else "user_id"
                forbidden.append({"field": f"events[{index}].{name}", "issue": problem})
                continue
            valid.append((index, stamp(event, principal.user_id, kind, correlation.current())))
            results.append({"index": index, "accepted": True, "event_id": event["event_id"]})
        if forbidden:
            raise Forbidden("The request holds events its caller may not send.", forbidden)
        if valid:
            records = [
                (json.dumps(event, separators=(",", ":")).encode(), partition_key(event))
                for _, event in valid
            ]
            self._take_quota(principal, len(records), sum(map(record_bytes, records)))
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

    def _take_quota(self, principal: Principal, count: int, size: int) -> None:
        """Count the events and their bytes (`core.quotas`: 429 over either, 413 for more
        than a whole window's; a counters' table that is busy is a 503, `core.http`)."""
        quotas = self._machine_quotas if principal.is_machine else self._user_quotas
        self._quotas.take(principal.user_id, [(quotas.events, count), (quotas.bytes, size)])


def _owned(raw: Any, principal: Principal) -> Any:
    """A user's event without `user_id` is the caller's (a machine is nobody's user)."""
    if (
        isinstance(raw, dict)
        and raw.get("event_type") in USER_EVENTS
        and raw.get("user_id") is None
        and not principal.is_machine
    ):
        return {**raw, "user_id": principal.user_id}
    return raw


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
