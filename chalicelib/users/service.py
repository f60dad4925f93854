"""The Users use cases: register, read, list, update and delete, and who may do each.

Depends on two small ports (a repository and an identity directory), so it runs in unit
tests with in-memory fakes and in Lambda with DynamoDB and Cognito. Events are not sent
from here: the users table's stream publishes them from what was stored (`events.py`).

Registration is a saga over Cognito and DynamoDB: reserve the email, create the sign-in
identity, store the profile. A failing step undoes the ones before it, newest first, and
stops at an undo that fails, so what is left is always a state the next attempt repairs: a
reservation that expires, or an identity without a profile, which the next registration of
that email removes (an identity whose profile exists is never touched). The same holds for
an update that moves the sign-in email: if Cognito refuses, the profile change is undone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib.auth.policy import require_admin, require_self_or_admin
from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from chalicelib.core.observability import logger
from chalicelib.core.pagination import decode_cursor, encode_cursor
from chalicelib.users import model
from chalicelib.users.identity import IdentityExists, WeakPassword
from chalicelib.users.repository import EmailTaken, StaleUser


class UserRepository(Protocol):
    def reserve_email(self, email: str) -> str: ...
    def release_email(self, email: str, reservation: str) -> None: ...
    def add(self, user: dict[str, Any], reservation: str) -> None: ...
    def get(self, user_id: str) -> dict[str, Any] | None: ...
    def list_page(
        self, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None: ...
    def remove(self, user: dict[str, Any]) -> None: ...


class IdentityDirectory(Protocol):
    def create(self, email: str, name: str, password: str) -> str: ...
    def find(self, email: str) -> str | None: ...
    def delete(self, user_id: str) -> None: ...
    def change_email(self, user_id: str, email: str) -> None: ...


EMAIL_TAKEN = "A user with this email is already registered."
#: Optimistic writes tried before a 409: enough to ride out the background handlers' changes.
WRITE_ATTEMPTS = 3


class UsersService:
    def __init__(
        self,
        repository: UserRepository,
        identities: IdentityDirectory,
        clock: Callable[[], str] = clock.timestamp,
    ) -> None:
        self._users = repository
        self._identities = identities
        self._clock = clock

    # --- register (public) --------------------------------------------------------------

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        fields, password = model.validate_registration(body)
        email = fields["email"]
        try:
            reservation = self._users.reserve_email(email)
        except EmailTaken:
            raise Conflict(EMAIL_TAKEN) from None
        undo: list[Callable[[], None]] = [lambda: self._users.release_email(email, reservation)]
        try:
            user_id = self._create_identity(email, fields["name"], password)
            undo.append(lambda: self._identities.delete(user_id))
            now = self._clock()
            user = {**fields, "user_id": user_id, "created_at": now, "updated_at": now}
            user["version"] = 1
            # Undone even if `add` reports a failure: it may have committed all the same.
            undo.append(lambda: self._remove_if_stored(user))
            self._users.add(user, reservation)
        except (WeakPassword, Conflict) as exc:
            self._undo(undo, "registration")
            if isinstance(exc, Conflict):
                raise
            raise ValidationFailed(
                "The password was refused.", [{"field": "password", "issue": str(exc)}]
            ) from None
        except Exception:
            logger.exception("registration failed; undoing it", email_domain=email.split("@")[-1])
            self._undo(undo, "registration")
            raise ServiceUnavailable("Registration could not be completed; retry it.") from None
        return model.public_view(user)

    def _create_identity(self, email: str, name: str, password: str) -> str:
        try:
            return self._identities.create(email, name, password)
        except IdentityExists:
            pass
        # We hold the email's reservation, so no *claim* has this address; but an identity
        # may, either left by an earlier attempt that failed half-way (no profile: replace
        # it) or belonging to a user whose email change is under way (a profile: refuse).
        existing = self._identities.find(email)
        if existing is not None and self._users.get(existing) is not None:
            raise Conflict(EMAIL_TAKEN)
        if existing is not None:
            self._identities.delete(existing)
        return self._identities.create(email, name, password)

    def _remove_if_stored(self, user: dict[str, Any]) -> None:
        with contextlib.suppress(StaleUser):  # never stored (or already gone): nothing to undo
            self._users.remove(user)

    # --- read, list ---------------------------------------------------------------------

    def get(self, principal: Principal, user_id: str) -> dict[str, Any]:
        require_self_or_admin(principal, user_id)
        return model.public_view(self._existing(user_id))

    def list(self, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        require_admin(principal)
        after = decode_cursor(cursor) if cursor is not None else None
        users, next_key = self._users.list_page(limit, after)
        return {
            "items": [model.public_view(u) for u in users],
            "next_cursor": encode_cursor(next_key) if next_key else None,
        }

    # --- update, delete -----------------------------------------------------------------

    def update(self, principal: Principal, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set the given fields. The client sends no version, so a change stored meanwhile
        by someone else (the onboarding handlers, say) is no conflict for it: the change is
        re-applied on what is now stored, a few times, before the client hears 409."""
        require_self_or_admin(principal, user_id)
        changes = model.validate_changes(body)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            current = self._existing(user_id)
            changed = sorted(k for k, v in changes.items() if current.get(k) != v)
            if not changed:
                return model.public_view(current)
            new = {**current, **changes, "updated_at": self._clock()}
            new["version"] = current["version"] + 1
            try:
                self._replace(current, new)
                break
            except StaleUser:
                if attempt == WRITE_ATTEMPTS:
                    raise Conflict("The user changed while being updated; retry.") from None
        if "email" not in changed:
            return model.public_view(new)
        undo = [lambda: self._restore(user_id, {k: current.get(k) for k in changed})]
        try:
            # Undone even if the call reports a failure: it may have been applied.
            undo.append(lambda: self._identities.change_email(user_id, current["email"]))
            self._identities.change_email(user_id, new["email"])
        except Exception:
            logger.exception("update not completed; undoing it", user_id=user_id)
            self._undo(undo, "update")
            raise ServiceUnavailable("The update could not be completed; retry it.") from None
        return model.public_view(new)

    def delete(self, principal: Principal, user_id: str) -> None:
        """The sign-in identity goes first: a profile left behind by a failure can still be
        deleted by its owner's unexpired token or by an admin; a sign-in left without a
        profile could not."""
        require_self_or_admin(principal, user_id)
        user = self._existing(user_id)
        self._identities.delete(user_id)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self._users.remove(user)
                return
            except StaleUser:
                if attempt == WRITE_ATTEMPTS:
                    raise Conflict("The user changed while being deleted; retry.") from None
                user = self._existing(user_id)  # changed meanwhile: delete what is stored now

    # --- helpers ------------------------------------------------------------------------

    def _existing(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(user_id) if model.is_user_id(user_id) else None
        if user is None:
            raise NotFound(f"User {user_id[:64]!r} does not exist.")
        return user

    def _replace(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        """`replace`, with a taken email as 409; StaleUser is the caller's to handle."""
        try:
            self._users.replace(current, new)
        except EmailTaken:
            raise Conflict(EMAIL_TAKEN) from None

    def _restore(self, user_id: str, old_values: dict[str, Any]) -> None:
        """Undo an update: the fields it changed get their old values back, on top of
        whatever is stored now (a background change made meanwhile is kept)."""
        for _ in range(WRITE_ATTEMPTS):
            stored = self._users.get(user_id)
            if stored is None:
                return
            restored = {**stored, **old_values, "updated_at": self._clock()}
            restored["version"] = stored["version"] + 1
            try:
                self._users.replace(stored, restored)
                return
            except StaleUser:
                continue
        raise Conflict("The user changed while its update was being undone.")

    @staticmethod
    def _undo(steps: list[Callable[[], None]], what: str) -> None:
        """Run compensations newest first and stop at one that fails: the older steps are
        kept, so what is left is consistent and repaired by the next attempt (module
        docstring); undoing past a failure would break a user that still exists."""
        for step in reversed(steps):
            try:
                step()
            except Exception:
                logger.exception(f"could not undo a step of a failed {what}; stopping there")
                return
