"""`GET /users/{id}/export`: everything stored about a user, as one JSON document.

The owner or an admin may ask (403 for anyone else, even for an id that does not exist, as
`GET /users/{id}`); 404 for a user that does not exist. The document:

- `profile`: every stored field of the profile but the table's bookkeeping (`pk`, `entity`,
  `created_key`, `version`), so a field added later is exported without a change here;
- `pending_email_change`: the address an email change waits to confirm, if any (its code's
  digest and attempt count are secrets and bookkeeping, left out);
- one entry per domain that holds data of its owners (`erasure.OwnerData.export`): `images`,
  `activities` and `transactions` (telemetry), `orders`.

The search index is not exported: its postings are the words of the profile's name, email
and bio (already in `profile`), keyed by the user's id, and never shown to the user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from chalicelib.auth.policy import require_self_or_admin
from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.dynamo import plain
from chalicelib.core.errors import NotFound
from chalicelib.users.erasure import OwnerData
from chalicelib.users.model import is_user_id
from chalicelib.users.pending import email_change_key

#: The users table's own attributes of a profile item: not data about the user.
BOOKKEEPING = frozenset({"pk", "entity", "created_key", "version", "correlation_id"})
#: What an email change waiting for its code shows of itself.
PENDING_EMAIL_FIELDS = ("email", "expires_at")
EXPORT_VERSION = 1


class Profiles(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...


class Pending(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...


def profile_fields(user: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(user.items()) if k not in BOOKKEEPING and v is not None}


def attachment_name(user_id: str) -> str:
    """The export's file name (`Content-Disposition`); `user_id` is a checked UUID."""
    return f"user-{user_id}-export.json"


class UserExport:
    def __init__(
        self,
        profiles: Profiles,
        pending: Pending,
        domains: Mapping[str, OwnerData],
        clock: Callable[[], str] = clock.timestamp,
    ) -> None:
        self._profiles = profiles
        self._pending = pending
        self._domains = dict(domains)
        self._clock = clock

    def export(self, principal: Principal, user_id: str) -> dict[str, Any]:
        require_self_or_admin(principal, user_id)
        user = self._profiles.get(user_id) if is_user_id(user_id) else None
        if user is None:
            raise NotFound(f"User {user_id[:64]!r} does not exist.")
        document: dict[str, Any] = {
            "export_version": EXPORT_VERSION,
            "user_id": user_id,
            "exported_at": self._clock(),
            "profile": profile_fields(user),
        }
        change = self._pending.get(email_change_key(user_id))
        if change:
            document["pending_email_change"] = {
                k: change[k] for k in PENDING_EMAIL_FIELDS if change.get(k) is not None
            }
        for name, domain in self._domains.items():
            held = domain.export(user_id)
            if isinstance(held, Mapping):
                document.update({str(k): v for k, v in held.items()})
            else:
                document[name] = list(held)
        return dict(plain(document))
