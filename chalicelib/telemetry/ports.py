"""What the stream processor asks of AWS, as small interfaces (pure, no AWS).

The adapters: `tables` (DynamoDB items, baselines, transaction history, the fraud alerts'
budget), `delivery` (SNS alerts, the SQS quarantine, the S3 archive, the Kinesis stream) and
`pseudonyms` (the data lake's pseudonyms). The unit tests give the processor in-memory fakes
of each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chalicelib.telemetry.detection import Baseline
    from chalicelib.telemetry.pseudonyms import LakeIdentity


@dataclass
class PutOutcome:
    """What `put_all` could not write: `failed` (throttled or unprocessed after every retry,
    or a fault of the table itself: worth a redelivery) and `rejected` (refused for good,
    each alone in its call: position -> the error, never worth another try)."""

    failed: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)


class ItemWriter(Protocol):
    def put_all(
        self,
        table: str,
        items: Sequence[dict[str, Any]],
        should_stop: Callable[[], bool] | None = None,
    ) -> PutOutcome: ...


class Baselines(Protocol):
    def get_many(self, keys: Sequence[str]) -> dict[str, Baseline]: ...
    def store(self, key: str, seen: Baseline | None, new: Baseline) -> Baseline | None: ...


class TransactionHistory(Protocol):
    def between(self, user_id: str, start: str, end: str) -> list[tuple[str, str]]: ...


class Alerts(Protocol):
    def send_alerts(self, alerts: Sequence[dict[str, Any]]) -> list[int]: ...


class AlertBudget(Protocol):
    def admit(self, user_id: str, window: int, alert_ids: Sequence[str]) -> set[str]:
        """Which of `alert_ids` (a user's fraud alerts, by event id, in the hour starting at
        epoch second `window`) may be published: those let through before, then new ones
        while the hour has room. Raises if the store cannot be read or written."""
        ...


class Quarantine(Protocol):
    def send(self, messages: Sequence[dict[str, Any]]) -> list[int]: ...


class Archive(Protocol):
    def put(self, key: str, body: bytes) -> None: ...


class Pseudonyms(Protocol):
    def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
        """Each user's lake identity, created if the user has none yet; raises if the
        store cannot be read or written (the archive then fails, the batch comes back)."""
        ...
