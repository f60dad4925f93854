"""The data lake's pseudonyms: what makes the archive forget a user once the user is erased.

The data lake keeps telemetry for years, in objects nobody rewrites (they move to Glacier), so
it must never hold anything that names a person. Each user whose events are archived gets,
the first time, a `LakeIdentity`:

- a random `pseudonym` (`p-` and 32 hex digits) that stands for the user in the archive
  (`user_id`), so the reports still count and group a user's events;
- a random `secret` that keys the digests standing for the identifiers a client chooses for
  a user's events (`event_id`, `session_id`, `transaction_id`, in `encoding.LAKE_DIGESTS`):
  any of them may hold a name or an address, and even an opaque one is known elsewhere (the
  client's logs, a payment provider), where it could be matched against the archive. A
  digest is stable for the user (deduplication, sessions and velocity still work) and
  cannot be recomputed without the secret.

Both are stored only in the pseudonyms table (`user_digest` -> `pseudonym`, `secret`), which
only the stream processor (to archive) and the erasure (to forget) may use; nothing derives
an identity from a user id. The table is keyed by a SHA-256 digest of the user id, never the
id itself, so not even its tombstones name an erased user. The erasure replaces the item by
a tombstone (`erased_at`, and `expires_at` `TOMBSTONE_DAYS` later, the table's TTL): from
then on the user's archived events are anonymous, their pseudonym and digests pointing to
nobody (crypto-shredding, by deletion of the mapping rather than of a key). A late event of
an erased user (sent with a token still valid after the deletion, or a stream batch retried
for hours) finds the tombstone: its identity comes back `ERASED` (no pseudonym, no secret;
`encoding.pseudonymised` refuses it), and the processor, which looks the batch's users up
before it writes anything, drops the event (neither stored nor archived) instead of making a
new mapping. The table has no point-in-time recovery and must not be backed up: a restored
mapping would link an erased user back to the archive.

Concurrent processors agree on one identity per user: the first creates it with a conditional
put (`attribute_not_exists(user_digest)`); one whose put is refused gets the item there (the
winner's identity, or a tombstone) back from the refused put itself
(`ReturnValuesOnConditionCheckFailure`). Each process keeps the identities it has used
(`CachedPseudonyms`, at most `CACHE_ENTRIES`, each for at most `CACHE_MINUTES`), so a batch
usually costs no call. An identity cached before an erasure may still be used by that process
for the rest of its minutes: the events it archives then carry a pseudonym that nothing maps
to anyone, and the events it stores are found by the erasure's next pass (passes repeat every
15 minutes for 90). An erased user's tombstone is cached the same way.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core import aws, clock, ids
from chalicelib.core.aws import error_code, retryable
from chalicelib.core.backoff import Backoff
from chalicelib.core.dynamo import batch_get

PSEUDONYM_PREFIX = "p-"
TOMBSTONE_DAYS = 30
CACHE_ENTRIES = 10_000
CACHE_MINUTES = 15
DIGEST_HEX = 32  # 128 bits


@dataclass(frozen=True)
class LakeIdentity:
    """How one user appears in the data lake."""

    pseudonym: str
    secret: bytes = field(repr=False)
    #: The user was erased (a tombstone): never archived, never stored again.
    erased: bool = False

    def digest(self, name: str, value: str) -> str:
        """The keyed digest (HMAC-SHA256, 128 bits in hex) of the identifier `value` of the
        field `name`: the same for the same user, field and value; unlinkable without the
        secret."""
        message = f"{name}\x00{value}".encode()
        return hmac.digest(self.secret, message, "sha256").hex()[:DIGEST_HEX]


def user_digest(user_id: str) -> str:
    """How the pseudonyms table names a user: a digest, never the id (module docstring)."""
    return ids.digest(user_id)


def new_identity() -> LakeIdentity:
    return LakeIdentity(PSEUDONYM_PREFIX + secrets.token_hex(16), secrets.token_bytes(32))


#: What an erased user's tombstone gives: no pseudonym, no secret, marked `erased` (which
#: `encoding.pseudonymised` refuses: nothing is ever archived under it).
ERASED = LakeIdentity("", b"", erased=True)


class CachedPseudonyms:
    """A process's cache in front of a store: at most `max_entries` identities (the least
    recently used go first), each kept for at most `max_age` after it was read."""

    def __init__(
        self,
        store: Any,
        max_entries: int = CACHE_ENTRIES,
        max_age: timedelta = timedelta(minutes=CACHE_MINUTES),
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        if max_entries < 1:
            raise ValueError("the cache needs room for one identity at least")
        self._store = store
        self._max_entries = max_entries
        self._max_age = max_age
        self._now = now
        self._entries: OrderedDict[str, tuple[datetime, LakeIdentity]] = OrderedDict()

    def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
        moment = self._now()
        found: dict[str, LakeIdentity] = {}
        missing: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            entry = self._entries.get(user_id)
            if entry is not None and moment - entry[0] < self._max_age:
                self._entries.move_to_end(user_id)
                found[user_id] = entry[1]
            else:
                missing.append(user_id)
        if missing:
            fetched = self._store.identities(missing)
            for user_id in missing:
                found[user_id] = fetched[user_id]
                self._entries[user_id] = (moment, fetched[user_id])
                self._entries.move_to_end(user_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return found

    def __len__(self) -> int:
        return len(self._entries)


class DynamoPseudonyms:
    """The pseudonyms table: `user_digest` (key, `user_digest(user_id)`) -> `pseudonym`,
    `secret` (binary); a tombstone (`erased_at`, `expires_at`) once the user is erased."""

    def __init__(
        self,
        table: str,
        client: Callable[[], Any] = lambda: aws.client("dynamodb"),
        backoff: Backoff | None = None,
        new: Callable[[], LakeIdentity] = new_identity,
        tombstone_days: int = TOMBSTONE_DAYS,
    ) -> None:
        self._table = table
        self._client = client
        self._backoff = backoff or Backoff()
        self._new = new
        self._tombstone = timedelta(days=tombstone_days)

    def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
        """Each user's identity: read (one BatchGetItem per 100 users), created for those who
        have none (a conditional PutItem each), `ERASED` for an erased user."""
        wanted = {user_id: user_digest(user_id) for user_id in dict.fromkeys(user_ids)}
        keys = [{"user_digest": {"S": digest}} for digest in wanted.values()]
        items = batch_get(self._client(), self._table, keys, self._backoff, ConsistentRead=True)
        stored = {item["user_digest"]["S"]: item for item in items}
        found: dict[str, LakeIdentity] = {}
        for user_id, digest in wanted.items():
            item = stored.get(digest) or self._create(digest)
            found[user_id] = _identity(item) or ERASED
        return found

    def forget(self, user_id: str) -> bool:
        """Replace the user's identity by a tombstone (one PutItem): whether there was one.
        Idempotent: run again, it only moves the tombstone's expiry."""
        moment = clock.now()
        item = {
            "user_digest": {"S": user_digest(user_id)},
            "erased_at": {"S": clock.timestamp(moment)},
            "expires_at": {"N": str(int((moment + self._tombstone).timestamp()))},
        }
        old = self._call(
            lambda: self._client().put_item(
                TableName=self._table, Item=item, ReturnValues="ALL_OLD"
            )
        )
        return "pseudonym" in old.get("Attributes", {})

    def _create(self, digest: str) -> dict[str, Any]:
        """Store a new identity for the user unless an item (an identity or a tombstone) is
        there already; the item that holds now (the one there already comes back with the
        refused put itself)."""
        identity = self._new()
        item = {
            "user_digest": {"S": digest},
            "pseudonym": {"S": identity.pseudonym},
            "secret": {"B": identity.secret},
            "created_at": {"S": clock.timestamp()},
        }
        try:
            self._call(
                lambda: self._client().put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(user_digest)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Another processor got there first, or the user was erased meanwhile.
            return dict(exc.response["Item"])  # type: ignore[attr-defined]
        return item

    def _call(self, call: Callable[[], Any]) -> dict[str, Any]:
        """One call, retried with backoff while it fails for a reason worth a retry."""
        for attempt in range(self._backoff.max_attempts):
            if attempt:
                self._backoff.wait(attempt)
            try:
                return dict(call())
            except Exception as exc:
                if not retryable(exc) or attempt == self._backoff.max_attempts - 1:
                    raise
        raise RuntimeError("unreachable")


def _identity(item: dict[str, Any]) -> LakeIdentity | None:
    """The identity an item holds; None for a tombstone."""
    if "pseudonym" not in item:
        return None
    return LakeIdentity(item["pseudonym"]["S"], bytes(item["secret"]["B"]))
