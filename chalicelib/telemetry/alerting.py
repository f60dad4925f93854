"""The processor's alerts step: which alerts are published, and the per-user limit on fraud
alerts (`processor`, step 6).

High and critical metric anomalies are all published: metrics come from the producers'
machine identity and admins only. Fraud alerts are raised by a user's own (self-reported)
transactions, so one user could page the fraud desk with every event of a minute: at most
`limit` (`TelemetryFraudAlertsPerUserHour`) of a user's fraud alerts are published per hour;
further ones are counted (`TelemetryFraudAlertsSuppressed`, and a log line with the count),
not published. The transactions are stored all the same.

The hour is the one the record arrived in (Kinesis's arrival time, not the event's
`timestamp`, which the client chooses and could spread over days to multiply the limit), so a
redelivered record falls in the hour it was counted in. The budget (`ports.AlertBudget`,
`tables.DynamoAlertBudget`) remembers which alerts (by event id) it let through: one admitted
again is not a new one, so an alert let through is published on every delivery of its record
until one succeeds (at least once), and one refused is never published. A budget that cannot
be read or written fails the records whose fraud alerts it was asked about (they come back),
as a publish that fails does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core import clock
from chalicelib.core.observability import logger
from chalicelib.core.quotas import window_start
from chalicelib.telemetry.detection import ALERT_SEVERITIES
from chalicelib.telemetry.encoding import Record
from chalicelib.telemetry.ports import AlertBudget, Alerts

ALERT_WINDOW_SECONDS = 3600
FRAUD_ALERT = "fraud_alert"


@dataclass
class AlertOutcome:
    """`failed`: the records to redeliver (an alert not published, a budget not read);
    `published`: alerts handed to SNS; `suppressed`: fraud alerts over a user's limit."""

    failed: set[int] = field(default_factory=set)
    published: int = 0
    suppressed: int = 0


def alert_window(record: Record) -> int:
    """The epoch second the hour of the record's arrival starts at (now, without one)."""
    moment = clock.from_epoch(record.arrival) if record.arrival else clock.now()
    return window_start(moment, ALERT_WINDOW_SECONDS)


def send(
    found: dict[int, list[dict[str, Any]]],
    batch: Sequence[Record],
    cut: int,
    alerts: Alerts,
    budget: AlertBudget | None,
) -> AlertOutcome:
    """Publish the alerts (`found`: by record index) of the records before the cut whose
    severity is alerted, fraud alerts within their user's budget (None: no limit)."""
    to_alert = [
        (index, alert)
        for index in sorted(found)
        if index < cut
        for alert in found[index]
        if alert["severity"] in ALERT_SEVERITIES
    ]
    outcome = AlertOutcome()
    if budget is not None:
        to_alert = _within_budget(to_alert, batch, budget, outcome)
    if to_alert:
        # Each alert carries the id of the request that sent its event (`core.correlation`):
        # a field of its message (read by people; README, Telemetry) and its attribute.
        with_ids = [
            {**alert, "correlation_id": batch[index].correlation_id}
            if batch[index].correlation_id
            else alert
            for index, alert in to_alert
        ]
        for position in alerts.send_alerts(with_ids):
            outcome.failed.add(to_alert[position][0])
    outcome.published = len(to_alert)
    return outcome


def _within_budget(
    to_alert: list[tuple[int, dict[str, Any]]],
    batch: Sequence[Record],
    budget: AlertBudget,
    outcome: AlertOutcome,
) -> list[tuple[int, dict[str, Any]]]:
    """`to_alert` without the fraud alerts their user's budget refuses (counted in
    `outcome.suppressed`) or could not tell (their records added to `outcome.failed`)."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)  # -> positions in to_alert
    for position, (index, alert) in enumerate(to_alert):
        if alert["type"] == FRAUD_ALERT:
            groups[(alert["user_id"], alert_window(batch[index]))].append(position)
    dropped: set[int] = set()
    for (user_id, window), positions in groups.items():
        try:
            admitted = budget.admit(
                user_id, window, [to_alert[p][1]["event_id"] for p in positions]
            )
        except Exception:
            logger.exception("fraud alerts' budget unreadable; their records will be redelivered")
            outcome.failed.update(to_alert[p][0] for p in positions)
            dropped.update(positions)
            continue
        refused = [p for p in positions if to_alert[p][1]["event_id"] not in admitted]
        dropped.update(refused)
        outcome.suppressed += len(refused)
    if outcome.suppressed:
        logger.warning(
            "fraud alerts over their user's hourly limit: counted, not published",
            suppressed=outcome.suppressed,
        )
    return [entry for position, entry in enumerate(to_alert) if position not in dropped]
