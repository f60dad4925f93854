"""Order updates by email: the workflow publishes `order-shipped` and `order-failed` on the
`order-updates` topic (its NotifyCustomer and NotifyFailure states), and `email_order_update`
mails the order's owner.

SNS delivers at least once, so each event is mailed once through an idempotency record keyed
by its `event_id` (`order-shipped:<order_id>`). An owner deleted meanwhile gets nothing. A
message that is not an order update fails every attempt and ends in the function's failure
destination, never silently dropped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from chalicelib.core.aws import APP_NAME
from chalicelib.core.ids import is_uuid
from chalicelib.core.observability import logger

ORDER_SHIPPED, ORDER_FAILED = "order-shipped", "order-failed"
#: What the owner reads for each failure reason (the Step Functions error of the failure).
REASONS = {
    "InvalidOrder": "it does not meet the shop's rules (delivery country, order size or a "
    "product no longer sold)",
    "OutOfStock": "some products are out of stock",
    "PaymentDeclined": "the payment was declined",
    "PaymentError": "the payment could not be taken",
    "ShippingError": "the carrier cannot deliver to the address",
}


class InvalidOrderUpdate(ValueError):
    """Not an order update this code can mail; retrying will not help."""


class Profiles(Protocol):
    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str, html: str) -> None: ...


class Once(Protocol):
    def run(self, key: str, action: Any, lambda_context: Any = None) -> bool: ...


def parse_order_update(message: str) -> dict[str, Any]:
    try:
        event = json.loads(message)
    except (TypeError, ValueError):
        raise InvalidOrderUpdate("the message is not JSON") from None
    if not isinstance(event, dict) or event.get("event_type") not in (ORDER_SHIPPED, ORDER_FAILED):
        raise InvalidOrderUpdate("the message is not an order update")
    for name in ("order_id", "owner_id"):
        if not (isinstance(event.get(name), str) and is_uuid(event[name])):
            raise InvalidOrderUpdate(f"the event names no valid {name}")
    if not isinstance(event.get("event_id"), str):
        raise InvalidOrderUpdate("the event has no event_id")
    return event


def order_update_message(event: Mapping[str, Any], name: str) -> tuple[str, str, str]:
    """Subject, text and HTML of the email for an order update (user text escaped in HTML)."""
    short_id = event["order_id"][:8]
    if event["event_type"] == ORDER_SHIPPED:
        subject = f"Your {APP_NAME} order {short_id} has shipped"
        news = (
            f"your order {short_id} is on its way. Tracking number: {event.get('tracking_number')}."
        )
    else:
        reason = REASONS.get(str(event.get("reason")), "something went wrong")
        subject = f"Your {APP_NAME} order {short_id} could not be completed"
        news = (
            f"your order {short_id} could not be completed: {reason}. Nothing was charged "
            "(anything taken has been refunded) and the products were released."
        )
    text = f"Hello {name},\n\n{news[0].upper()}{news[1:]}\n\nThe {APP_NAME} team\n"
    body = (
        f"<html><body><p>Hello {html.escape(name)},</p><p>{html.escape(news[0].upper() + news[1:])}"
        f"</p><p>The {APP_NAME} team</p></body></html>"
    )
    return subject, text, body


class OrderUpdateMailer:
    def __init__(self, profiles: Profiles, mailer: Mailer, once: Once) -> None:
        self._profiles = profiles
        self._mailer = mailer
        self._once = once

    def handle(self, message: str, lambda_context: Any = None) -> bool:
        """Mail the owner about one order update, once; True if mailed now."""
        event = parse_order_update(message)
        owner = self._profiles.get_many([event["owner_id"]]).get(event["owner_id"])
        if owner is None:
            logger.info("order owner gone; update not mailed", order_id=event["order_id"])
            return False
        subject, text, body = order_update_message(event, owner["name"])
        sent = self._once.run(
            f"order-update:{event['event_id']}",
            lambda: self._mailer.send(owner["email"], subject, text, body),
            lambda_context,
        )
        logger.info(
            "order update mailed" if sent else "order update already mailed; duplicate skipped",
            order_id=event["order_id"],
            event_id=event["event_id"],
        )
        return sent
