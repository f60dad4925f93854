"""Retry waits for what boto3's own retries do not cover (UnprocessedItems, records a batch
call reports failed): exponential backoff with full jitter, as AWS recommends.

Every loop that retries with it is bounded by `max_attempts` (`for attempt in
range(backoff.max_attempts)`), and `longest_total_wait` says how long its sleeps can add up
to, for the function's time budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 1.0


class Backoff:
    def __init__(
        self,
        sleep: Callable[[float], None] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        base_s: float = BACKOFF_BASE_S,
        cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        if max_attempts < 1 or base_s < 0 or cap_s < 0:
            raise ValueError("a backoff needs at least one attempt and non-negative waits")
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.cap_s = cap_s

    def wait(self, attempt: int) -> None:
        """Sleep before retry `attempt` (1, 2, ...): up to base * 2**attempt, capped."""
        (self.sleep or time.sleep)(random.uniform(0, self.longest_wait(attempt)))

    def longest_wait(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * 2**attempt)

    def longest_total_wait(self) -> float:
        """The most a loop of `max_attempts` attempts sleeps in all (for time budgets)."""
        return sum(self.longest_wait(attempt) for attempt in range(1, self.max_attempts))
