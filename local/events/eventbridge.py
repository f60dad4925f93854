"""EventBridge rules (`@app.on_cw_event`): a rule `local-events-<handler>` on the default bus,
with the handler's event pattern, targets the runtime's queue; the handler gets each event as
EventBridge sends it (its `account` filled in if the emulator leaves it out), one per
invocation. Retries and the failed queue: async_delivery.py.
"""

from __future__ import annotations

import json
from typing import Any

from local.events.async_delivery import AsyncDelivery
from local.events.core import EventRuntime


class EventBridgeRule(AsyncDelivery):
    """The default bus's events that match the handler's pattern, through a rule
    `local-events-<handler>` that targets the runtime's queue: each event as it is."""

    SOURCE = "aws.events"

    def __init__(self, runtime: EventRuntime, source: Any) -> None:
        super().__init__(runtime, source)
        self._events_client = runtime.client("events")

    def _connect(self, queue_url: str, queue_arn: str) -> None:
        rule = self._events_client.put_rule(
            Name=self.queue_name,
            EventPattern=json.dumps(self._source.event_pattern),
            State="ENABLED",
            Description=f"The local event runtime: events for {self.name}",
        )["RuleArn"]
        self._allow(queue_url, queue_arn, "events.amazonaws.com", rule)
        self._events_client.put_targets(
            Rule=self.queue_name, Targets=[{"Id": "local-events", "Arn": queue_arn}]
        )

    def _events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        event = json.loads(message["Body"])
        event.setdefault("account", self._runtime.account())  # moto's targets leave it out
        return [event]
