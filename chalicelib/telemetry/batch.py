"""The request and the answer of `POST /events` as Pydantic models, for the API's document.

The ingest does not validate a request with `EventBatch`: it checks the envelope itself, then
each event on its own (`model.validate_event`, after filling in the caller's `user_id`), and
answers for each (`EventsAccepted`). Nothing imports this module to validate an event.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.telemetry.model import MAX_EVENTS
from chalicelib.telemetry.schemas import Event


class EventBatch(BaseModel):
    """The body of `POST /events`: 1 to 500 events, each checked on its own (one refused does
    not refuse the others)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_type": "user_activity",
                            "timestamp": "2026-11-26T12:00:00Z",
                            "activity_type": "page_view",
                            "details": {"path": "/checkout"},
                        },
                        {
                            "event_type": "transaction",
                            "event_id": "txn-evt-1",
                            "timestamp": "2026-11-26T12:00:01Z",
                            "transaction_id": "t-1001",
                            "user_id": "user-42",
                            "amount": 25.5,
                            "currency": "EUR",
                        },
                    ]
                }
            ]
        },
    )
    events: list[Event] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description="The events, told apart by `event_type`. A user's own `user_activity` and "
        "`transaction` (an admin's for anyone); `system_metric` from a machine identity with "
        "the metrics scope, or an admin.",
    )


class EventResult(BaseModel):
    """What became of one event of the batch."""

    index: int = Field(ge=0, lt=MAX_EVENTS, description="Its position in `events`.")
    accepted: bool = Field(description="Put on the stream: it will be stored.")
    event_id: str | None = Field(
        description="Its id (the one sent, or the one made); null for a refused event sent "
        "without a usable one.",
        examples=["3f1c2a9e-8d7b-4c55-9a0e-1b2c3d4e5f60"],
    )
    reason: str | None = Field(
        default=None,
        description="Why it was refused (only when `accepted` is false); the stream's "
        "refusal says to retry.",
        examples=["timestamp is more than 7 days old"],
    )


class EventsAccepted(BaseModel):
    """The answer (202) of `POST /events` when at least one event was accepted; when none is,
    the request fails (400, or 503 if the stream took none) with each reason in `details`."""

    accepted: int = Field(ge=1, le=MAX_EVENTS, description="How many were accepted.")
    rejected: int = Field(ge=0, lt=MAX_EVENTS, description="How many were refused.")
    results: list[EventResult] = Field(description="One per event, in the order sent.")
