"""Do a side effect once per key, across retries and duplicate deliveries: Powertools'
idempotency utility on a DynamoDB table (`IDEMPOTENCY_TABLE_NAME`).

The first caller records the key as in progress, runs the action and records it done; a
duplicate that arrives later is skipped; one that arrives while the first still runs gets
`AlreadyInProgress` (raise it, so the delivery is retried later). If the action fails, the
record is removed, so a retry runs it again. An in-progress record left by a crashed
invocation expires with that invocation's Lambda timeout, not the record's lifetime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chalicelib.core import aws


class AlreadyInProgress(Exception):
    """Another invocation is doing this right now: retry later."""


class OnceOnly:
    def __init__(self, table_name: str, key_prefix: str, expires_after_seconds: int) -> None:
        self._table = table_name
        self._prefix = key_prefix
        self._expires = expires_after_seconds
        self._lock = threading.Lock()
        self._runner: Any = None
        self._config: Any = None

    def run(self, key: str, action: Callable[[], None], lambda_context: Any = None) -> bool:
        """Run `action` unless it already ran for `key`; True if it ran now."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
        )

        runner = self._build()
        if lambda_context is not None:
            self._config.register_lambda_context(lambda_context)
        ran: list[bool] = []
        try:
            runner(action=lambda: (action(), ran.append(True)), request={"key": key})
        except IdempotencyAlreadyInProgressError:
            raise AlreadyInProgress(key) from None
        return bool(ran)

    def _build(self) -> Any:
        with self._lock:
            if self._runner is None:
                from aws_lambda_powertools.utilities.idempotency import (
                    DynamoDBPersistenceLayer,
                    IdempotencyConfig,
                    idempotent_function,
                )

                store = DynamoDBPersistenceLayer(
                    table_name=self._table, boto3_client=aws.client("dynamodb")
                )
                self._config = IdempotencyConfig(
                    event_key_jmespath="key",
                    raise_on_no_idempotency_key=True,
                    expires_after_seconds=self._expires,
                )

                @idempotent_function(
                    data_keyword_argument="request",
                    persistence_store=store,
                    config=self._config,
                    key_prefix=self._prefix,
                )
                def once(action: Callable[[], Any], request: dict[str, str]) -> dict[str, bool]:
                    action()
                    return {"done": True}

                self._runner = once
            return self._runner
