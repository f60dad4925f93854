"""Order update emails: one per event, to the owner, with what they wrote escaped."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.orders.notifications import (
    InvalidOrderUpdate,
    OrderUpdateMailer,
    order_update_message,
)

OWNER = str(uuid.uuid4())


class Once:
    def __init__(self) -> None:
        self.done: set[str] = set()

    def run(self, key: str, action: Callable[[], None], lambda_context: Any = None) -> bool:
        if key in self.done:
            return False
        action()
        self.done.add(key)
        return True


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []

    def send(self, to: str, subject: str, text: str, html: str) -> None:
        self.sent.append((to, subject, text, html))


class Profiles:
    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def get_many(self, user_ids: Any) -> dict[str, dict[str, Any]]:
        return {u: self.users[u] for u in user_ids if u in self.users}


def event(kind: str = "order-shipped", **extra: Any) -> str:
    order_id = str(uuid.uuid4())
    body = {"event_type": kind, "event_id": f"{kind}:{order_id}", "order_id": order_id,
            "owner_id": OWNER, **extra}  # fmt: skip
    return json.dumps(body)


def mailer(users: dict[str, dict[str, Any]] | None = None) -> tuple[OrderUpdateMailer, Outbox]:
    outbox = Outbox()
    ada = {"email": "ada@example.com", "name": "Ada <b>"}
    return OrderUpdateMailer(
        Profiles({OWNER: ada} if users is None else users), outbox, Once()
    ), outbox


def test_a_shipped_order_is_mailed_once_to_its_owner() -> None:
    updates, outbox = mailer()
    message = event(tracking_number="TT1")
    assert updates.handle(message) is True
    assert updates.handle(message) is False  # SNS delivered it twice
    [(to, subject, text, html)] = outbox.sent
    assert to == "ada@example.com" and "has shipped" in subject
    assert "TT1" in text and "Ada <b>" in text and "Ada &lt;b&gt;" in html


def test_a_failed_order_says_why_in_words() -> None:
    updates, outbox = mailer()
    updates.handle(event("order-failed", reason="OutOfStock"))
    assert "out of stock" in outbox.sent[0][2]


def test_an_owner_gone_gets_nothing() -> None:
    updates, outbox = mailer(users={})
    assert updates.handle(event()) is False and outbox.sent == []


@pytest.mark.parametrize(
    "message",
    ["not json", json.dumps({"event_type": "user-created"}), event(order_id="x"),
     json.dumps({"event_type": "order-shipped", "order_id": OWNER, "owner_id": OWNER})],
)  # fmt: skip
def test_what_is_not_an_order_update_fails(message: str) -> None:
    updates, _ = mailer()
    with pytest.raises(InvalidOrderUpdate):
        updates.handle(message)


def test_an_unknown_reason_still_reads_well() -> None:
    subject, text, _ = order_update_message(
        {"event_type": "order-failed", "order_id": OWNER, "reason": "Weird"}, "Ada"
    )
    assert "could not be completed" in subject and "something went wrong" in text
