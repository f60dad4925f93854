"""In-memory stand-ins for the users service's ports, with the same contracts as the adapters."""

from __future__ import annotations

import copy
from typing import Any

from chalicelib.users.model import email_key
from chalicelib.users.repository import EmailTaken, StaleUser, sort_key


class InMemoryUserRepository:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}

    def add(self, user: dict[str, Any]) -> None:
        self._claim(user["email"], user["user_id"])
        self.users[user["user_id"]] = copy.deepcopy(user)

    def get(self, user_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.users.get(user_id))

    def list_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        ordered = sorted(self.users.values(), key=sort_key, reverse=True)
        if after is not None:
            ordered = [u for u in ordered if sort_key(u) < after]
        page = ordered[:limit]
        return copy.deepcopy(page), sort_key(page[-1]) if len(ordered) > limit else None

    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        stored = self.users.get(current["user_id"])
        if stored is None or stored["version"] != current["version"]:
            raise StaleUser()
        if email_key(current["email"]) != email_key(new["email"]):
            self._claim(new["email"], new["user_id"])
        self.users[new["user_id"]] = {k: v for k, v in new.items() if v is not None}

    def remove(self, user: dict[str, Any]) -> None:
        stored = self.users.get(user["user_id"])
        if stored is None or stored["version"] != user["version"]:
            raise StaleUser()
        del self.users[user["user_id"]]

    def _claim(self, email: str, user_id: str) -> None:
        for other in self.users.values():
            if other["user_id"] != user_id and email_key(other["email"]) == email_key(email):
                raise EmailTaken()


class RecordingPublisher:
    """Records what would be sent; `fail_on` names a call that raises instead."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail_on = fail_on

    def user_created(self, user: dict[str, Any]) -> None:
        self._record("user_created", {"user": user})

    def user_updated(self, user: dict[str, Any], changed_fields: list[str]) -> None:
        self._record("user_updated", {"user": user, "changed_fields": changed_fields})

    def onboarding_requested(self, user: dict[str, Any]) -> None:
        self._record("onboarding_requested", {"user": user})

    def _record(self, name: str, payload: dict[str, Any]) -> None:
        if name == self.fail_on:
            raise ConnectionError(f"{name} is down")
        self.sent.append((name, copy.deepcopy(payload)))
