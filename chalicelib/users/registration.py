"""Registration in two steps: `register` mails a code, `confirm` proves the address, sets
the password and only then makes the account.

`register` answers the same whatever the address: a free address gets a code; an address
that already has an account gets a notice instead (no code, nothing changed), so the answer
tells nobody who is registered. It touches no Cognito user and takes no password: whoever
asks first cannot choose the credentials of an account someone else will confirm (asking
again only replaces the profile fields and the code, and voids the previous code).

`confirm` takes the code and the password, so the credentials are set by whoever reads the
address's mail. Each try uses up one of the code's attempts atomically before it is
compared, so guesses sent in parallel get no more than `MAX_ATTEMPTS` comparisons between
them. The right code starts a saga over Cognito and DynamoDB: reserve the email, create the
sign-in identity (email verified), store the profile (whose stream then announces
`user-created`: welcome email, onboarding, search). A failing step undoes the ones before
it, newest first, and stops at an undo that fails, so what is left is always a state the
next attempt repairs.

Bounds: registrations and confirmations per client network (hour), and codes or notices
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
from chalicelib.users.identity import IdentityExists, WeakPassword
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


class Identities(Protocol):
    def create(self, email: str, name: str, password: str) -> str: ...
    def find(self, email: str) -> str | None: ...
    def delete(self, user_id: str) -> None: ...


class CodeMailer(Protocol):
    def send_code(self, email: str, code: str, purpose: str) -> None: ...
    def send_already_registered(self, email: str) -> None: ...


@dataclass(frozen=True)
class RegistrationLimits:
    per_client_hour: int = 20
    confirmations_per_client_hour: int = 60
    mails_per_address_day: int = 5
    #: Codes one account may have mailed to new addresses, and tries at them (email change).
    email_changes_per_user_day: int = 5
    email_confirmations_per_user_hour: int = 20

    @property
    def registrations(self) -> Quota:
        return Quota("registrations", self.per_client_hour, 3600)

    @property
    def confirmations(self) -> Quota:
        return Quota("confirmations", self.confirmations_per_client_hour, 3600)

    @property
    def mails(self) -> Quota:
        return Quota("verification-mails", self.mails_per_address_day, 86400)

    @property
    def email_changes(self) -> Quota:
        return Quota("email-changes", self.email_changes_per_user_day, 86400)

    @property
    def email_confirmations(self) -> Quota:
        return Quota("email-confirmations", self.email_confirmations_per_user_hour, 3600)


DEFAULT_LIMITS = RegistrationLimits()


def client_subject(client: str) -> str:
    """A quota's subject for a client address: its network for IPv6 (a /64 is one
    subscriber's, who can pick any address in it), the address itself for IPv4."""
    import ipaddress

    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return f"client:{client}"
    if address.version == 6:
        return f"client:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"client:{address}"


def address_subject(email: str) -> str:
    """A quota's subject for an address (the counters name subjects by a digest only:
    `core.quotas`)."""
    return f"address:{model.email_key(email)}"


def accepted(email: str) -> dict[str, Any]:
    """The one answer `register` gives, whatever the address."""
    return {
        "email": email,
        "status": "verification_pending",
        "message": "If this address can be registered, a code was mailed to it. Send it, with "
        "the account's password, to POST /register/confirm {email, code, password} within "
        f"{int(verification.CODE_LIFETIME.total_seconds() // 60)} minutes.",
    }


class RegistrationService:
    def __init__(
        self,
        users: Users,
        pending: PendingRecords,
        identities: Identities,
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
        fields = model.validate_signup(body)
        self._quotas.take(client_subject(client), [(self._limits.registrations, 1)])
        email = fields["email"]
        try:
            self._quotas.take(address_subject(email), [(self._limits.mails, 1)])
        except QuotaExceeded:
            logger.warning("registration mails for an address over its bound; none sent")
            return accepted(email)
        mailing = False  # once a mail may have gone, its use of the quota stays
        try:
            if self._users.email_owner(email) is not None:
                mailing = True
                self._mailer.send_already_registered(email)
                return accepted(email)
            code = verification.issue(self._now())
            self._pending.put(signup_key(email), {**fields, **code.stored()})
            mailing = True
            self._mailer.send_code(email, code.code, "registration")
        except Exception:
            logger.exception("registration failed", email_domain=email.split("@")[-1])
            if not mailing:
                self._give_back_mail(email)
            raise ServiceUnavailable("Registration could not be completed; retry it.") from None
        return accepted(email)

    def _give_back_mail(self, email: str) -> None:
        """A registration that failed before any mail was sent gives its mail back, so the
        client's retry (it was told 503: retry) is not refused by the address's bound."""
        try:
            self._quotas.give_back(address_subject(email), self._limits.mails, 1)
        except Exception:  # AWS still failing: the use stays counted, as before
            logger.warning("registration mail use not given back", exc_info=True)

    def confirm(self, body: dict[str, Any], client: str) -> dict[str, Any]:
        email, code, password = _confirmation(body)
        self._quotas.take(client_subject(client), [(self._limits.confirmations, 1)])
        key = signup_key(email)
        signup = verification.try_code(self._pending, key, code, self._now())
        if signup is None:
            raise _refused()
        user = self._create_account(signup, password)
        self._pending.delete(key, signup["code_digest"])
        return model.public_view(user)

    # --- steps --------------------------------------------------------------------------

    def _identity(self, email: str, name: str, password: str) -> str:
        """The sign-in identity for `email`, replacing one left without a profile by an
        earlier attempt that failed half-way; Conflict if the address's identity belongs to
        a user (an email change under way)."""
        try:
            return self._identities.create(email, name, password)
        except IdentityExists:
            pass
        existing = self._identities.find(email)
        if existing is not None and self._users.get(existing) is not None:
            raise Conflict(EMAIL_TAKEN)
        if existing is not None:
            self._identities.delete(existing)
        return self._identities.create(email, name, password)

    def _create_account(self, signup: dict[str, Any], password: str) -> dict[str, Any]:
        email = signup["email"]
        try:
            reservation = self._users.reserve_email(email)
        except EmailTaken:
            raise Conflict(EMAIL_TAKEN) from None
        undo: list[Callable[[], None]] = [lambda: self._users.release_email(email, reservation)]
        try:
            user_id = self._identity(email, signup["name"], password)
            undo.append(lambda: self._identities.delete(user_id))
            now = clock.timestamp(self._now())
            profile = {k: signup[k] for k in model.EDITABLE_FIELDS if k in signup}
            user = {**profile, "user_id": user_id, "created_at": now, "updated_at": now}
            user["version"] = 1
            # Undone even if `add` reports a failure: it may have committed all the same.
            undo.append(lambda: self._remove_if_stored(user))
            self._users.add(user, reservation)
        except (WeakPassword, Conflict) as exc:
            _undo(undo)
            if isinstance(exc, Conflict):
                raise
            raise ValidationFailed(
                "The password was refused.", [{"field": "password", "issue": str(exc)}]
            ) from None
        except Exception as exc:
            logger.exception("confirmation failed; undoing it", email_domain=email.split("@")[-1])
            _undo(undo)
            if isinstance(exc, EmailTaken):
                raise Conflict(EMAIL_TAKEN) from None
            raise ServiceUnavailable("The account could not be created; retry it.") from None
        return user

    def _remove_if_stored(self, user: dict[str, Any]) -> None:
        with contextlib.suppress(StaleUser):  # never stored (or already gone): nothing to undo
            self._users.remove(user)


def _confirmation(body: dict[str, Any]) -> tuple[str, str, str]:
    """Email, code and password, or a 400 listing every problem at once."""
    return model.validate_confirmation(body)


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
