"""The nightly sweep of abandoned sign-ups: the disabled Cognito identities that
`POST /register` made and nobody confirmed, deleted with what waits for their code.

`POST /register` makes the identity at once (disabled, its email unverified) and stores the
code under `SIGNUP#<email>`, which the table's TTL removes after the code's life. The
identity has no TTL: without this sweep it would keep the address and the name typed (maybe
someone else's address) for ever, unless the same address registered again.

A disabled identity is abandoned, and deleted, when all of these hold:
- Cognito created it more than `CODE_LIFETIME` + `MARGIN` before the schedule fired, so no
  code of it can still be confirmed (nor a confirmation still be running);
- it has no profile: a disabled identity with one is an account that some undo disabled,
  never deleted here (a warning says so, for a person to look at);
- no usable sign-up (`verification.usable`) for its email points at it.
The sign-up record is deleted too if it still names that identity (conditional on its code,
so a newer sign-up of the address stays). Both deletions are idempotent: a retried run, or a
registration of the same address meanwhile (which replaces the identity itself), is safe.

Cognito lists the disabled identities page by page (ListUsers filters on one attribute and
never on dates, so the age is checked here). The run stops before its time runs out; the
next night starts over, and what was deleted is no longer listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.core.observability import logger
from chalicelib.users import verification
from chalicelib.users.identity import DisabledIdentity
from chalicelib.users.pending import signup_key

#: Beyond the code's life, so that a confirmation begun just before it ended has finished.
MARGIN = timedelta(hours=2)
#: ListUsers' largest page.
PAGE_SIZE = 60
#: Pages one run reads at most (60 x 500 = 30,000 disabled identities).
MAX_PAGES = 500
#: Stop taking new identities when less than this is left of the function's time.
SAFETY_MARGIN_MS = 20_000


class DisabledIdentities(Protocol):
    def disabled_before(
        self, moment: datetime, limit: int, token: str | None = None
    ) -> tuple[list[DisabledIdentity], str | None]: ...
    def delete(self, user_id: str) -> None: ...


class SignupRecords(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def delete(self, key: str, code_digest: str | None = None) -> None: ...


class Profiles(Protocol):
    def get(self, user_id: str) -> dict[str, Any] | None: ...


@dataclass
class SignupSweepReport:
    pages: int = 0
    examined: int = 0  # disabled identities old enough to be considered
    deleted: int = 0
    signups_deleted: int = 0
    awaiting_code: int = 0  # a usable sign-up still points at it
    with_profile: int = 0  # an account disabled by some undo: left for a person
    errors: int = 0
    out_of_time: bool = False  # stopped for the function's timeout: the next night goes on
    page_bound: bool = False  # stopped after MAX_PAGES: the next night goes on


class SignupSweepIncomplete(Exception):
    """Some identities could not be examined or deleted (logged one by one): the run fails,
    so the schedule's retries and alarms see it; what was deleted stays deleted."""


class SignupSweep:
    def __init__(
        self,
        identities: DisabledIdentities,
        signups: SignupRecords,
        profiles: Profiles,
        page_size: int = PAGE_SIZE,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._identities = identities
        self._signups = signups
        self._profiles = profiles
        self._page_size = page_size
        self._max_pages = max_pages

    def run(self, at: datetime, remaining_ms: Callable[[], int] | None = None) -> SignupSweepReport:
        """Delete the sign-ups abandoned as of `at` (when the schedule fired, so a retried
        run decides the same), within the function's remaining time."""
        created_before = at - (verification.CODE_LIFETIME + MARGIN)
        report = SignupSweepReport()
        token: str | None = None
        while True:
            if self._out_of_time(remaining_ms, report):
                break
            if report.pages == self._max_pages:
                report.page_bound = True
                break
            try:
                page, token = self._identities.disabled_before(
                    created_before, self._page_size, token
                )
            except Exception:
                logger.exception("the disabled identities could not be listed")
                report.errors += 1
                break
            report.pages += 1
            for identity in page:
                if self._out_of_time(remaining_ms, report):
                    return self._finish(report)
                report.examined += 1
                self._sweep_safely(identity, at, report)
            if token is None:
                break
        return self._finish(report)

    @staticmethod
    def _out_of_time(remaining_ms: Callable[[], int] | None, report: SignupSweepReport) -> bool:
        if remaining_ms is not None and remaining_ms() < SAFETY_MARGIN_MS:
            report.out_of_time = True
        return report.out_of_time

    def _sweep_safely(
        self, identity: DisabledIdentity, at: datetime, report: SignupSweepReport
    ) -> None:
        try:
            self._sweep(identity, at, report)
        except Exception:
            logger.exception("an abandoned sign-up could not be swept", user_id=identity.user_id)
            report.errors += 1

    def _sweep(self, identity: DisabledIdentity, at: datetime, report: SignupSweepReport) -> None:
        user_id = identity.user_id
        if self._profiles.get(user_id) is not None:
            logger.warning(
                "a disabled identity has a profile (an account some undo disabled?); left "
                "alone: look at it",
                user_id=user_id,
            )
            report.with_profile += 1
            return
        key = signup_key(identity.email) if identity.email else None
        signup = self._signups.get(key) if key else None
        ours = signup is not None and signup.get("user_id") == user_id
        if ours and verification.usable(signup, at):
            report.awaiting_code += 1
            return
        self._identities.delete(user_id)
        report.deleted += 1
        digest = signup.get("code_digest") if ours and signup is not None else None
        if key and digest:
            # Only while it holds this code: a newer sign-up of the address stays.
            self._signups.delete(key, str(digest))
            report.signups_deleted += 1

    def _finish(self, report: SignupSweepReport) -> SignupSweepReport:
        from aws_lambda_powertools.metrics import MetricUnit

        from chalicelib.core.observability import emit_metrics

        counts = {k: int(v) for k, v in asdict(report).items()}
        emit_metrics(
            [(f"AbandonedSignups{name.title().replace('_', '')}", MetricUnit.Count, value)
             for name, value in counts.items()],
            job="sweep_abandoned_signups",
        )  # fmt: skip
        logger.info("abandoned sign-ups swept", **counts)
        if report.errors:
            raise SignupSweepIncomplete(f"{report.errors} abandoned sign-ups could not be swept")
        return report
