"""Registration in two steps: `register` mails a code, `confirm` proves the address and only
then makes the account.

`register` answers the same whatever the address: a free address gets a code; an address
that already has an account gets a notice instead (no code, nothing changed), so the answer
tells nobody who is registered. The sign-in identity is made at once but disabled and
unverified, so the password goes to Cognito only and is never stored here; it cannot sign
in before the code is confirmed. Asking again replaces the identity and the code.

`confirm` with the right code is a saga over Cognito and DynamoDB: reserve the email,
enable and verify the identity, store the profile (whose stream then announces
`user-created`: welcome email, onboarding, search). A failing step undoes the ones before
it, newest first, and stops at an undo that fails, so what is left is always a state the
next attempt repairs.

Bounds: registrations and confirmations per client address (hour), and codes or notices
mailed per address (day): beyond them the answer is a 429, except that mails over an
address's bound are silently not sent (the answer must not differ).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.core import clock
from chalicelib.core.errors import Conflict, ServiceUnavailable, ValidationFailed
from chalicelib.core.observability import logger
from chalicelib.core.quotas import Quota, QuotaExceeded, Quotas
from chalicelib.users import model, verification
from chalicelib.users.identity import IdentityExists, IdentityGone, WeakPassword
from chalicelib.users.pending import PendingRecords, signup_key
from chalicelib.users.repository import EmailTaken, StaleUser

EMAIL_TAKEN = "A user with this email is already registered."


class Users(Protocol):
    def email_owner(self, email: str) -> str | None: ...
    def reserve_email(self, email: str) -> str: ...
    def release_email(self, email: str, reservation: str) -> None: ...
    def add(self, user: dict[str, Any], reservation: str) -> None: ...
    def get(self, user_id: str) -> dict[str, Any] | None: ...
    def remove(self, user: dict[str, Any]) -> None: ...


class PendingIdentities(Protocol):
    def create(self, email: str, name: str, password: str, enabled: bool = True) -> str: ...
    def find(self, email: str) -> str | None: ...
    def delete(self, user_id: str) -> None: ...
    def activate(self, user_id: str) -> None: ...
    def deactivate(self, user_id: str) -> None: ...


class CodeMailer(Protocol):
    def send_code(self, email: str, code: str, purpose: str) -> None: ...
    def send_already_registered(self, email: str) -> None: ...


@dataclass(frozen=True)
class RegistrationLimits:
    per_client_hour: int = 20
    confirmations_per_client_hour: int = 60
    mails_per_address_day: int = 5

    @property
    def registrations(self) -> Quota:
        return Quota("registrations", self.per_client_hour, 3600)

    @property
    def confirmations(self) -> Quota:
        return Quota("confirmations", self.confirmations_per_client_hour, 3600)

    @property
    def mails(self) -> Quota:
        return Quota("verification-mails", self.mails_per_address_day, 86400)


DEFAULT_LIMITS = RegistrationLimits()


def address_subject(email: str) -> str:
    """A quota's subject for an address: a digest, so no address is kept in the counters."""
    import hashlib

    return "address:" + hashlib.sha256(model.email_key(email).encode()).hexdigest()[:32]


def accepted(email: str) -> dict[str, Any]:
    """The one answer `register` gives, whatever the address."""
    return {
        "email": email,
        "status": "verification_pending",
        "message": "If this address can be registered, a code was mailed to it. Send it with "
        "POST /register/confirm {email, code} within "
        f"{int(verification.CODE_LIFETIME.total_seconds() // 60)} minutes.",
    }


class RegistrationService:
    def __init__(
        self,
        users: Users,
        pending: PendingRecords,
        identities: PendingIdentities,
        mailer: CodeMailer,
        quotas: Quotas,
        limits: RegistrationLimits = DEFAULT_LIMITS,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self._users = users
        self._pending = pending
        self._identities = identities
        self._mailer = mailer
        self._quotas = quotas
        self._limits = limits
        self._now = now

    def register(self, body: dict[str, Any], client: str) -> dict[str, Any]:
        fields, password = model.validate_registration(body)
        self._quotas.take(f"client:{client}", [(self._limits.registrations, 1)])
        email = fields["email"]
        try:
            self._quotas.take(address_subject(email), [(self._limits.mails, 1)])
        except QuotaExceeded:
            logger.warning("registration mails for an address over its bound; none sent")
            return accepted(email)
        try:
            if self._users.email_owner(email) is not None:
                self._mailer.send_already_registered(email)
                return accepted(email)
            user_id = self._pending_identity(email, fields["name"], password)
            if user_id is None:  # the address belongs to a user after all
                self._mailer.send_already_registered(email)
                return accepted(email)
            code = verification.issue(self._now())
            record = {**fields, "user_id": user_id, **code.stored()}
            self._pending.put(signup_key(email), record)
            self._mailer.send_code(email, code.code, "registration")
        except WeakPassword as exc:
            raise ValidationFailed(
                "The password was refused.", [{"field": "password", "issue": str(exc)}]
            ) from None
        except Exception:
            logger.exception("registration failed", email_domain=email.split("@")[-1])
            raise ServiceUnavailable("Registration could not be completed; retry it.") from None
        return accepted(email)

    def confirm(self, body: dict[str, Any], client: str) -> dict[str, Any]:
        email, code = _confirmation(body)
        self._quotas.take(f"client:{client}", [(self._limits.confirmations, 1)])
        key = signup_key(email)
        signup = self._pending.get(key)
        if not verification.usable(signup, self._now()):
            raise _refused()
        assert signup is not None
        if not verification.matches(signup, code):
            self._pending.count_miss(key, signup["code_digest"])
            raise _refused()
        user = self._create_account(signup)
        self._pending.delete(key, signup["code_digest"])
        return model.public_view(user)

    # --- steps --------------------------------------------------------------------------

    def _pending_identity(self, email: str, name: str, password: str) -> str | None:
        """A disabled identity for `email`, replacing one left by an earlier attempt; None
        if the address's identity belongs to a user (an email change under way)."""
        try:
            return self._identities.create(email, name, password, enabled=False)
        except IdentityExists:
            pass
        existing = self._identities.find(email)
        if existing is not None and self._users.get(existing) is not None:
            return None
        if existing is not None:
            self._identities.delete(existing)
        return self._identities.create(email, name, password, enabled=False)

    def _create_account(self, signup: dict[str, Any]) -> dict[str, Any]:
        email, user_id = signup["email"], signup["user_id"]
        try:
            reservation = self._users.reserve_email(email)
        except EmailTaken:
            raise Conflict(EMAIL_TAKEN) from None
        undo: list[Callable[[], None]] = [lambda: self._users.release_email(email, reservation)]
        try:
            # Undone even if the call reports a failure: it may have been applied.
            undo.append(lambda: self._identities.deactivate(user_id))
            self._identities.activate(user_id)
            now = clock.timestamp(self._now())
            profile = {k: signup[k] for k in model.EDITABLE_FIELDS if k in signup}
            user = {**profile, "user_id": user_id, "created_at": now, "updated_at": now}
            user["version"] = 1
            undo.append(lambda: self._remove_if_stored(user))
            self._users.add(user, reservation)
        except Exception as exc:
            logger.exception("confirmation failed; undoing it", user_id=user_id)
            _undo(undo)
            if isinstance(exc, EmailTaken):
                raise Conflict(EMAIL_TAKEN) from None
            if isinstance(exc, IdentityGone):
                # The sign-in of this sign-up is gone (an undone attempt whose profile was
                # erased took it along): the password went with it, so ask again.
                self._pending.delete(signup_key(email), signup["code_digest"])
                raise _refused() from None
            raise ServiceUnavailable("The account could not be created; retry it.") from None
        return user

    def _remove_if_stored(self, user: dict[str, Any]) -> None:
        with contextlib.suppress(StaleUser):  # never stored (or already gone): nothing to undo
            self._users.remove(user)


def _confirmation(body: dict[str, Any]) -> tuple[str, str]:
    problems = [
        {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in ("email", "code")
    ]
    email = body.get("email")
    if not isinstance(email, str) or not model.is_email(email):
        problems.append({"field": "email", "issue": "must be a valid email address"})
    try:
        code = verification.check_code_format(body.get("code"))
    except ValidationFailed as exc:
        problems += exc.details
        code = ""
    if problems:
        raise ValidationFailed("The confirmation is not valid.", problems)
    assert isinstance(email, str)
    return email.strip(), code


def _refused() -> ValidationFailed:
    return ValidationFailed(verification.CODE_REFUSED, [{"field": "code", "issue": "refused"}])


def _undo(steps: list[Callable[[], None]]) -> None:
    """Compensations newest first, stopping at one that fails (module docstring)."""
    for step in reversed(steps):
        try:
            step()
        except Exception:
            logger.exception("could not undo a step of a failed confirmation; stopping there")
            return
