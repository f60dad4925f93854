"""The Users use cases once an account exists: read, list, update (with a mailed code to
move the email) and delete, and who may do each. Registration is `registration.py`.

Depends on small ports (a repository, an identity directory, codes waiting, a mailer,
quotas), so it runs in unit tests with in-memory fakes and in Lambda with DynamoDB, Cognito
and SES. Events are not sent from here: the users table's stream publishes them from what
was stored (`events.py`).

Moving the sign-in email is a saga over DynamoDB and Cognito: if Cognito refuses the new
address, the profile change is undone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from chalicelib.auth.policy import require_admin, require_self_or_admin
from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from chalicelib.core.observability import logger
from chalicelib.core.pagination import decode_cursor, encode_cursor
from chalicelib.core.quotas import Quotas
from chalicelib.users import model, verification
from chalicelib.users.model import email_key
from chalicelib.users.pending import PendingRecords, email_change_key
from chalicelib.users.registration import DEFAULT_LIMITS, RegistrationLimits, address_subject
from chalicelib.users.repository import EmailTaken, StaleUser


class UserRepository(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...
    def list_page(
        self, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...
    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None: ...
    def remove(self, user: dict[str, Any]) -> None: ...


class IdentityDirectory(Protocol):
    def sign_out_everywhere(self, user_id: str) -> None: ...
    def delete(self, user_id: str) -> None: ...
    def change_email(self, user_id: str, email: str) -> None: ...


class CodeMailer(Protocol):
    def send_code(self, email: str, code: str, purpose: str) -> None: ...


EMAIL_TAKEN = "A user with this email is already registered."
CODE_REFUSED = "The code is wrong or has expired. Ask for a new one by changing the email again."
#: Optimistic writes tried before a 409: enough to ride out the background handlers' changes.
WRITE_ATTEMPTS = 3


class UsersService:
    def __init__(
        self,
        repository: UserRepository,
        identities: IdentityDirectory,
        pending: PendingRecords,
        mailer: CodeMailer,
        quotas: Quotas,
        limits: RegistrationLimits = DEFAULT_LIMITS,
        clock: Callable[[], str] = clock.timestamp,
    ) -> None:
        self._users = repository
        self._identities = identities
        self._pending = pending
        self._mailer = mailer
        self._quotas = quotas
        self._limits = limits
        self._clock = clock

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
        """Set the given fields. A new email address is not set here: a code is mailed to
        it, and `confirm_email` sets it once the code comes back (the answer shows it as
        `pending_email`); only a change of case applies at once."""
        require_self_or_admin(principal, user_id)
        changes = model.validate_changes(body)
        new_email = changes.get("email")
        current = self._existing(user_id)
        moves = new_email is not None and email_key(new_email) != email_key(current["email"])
        if moves:
            del changes["email"]
        user = self._apply(user_id, changes) if changes else model.public_view(current)
        if moves:
            assert new_email is not None
            self._request_email_change(user_id, new_email)
            user["pending_email"] = new_email
        return user

    def confirm_email(
        self, principal: Principal, user_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The code mailed to the new address came back: it becomes the sign-in email."""
        require_self_or_admin(principal, user_id)
        code = model.validate_email_confirmation(body)
        self._existing(user_id)
        self._quotas.take(f"user:{user_id}", [(self._limits.email_confirmations, 1)])
        key = email_change_key(user_id)
        pending = verification.try_code(self._pending, key, code, clock.now())
        if pending is None:
            raise _code_refused()
        user = self._apply(user_id, {"email": pending["email"]})
        self._pending.delete(key, pending["code_digest"])
        return user

    def _request_email_change(self, user_id: str, email: str) -> None:
        """A code to `email`: bounded per address and per account (a day), so no account
        can make the app mail strangers at will."""
        self._quotas.take(f"user:{user_id}", [(self._limits.email_changes, 1)])
        self._quotas.take(address_subject(email), [(self._limits.mails, 1)])
        code = verification.issue(clock.now())
        self._pending.put(email_change_key(user_id), {"email": email, **code.stored()})
        try:
            self._mailer.send_code(email, code.code, "email-change")
        except Exception:
            logger.exception("email change code not sent", user_id=user_id)
            raise ServiceUnavailable("The code could not be mailed; retry the change.") from None

    def _apply(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Store `changes`. The client sends no version, so a change stored meanwhile by
        someone else (the onboarding handlers, say) is no conflict for it: the change is
        re-applied on what is now stored, a few times, before the client hears 409."""
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
        """Close the account now; the rest of the user's data goes by the erasure.

        In the request, so that the account is unusable at once, however long the erasure
        waits in its queue: the refresh tokens are revoked (AdminUserGlobalSignOut) and the
        sign-in identity deleted, so nobody can sign in or get a new token; then the profile
        and its email claim are removed. That removal is the commit point: its stream record
        publishes `user-deleted`, whose erasure (`erasure.py`, idempotent, retried,
        dead-lettered) removes everything else, the identity again included. The identity
        goes first: a profile left behind by a failure can still be deleted by its owner's
        unexpired token or by an admin; a sign-in left without a profile could not. It is
        deleted, not only disabled: a disabled identity would keep the address and name in
        Cognito until the erasure, and look to registration like a sign-up in progress."""
        require_self_or_admin(principal, user_id)
        user = self._existing(user_id)
        self._identities.sign_out_everywhere(user_id)
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


def _code_refused() -> ValidationFailed:
    return ValidationFailed(CODE_REFUSED, [{"field": "code", "issue": "refused"}])
