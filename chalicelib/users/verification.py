"""One-time codes that prove a person reads the mail of an address: pure rules, no AWS.

A code is six random digits mailed to the address. Only its salted SHA-256 is stored, it
expires after `CODE_LIFETIME`, it works once, and after `MAX_ATTEMPTS` tries it is dead
(`try_code` uses up a try atomically before comparing, so parallel guesses share the same
few): with a million codes and five guesses, a guesser's odds are 1 in 200,000 per code,
and the quotas on mails per address bound how many codes a guesser can have sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.core.errors import ValidationFailed

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(hours=1)
MAX_ATTEMPTS = 5
#: What every refused code hears, whatever the reason (wrong, expired, used up, unknown
#: address): the answer must not tell a guesser which it was.
CODE_REFUSED = "The code is wrong or has expired. Ask for a new one by registering again."


@dataclass(frozen=True)
class IssuedCode:
    """A code as mailed (`code`) and as stored (`salt`, `digest`, `expires_at`)."""

    code: str
    salt: str
    digest: str
    expires_at: int  # epoch seconds

    def stored(self) -> dict[str, Any]:
        return {"code_salt": self.salt, "code_digest": self.digest, "expires_at": self.expires_at}


def issue(now: datetime) -> IssuedCode:
    import secrets  # here, not at import: only the functions that mail codes load it

    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    salt = secrets.token_hex(16)
    expires = int((now + CODE_LIFETIME).timestamp())
    return IssuedCode(code, salt, digest(salt, code), expires)


def digest(salt: str, code: str) -> str:
    import hashlib

    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def check_code_format(value: Any, field: str = "code") -> str:
    """The code as typed (spaces allowed), or a 400 saying what a code looks like."""
    code = value.replace(" ", "") if isinstance(value, str) else None
    if code is None or len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise ValidationFailed(
            "The code is not valid.", [{"field": field, "issue": f"must be {CODE_DIGITS} digits"}]
        )
    return code


def usable(record: dict[str, Any] | None, now: datetime) -> bool:
    """A stored code that may still be tried: not expired, attempts left."""
    return (
        record is not None
        and "code_digest" in record
        and int(record.get("expires_at", 0)) > now.timestamp()
        and int(record.get("attempts", 0)) < MAX_ATTEMPTS
    )


def matches(record: dict[str, Any], code: str) -> bool:
    """Compared in constant time, so timing tells nothing about the digits."""
    import hmac

    return hmac.compare_digest(digest(str(record["code_salt"]), code), str(record["code_digest"]))


class CodeRecords(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def use_attempt(self, key: str, code_digest: str, max_attempts: int, now: int) -> bool: ...


def try_code(records: CodeRecords, key: str, code: str, now: datetime) -> dict[str, Any] | None:
    """The record waiting under `key` if `code` is its code, else None (whatever the reason:
    none, expired, used up, wrong). One attempt is used up, conditionally on the code still
    being that one, unexpired and with attempts left, before the code is compared."""
    record = records.get(key)
    if not usable(record, now):
        return None
    assert record is not None
    digest_now = str(record["code_digest"])
    if not records.use_attempt(key, digest_now, MAX_ATTEMPTS, int(now.timestamp())):
        return None
    return record if matches(record, code) else None
