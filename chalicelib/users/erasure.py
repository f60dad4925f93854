"""Erasing a deleted user: the consumer of `user-deleted`.

`DELETE /users/{id}` closes the account in the request (`service.UsersService.delete`: the
refresh tokens revoked, the sign-in identity and the profile removed). The profile's removal,
seen on the users table's stream, is published as `user-deleted` (`events`), which the
erasure queue receives (SQS, subscribed to the topic; dead-letter queue after 5 receives,
alarmed). `erase_users` (app.py) hands each message to `UserErasure.handle` through
`core.sqs_batch`, so a message that fails comes back alone, and a poison one ends in the DLQ.

A pass erases, in this order, each step tolerating what an earlier, interrupted pass did
(running a pass twice, or two at once, is harmless):

1. the sign-in identity (Cognito), deleted again: already gone is the usual case;
2. every domain that holds data of its owners (`OwnerData.erase`): images (originals,
   thumbnails, records, labels), telemetry (activities deleted, transactions kept
   pseudonymised), orders (ended orders kept pseudonymised: `orders.owner_data`), the last
   under the user's pseudonym (below).

The pseudonym an erased user's orders carry instead of the id is random (32 hex digits,
`new_pseudonym`), so nobody holding the id (a log line, an old object of the data lake) can
recompute it and find the orders again; and it is one per user, so the orders stay countable
together. It lives in the messages only: the `user-deleted` event has none, so its pass makes
one and hands the event on to the queue at once with it (no delay), erasing nothing itself;
every later pass reads it from its message and puts it in its follow-up. Made before anything
uses it, it survives a pass that fails halfway (the retry reads the same message). Once the
last pass is taken from the queue, nothing links the id to it. The messages hold the id, the
deletion time, the pass number and the pseudonym, nothing personal besides the id. Logs name
the user by a SHA-256 digest of the id (`user_digest`, as the images domain's), never by the
id, and never show the pseudonym.

The search index loses the user's postings from the same stream record (its keeper deletes
the postings of a removed user, `search.indexing`); the profile, its email claim and any
email change it was waiting for went in the request's transaction.

Passes repeat. The API verifies access tokens by their signature, so one issued before the
deletion is accepted until it expires (60 minutes; plus the authorizer's 5-minute cache, and
10 more for an upload link it got): revoking refresh tokens stops new tokens, not those. What
such a token could still create (an order, an image) is erased by the passes that follow: a
pass sends the queue a follow-up of its message (SQS delay, FOLLOW_UP_SECONDS) until the
stage's `UserErasureWindowMinutes` after the deletion have passed and none of the user's
orders is still open (an open order keeps its address and owner until its workflow ends:
`orders.owner_data`). A follow-up is the same event with its pass number; after MAX_PASSES
(an order open for days: the nightly sweep settles stuck ones within a day) the message fails
and goes to the DLQ, for a person to look at. The follow-up is the pass's last step, so a
pass that fails schedules none: its retry does. A `user-deleted` delivered twice starts two
series of passes, each with its own pseudonym: the user's orders may then be split between
two pseudonyms (neither linked to the id).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.core import aws, clock, correlation
from chalicelib.core.ids import digest, is_pseudonym, new_pseudonym
from chalicelib.core.observability import logger
from chalicelib.users.events import USER_DELETED
from chalicelib.users.model import is_user_id

#: SQS's longest delay.
FOLLOW_UP_SECONDS = 900
#: 15-minute passes for about 2 days.
MAX_PASSES = 200


def user_digest(user_id: str) -> str:
    """How the erasure's logs name the user: a SHA-256 digest (hex) of the id, the same as
    the images domain's logs use, so one digest finds a user's erasure in every log."""
    return digest(user_id)


class InvalidErasure(ValueError):
    """The message is not a `user-deleted` event: it fails, and ends in the DLQ."""


class ErasureUnfinished(RuntimeError):
    """Passes ran out with the user's data not all erased (orders still open)."""


class OwnerData(Protocol):
    """What a domain holds about its users: `erase` returns how much it erased (a count, or
    counts by kind); `export` what it holds, for `export.py`."""

    def erase(self, user_id: str) -> Any: ...
    def export(self, user_id: str) -> Any: ...


class PseudonymisedOwnerData(Protocol):
    """A domain that keeps its owners' records under a pseudonym: `erase` puts the user's
    under the one given (the same for every pass of one erasure)."""

    def erase(self, user_id: str, pseudonym: str) -> Any: ...
    def export(self, user_id: str) -> Any: ...


class Identities(Protocol):
    def delete(self, user_id: str) -> None: ...


class FollowUps(Protocol):
    def schedule(self, body: str, delay_seconds: int) -> None: ...


@dataclass(frozen=True)
class ErasureRequest:
    user_id: str
    deleted_at: datetime
    event_id: str
    pass_number: int = 1
    pseudonym: str | None = None

    def body(self) -> str:
        """This request as a message: nothing of the user but the id (module docstring)."""
        message: dict[str, Any] = {
            "event_type": USER_DELETED,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "deleted_at": clock.timestamp(self.deleted_at),
            "pass": self.pass_number,
        }
        if self.pseudonym is not None:
            message["pseudonym"] = self.pseudonym
        return json.dumps(message, separators=(",", ":"), sort_keys=True)

    def follow_up(self) -> str:
        """The body of the next pass's message."""
        return replace(self, pass_number=self.pass_number + 1).body()


def parse_request(body: str) -> ErasureRequest:
    """A `user-deleted` event (or a follow-up of one), or InvalidErasure."""
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidErasure("not JSON") from None
    if not isinstance(message, dict) or message.get("event_type") != USER_DELETED:
        raise InvalidErasure("not a user-deleted event")
    user_id, deleted_at = message.get("user_id"), message.get("deleted_at")
    if not isinstance(user_id, str) or not is_user_id(user_id):
        raise InvalidErasure("user_id is not a user id")
    if not isinstance(deleted_at, str) or not clock.is_timestamp(deleted_at):
        raise InvalidErasure("deleted_at is not a timestamp")
    pass_number = message.get("pass", 1)
    if isinstance(pass_number, bool) or not isinstance(pass_number, int) or pass_number < 1:
        raise InvalidErasure("pass is not a positive whole number")
    pseudonym = message.get("pseudonym")
    if pseudonym is not None and not is_pseudonym(pseudonym):
        raise InvalidErasure("pseudonym is not 32 lowercase hex digits")
    event_id = str(message.get("event_id") or f"{USER_DELETED}:{user_id}")
    return ErasureRequest(user_id, clock.parse(deleted_at), event_id, pass_number, pseudonym)


def erased_counts(name: str, result: Any) -> dict[str, int]:
    """A domain's answer as counts: `{name: n}` for a count, the counts themselves else."""
    if isinstance(result, Mapping):
        return {str(k): int(v) for k, v in result.items()}
    return {name: int(result or 0)}


class UserErasure:
    def __init__(
        self,
        identities: Identities,
        domains: Mapping[str, OwnerData],
        follow_ups: FollowUps,
        window: timedelta,
        pseudonymised: Mapping[str, PseudonymisedOwnerData] | None = None,
        now: Callable[[], datetime] = clock.now,
        max_passes: int = MAX_PASSES,
        pseudonyms: Callable[[], str] = new_pseudonym,
    ) -> None:
        self._identities = identities
        self._domains = dict(domains)
        self._pseudonymised = dict(pseudonymised or {})
        self._follow_ups = follow_ups
        self._window = window
        self._now = now
        self._max_passes = max_passes
        self._pseudonyms = pseudonyms

    def handle(self, body: str) -> None:
        """One pass for one message (module docstring); raises to have it retried."""
        request = parse_request(body)
        if request.pseudonym is None:
            # The user-deleted event: its pseudonym made, and in the queue before any use.
            self._follow_ups.schedule(replace(request, pseudonym=self._pseudonyms()).body(), 0)
            logger.info(
                "user erasure started",
                user_digest=user_digest(request.user_id),
                erasure_pass=request.pass_number,
            )
            return
        counts = self.erase(request.user_id, request.pseudonym)
        still_open = counts.get("orders_open", 0)
        logger.info(
            "user erased",
            user_digest=user_digest(request.user_id),
            erasure_pass=request.pass_number,
            erased=counts,
        )
        if self._now() < request.deleted_at + self._window or still_open:
            if request.pass_number >= self._max_passes:
                raise ErasureUnfinished(
                    f"{still_open} orders of the user still open after {request.pass_number} passes"
                )
            self._follow_ups.schedule(request.follow_up(), FOLLOW_UP_SECONDS)

    def erase(self, user_id: str, pseudonym: str) -> dict[str, int]:
        """Everything of the user, once, the kept records under `pseudonym`; the counts of
        what each domain erased now."""
        self._identities.delete(user_id)
        counts: dict[str, int] = {}
        for name, domain in self._domains.items():
            counts.update(erased_counts(name, domain.erase(user_id)))
        for name, kept in self._pseudonymised.items():
            counts.update(erased_counts(name, kept.erase(user_id, pseudonym)))
        return counts


class SqsFollowUps:
    """Sends the erasure queue a delayed message: the next pass."""

    def __init__(self, queue_url: Callable[[], str], client: Callable[[str], Any] = aws.client):
        self._queue_url = queue_url
        self._client = client

    def schedule(self, body: str, delay_seconds: int) -> None:
        # The next pass logs the id of the delete that started the erasure.
        attributes = correlation.message_attributes()
        self._client("sqs").send_message(
            QueueUrl=self._queue_url(),
            MessageBody=body,
            DelaySeconds=delay_seconds,
            **({"MessageAttributes": attributes} if attributes else {}),
        )
