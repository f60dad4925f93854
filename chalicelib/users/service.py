"""The Users use cases: what happens on register, read, list, update and delete.

Depends on two small ports, a repository and an event publisher, so it runs in unit tests
with in-memory fakes and in Lambda with the DynamoDB/SNS/SQS adapters.

A write and its events go together: if an event cannot be sent after the write, the write is
undone and the client gets a 503 to retry, so no user exists whose events were never sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable
from chalicelib.core.observability import logger
from chalicelib.users import model
from chalicelib.users.pagination import decode_cursor, encode_cursor
from chalicelib.users.repository import EmailTaken, StaleUser


class UserRepository(Protocol):
    def add(self, user: dict[str, Any]) -> None: ...
    def get(self, user_id: str) -> dict[str, Any] | None: ...
    def list_page(
        self, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None: ...
    def remove(self, user: dict[str, Any]) -> None: ...


class UserEventPublisher(Protocol):
    def user_created(self, user: dict[str, Any]) -> None: ...
    def user_updated(self, user: dict[str, Any], changed_fields: list[str]) -> None: ...
    def onboarding_requested(self, user: dict[str, Any]) -> None: ...


def utc_now() -> str:
    """Microsecond ISO-8601 UTC: sorts as text, so it orders the list index."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class UsersService:
    def __init__(
        self,
        repository: UserRepository,
        publisher: UserEventPublisher,
        clock: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._users = repository
        self._events = publisher
        self._clock = clock
        self._new_id = new_id

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = model.validate_new_user(body)
        now = self._clock()
        user = {
            **fields,
            "user_id": self._new_id(),
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        try:
            self._users.add(user)
        except EmailTaken:
            raise Conflict("A user with this email is already registered.") from None
        try:
            self._events.user_created(user)
            self._events.onboarding_requested(user)
        except Exception:
            logger.exception(
                "user events not sent; undoing the registration", user_id=user["user_id"]
            )
            self._users.remove(user)
            raise ServiceUnavailable("Registration could not be completed; retry it.") from None
        return model.public_view(user)

    def get(self, user_id: str) -> dict[str, Any]:
        return model.public_view(self._existing(user_id))

    def list(self, limit: int, cursor: str | None) -> dict[str, Any]:
        after = decode_cursor(cursor) if cursor is not None else None
        users, next_key = self._users.list_page(limit, after)
        return {
            "items": [model.public_view(u) for u in users],
            "next_cursor": encode_cursor(next_key) if next_key else None,
        }

    def update(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        changes = model.validate_changes(body)
        current = self._existing(user_id)
        changed = sorted(k for k, v in changes.items() if current.get(k) != v)
        if not changed:
            return model.public_view(current)
        new = {**current, **changes, "updated_at": self._clock(), "version": current["version"] + 1}
        self._replace(current, new)
        try:
            self._events.user_updated(new, changed)
        except Exception:
            logger.exception("user-updated not sent; undoing the update", user_id=user_id)
            self._replace(new, {**current, "version": new["version"] + 1})
            raise ServiceUnavailable("The update could not be completed; retry it.") from None
        return model.public_view(new)

    def delete(self, user_id: str) -> None:
        user = self._existing(user_id)
        try:
            self._users.remove(user)
        except StaleUser:
            raise Conflict("The user changed while being deleted; retry.") from None

    def _existing(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(user_id) if model.is_user_id(user_id) else None
        if user is None:
            raise NotFound(f"User {user_id[:64]!r} does not exist.")
        return user

    def _replace(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        try:
            self._users.replace(current, new)
        except EmailTaken:
            raise Conflict("A user with this email is already registered.") from None
        except StaleUser:
            raise Conflict("The user changed while being updated; retry.") from None
