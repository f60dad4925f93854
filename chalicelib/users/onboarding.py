"""What happens after a user is created, driven by the `user-created` event:

- `UserWelcome.welcome` (SNS subscription): default preferences stored, then one welcome
  email. Every source delivers at least once, so each is done once per user through an
  idempotency record; the preferences only fill in what the user has not set.
- `ProfileSetUp.set_up_profile` (the onboarding SQS queue, subscribed to the same topic): marks the
  profile set up. A message that is not a valid `user-created` event raises `InvalidEvent`;
  it fails each receive and the queue's redrive policy dead-letters it after 3.

A user deleted before its event arrives is skipped: there is nobody left to greet.
The two are separate classes because they run in separate functions, and the profile set-up
has no business holding the mailer's or the idempotency table's permissions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib.core.observability import logger
from chalicelib.users import model
from chalicelib.users.events import USER_CREATED

DEFAULT_PREFERENCES = {"newsletter": True, "notifications": True}


class InvalidEvent(ValueError):
    """Not a `user-created` event this code can act on: retrying will not help."""


class Profiles(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...
    def add_missing_preferences(self, user_id: str, defaults: dict[str, Any], now: str) -> bool: ...
    def mark_onboarded(self, user_id: str, now: str) -> bool: ...


class Mailer(Protocol):
    def send_welcome(self, email: str, name: str) -> None: ...


class Once(Protocol):
    def run(self, key: str, action: Callable[[], None], lambda_context: Any = None) -> bool: ...


def parse_user_created(message: str) -> dict[str, Any]:
    """The event in an SNS message or SQS body, checked to be a usable `user-created`."""
    try:
        event = json.loads(message)
    except (TypeError, ValueError):
        raise InvalidEvent("the message is not JSON") from None
    if not isinstance(event, dict) or event.get("event_type") != USER_CREATED:
        raise InvalidEvent("the message is not a user-created event")
    user = event.get("user")
    user_id = user.get("user_id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not model.is_user_id(user_id):
        raise InvalidEvent("the event names no valid user_id")
    if not isinstance(event.get("event_id"), str):
        raise InvalidEvent("the event has no event_id")
    return event


class UserWelcome:
    def __init__(
        self, profiles: Profiles, mailer: Mailer, once: Once, clock: Callable[[], str]
    ) -> None:
        self._profiles = profiles
        self._mailer = mailer
        self._once = once
        self._clock = clock

    def welcome(self, message: str, lambda_context: Any = None) -> None:
        """Default preferences, then the welcome email: each once per user. Duplicates of
        the event are normal (SNS, a retried stream batch, a redrive), and a duplicate must
        neither mail twice nor put back a default the user has since turned off."""
        event = parse_user_created(message)
        user_id = event["user"]["user_id"]
        user = self._profiles.get(user_id)
        if user is None:
            logger.info("user gone before its welcome; skipped", user_id=user_id)
            return
        self._once.run(
            f"preferences:{user_id}", lambda: self._add_default_preferences(user), lambda_context
        )
        sent = self._once.run(
            f"welcome-email:{user_id}",
            lambda: self._mailer.send_welcome(user["email"], user["name"]),
            lambda_context,
        )
        logger.info(
            "welcome sent" if sent else "welcome already sent; duplicate skipped",
            user_id=user_id,
            event_id=event["event_id"],
        )

    def _add_default_preferences(self, user: dict[str, Any]) -> None:
        room = model.MAX_PREFERENCES - len(user.get("preferences") or {})
        defaults = dict(list(DEFAULT_PREFERENCES.items())[: max(room, 0)])
        if defaults:
            self._profiles.add_missing_preferences(user["user_id"], defaults, self._clock())


class ProfileSetUp:
    def __init__(self, profiles: Profiles, clock: Callable[[], str]) -> None:
        self._profiles = profiles
        self._clock = clock

    def set_up_profile(self, body: str) -> None:
        event = parse_user_created(body)
        user_id = event["user"]["user_id"]
        if not self._profiles.mark_onboarded(user_id, self._clock()):
            logger.info("user gone before onboarding; skipped", user_id=user_id)
