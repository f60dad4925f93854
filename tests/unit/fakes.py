"""In-memory stand-ins for the users service's ports, with the same contracts as the adapters."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from chalicelib.users.identity import IdentityExists, WeakPassword
from chalicelib.users.model import email_key
from chalicelib.users.repository import EmailTaken, StaleUser, sort_key


class Faults:
    """Names of calls that raise instead of working (one-shot unless `sticky`)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.sticky = False

    def check(self, name: str) -> None:
        if name in self.failing:
            if not self.sticky:
                self.failing.discard(name)
            raise ConnectionError(f"{name} is down")


class InMemoryUserRepository:
    def __init__(self, faults: Faults | None = None) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}  # email key -> {status, user_id|reservation}
        self.faults = faults or Faults()
        self._reservations = itertools.count(1)
        #: user id -> changes another writer makes just before the next replace/remove.
        self.before_next_write: dict[str, dict[str, Any]] = {}

    def reserve_email(self, email: str) -> str:
        key = email_key(email)
        claim = self.claims.get(key)
        if claim is not None and not claim.get("stale"):
            raise EmailTaken()
        reservation = f"r{next(self._reservations)}"
        self.claims[key] = {"status": "pending", "reservation": reservation}
        return reservation

    def release_email(self, email: str, reservation: str) -> None:
        claim = self.claims.get(email_key(email))
        if claim and claim.get("reservation") == reservation:
            del self.claims[email_key(email)]

    def add(self, user: dict[str, Any], reservation: str) -> None:
        self.faults.check("add")
        claim = self.claims.get(email_key(user["email"]))
        if not claim or claim.get("reservation") != reservation:
            raise StaleUser()
        self.claims[email_key(user["email"])] = {"status": "active", "user_id": user["user_id"]}
        self.users[user["user_id"]] = copy.deepcopy(user)
        self.faults.check("add_reply")  # committed, but the caller hears a failure

    def email_owner(self, email: str) -> str | None:
        self.faults.check("email_owner")
        claim = self.claims.get(email_key(email)) or {}
        return claim.get("user_id") if claim.get("status") == "active" else None

    def get(self, user_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.users.get(user_id))

    def list_page(self, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        ordered = sorted(self.users.values(), key=sort_key, reverse=True)
        if after is not None:
            ordered = [u for u in ordered if sort_key(u) < after]
        page = ordered[:limit]
        return copy.deepcopy(page), sort_key(page[-1]) if len(ordered) > limit else None

    def concurrently(self, user_id: str, **changes: Any) -> None:
        """Another writer (the onboarding handler, say) changes the user first."""
        user = self.users[user_id]
        user.update(changes)
        user["version"] += 1

    def replace(self, current: dict[str, Any], new: dict[str, Any]) -> None:
        for user_id, changes in self.before_next_write.items():
            self.concurrently(user_id, **changes)
        self.before_next_write = {}
        stored = self.users.get(current["user_id"])
        if stored is None or stored["version"] != current["version"]:
            raise StaleUser()
        old_key, new_key = email_key(current["email"]), email_key(new["email"])
        if old_key != new_key:
            if new_key in self.claims:
                raise EmailTaken()
            del self.claims[old_key]
            self.claims[new_key] = {"status": "active", "user_id": new["user_id"]}
        self.users[new["user_id"]] = {k: v for k, v in new.items() if v is not None}

    def remove(self, user: dict[str, Any]) -> None:
        self.faults.check("remove")
        for user_id, changes in self.before_next_write.items():
            self.concurrently(user_id, **changes)
        self.before_next_write = {}
        stored = self.users.get(user["user_id"])
        if stored is None or stored["version"] != user["version"]:
            raise StaleUser()
        del self.users[user["user_id"]]
        self.claims.pop(email_key(user["email"]), None)


class InMemoryIdentities:
    """Cognito as the service sees it: one identity per email, a password policy."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.by_id: dict[str, dict[str, str]] = {}
        self.faults = faults or Faults()
        self._ids = itertools.count(1)
        #: identities whose refresh tokens were revoked (AdminUserGlobalSignOut)
        self.signed_out: set[str] = set()
        #: each identity's password (what it signs in with)
        self.passwords: dict[str, str] = {}

    def create(self, email: str, name: str, password: str) -> str:
        self.faults.check("create_identity")
        if any(email_key(i["email"]) == email_key(email) for i in self.by_id.values()):
            raise IdentityExists()
        if password == "Refused-by-C0gnito!":
            raise WeakPassword("Password does not conform to policy")
        user_id = f"00000000-0000-4000-8000-{next(self._ids):012d}"
        self.by_id[user_id] = {"email": email, "name": name}
        self.passwords[user_id] = password
        self.faults.check("create_identity_reply")  # made, but the caller hears a failure
        return user_id

    def sign_out_everywhere(self, user_id: str) -> None:
        self.faults.check("sign_out")
        if user_id in self.by_id:
            self.signed_out.add(user_id)

    def delete(self, user_id: str) -> None:
        self.faults.check("delete_identity")
        self.by_id.pop(user_id, None)

    def find(self, email: str) -> str | None:
        for user_id, identity in self.by_id.items():
            if email_key(identity["email"]) == email_key(email):
                return user_id
        return None

    def change_email(self, user_id: str, email: str) -> None:
        self.faults.check("change_email")
        self.by_id[user_id]["email"] = email

    def emails(self) -> set[str]:
        return {i["email"] for i in self.by_id.values()}


class InMemoryPendingRecords:
    """What waits for a mailed code (`users.pending`), in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.records.get(key))

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = {**copy.deepcopy(record), "attempts": 0}

    def use_attempt(self, key: str, code_digest: str, max_attempts: int, now: int) -> bool:
        record = self.records.get(key)
        if (
            record is None
            or record["code_digest"] != code_digest
            or record["attempts"] >= max_attempts
            or record["expires_at"] <= now
        ):
            return False
        record["attempts"] += 1
        return True

    def delete(self, key: str, code_digest: str | None = None) -> None:
        record = self.records.get(key)
        if record and (code_digest is None or record["code_digest"] == code_digest):
            del self.records[key]


class RecordingMailer:
    """Keeps what would be mailed: codes by address and purpose, notices, welcomes."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.codes: dict[tuple[str, str], str] = {}
        self.sent: list[tuple[str, str]] = []  # (address, kind)
        self.faults = faults or Faults()

    def send_code(self, email: str, code: str, purpose: str) -> None:
        self.faults.check("send_code")
        self.codes[(email_key(email), purpose)] = code
        self.sent.append((email, purpose))

    def send_already_registered(self, email: str) -> None:
        self.sent.append((email, "already-registered"))

    def code(self, email: str, purpose: str = "registration") -> str:
        return self.codes[(email_key(email), purpose)]
