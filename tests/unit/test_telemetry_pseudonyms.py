"""The data lake's pseudonyms (chalicelib/telemetry/pseudonyms.py): the identities and their
digests, the per-process cache, and the pseudonyms table against moto provisioned from
infra/resources.json (one identity per user, whoever creates it first; tombstones)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib.core import clock
from chalicelib.core.backoff import Backoff
from chalicelib.telemetry.pseudonyms import (
    ERASED,
    CachedPseudonyms,
    DynamoPseudonyms,
    LakeIdentity,
    new_identity,
    user_digest,
)
from tests.unit.test_telemetry_support import NOW

TABLE = "serverless-app-dev-telemetry-pseudonyms"
NO_SLEEP = Backoff(sleep=lambda _: None, max_attempts=4)


def test_identities_are_random_and_their_digests_keyed_per_user_and_field() -> None:
    one, other = new_identity(), new_identity()
    assert one.pseudonym.startswith("p-") and len(one.pseudonym) == 34
    assert one.pseudonym != other.pseudonym and one.secret != other.secret
    assert one.digest("session_id", "s-1") == one.digest("session_id", "s-1")  # stable
    assert one.digest("session_id", "s-1") != other.digest("session_id", "s-1")  # per user
    assert one.digest("session_id", "s-1") != one.digest("event_id", "s-1")  # per field
    assert len(one.digest("event_id", "x")) == 32
    assert "secret" not in repr(one) and str(one.secret) not in repr(one)  # never logged


class CountingStore:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.made: dict[str, LakeIdentity] = {}

    def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
        self.asked.append(sorted(user_ids))
        return {u: self.made.setdefault(u, new_identity()) for u in user_ids}


def test_the_cache_asks_the_store_only_for_what_it_lacks_or_holds_too_long() -> None:
    moment = {"now": NOW}
    store = CountingStore()
    cache = CachedPseudonyms(store, max_entries=3, max_age=timedelta(minutes=15),
                             now=lambda: moment["now"])  # fmt: skip
    first = cache.identities(["a", "b"])
    assert cache.identities(["b", "a"]) == first and store.asked == [["a", "b"]]
    assert cache.identities(["a", "c"])["c"] == store.made["c"]
    assert store.asked[-1] == ["c"]
    cache.identities(["d"])  # over 3: the least recently used ("b") goes
    assert len(cache) == 3
    cache.identities(["b"])
    assert store.asked[-1] == ["b"]
    moment["now"] = NOW + timedelta(minutes=15)  # too old: read again
    cache.identities(["d"])
    assert store.asked[-1] == ["d"]
    with pytest.raises(ValueError):
        CachedPseudonyms(store, max_entries=0)


def test_a_store_failure_is_not_cached() -> None:
    class Down:
        def identities(self, user_ids: Collection[str]) -> dict[str, LakeIdentity]:
            raise RuntimeError("down")

    cache = CachedPseudonyms(Down())
    with pytest.raises(RuntimeError):
        cache.identities(["a"])
    assert len(cache) == 0


def items() -> dict[str, dict[str, Any]]:
    """The table's items by the user id whose digest keys them (the test knows the ids)."""
    scanned = boto3.client("dynamodb").scan(TableName=TABLE)["Items"]
    known = {user_digest(u): u for u in ("u1", "u2", "gone", "never-seen")}
    return {known.get(i["user_digest"]["S"], i["user_digest"]["S"]): i for i in scanned}


def test_an_identity_is_created_once_and_read_back(aws: dict[str, str]) -> None:
    store = DynamoPseudonyms(TABLE)
    first = store.identities(["u1", "u2", "u1"])
    assert set(first) == {"u1", "u2"} and first["u1"] != first["u2"]
    again = DynamoPseudonyms(TABLE).identities(["u2", "u1"])  # another process
    assert again == first
    stored = items()
    assert stored["u1"]["pseudonym"]["S"] == first["u1"].pseudonym
    assert bytes(stored["u1"]["secret"]["B"]) == first["u1"].secret
    many = store.identities([f"u{n}" for n in range(250)])  # over BatchGetItem's 100 keys
    assert len(many) == 250 and many["u1"] == first["u1"] and len(items()) == 250


def test_two_processors_creating_at_once_agree_on_one_identity(aws: dict[str, str]) -> None:
    real = boto3.client("dynamodb")
    other = DynamoPseudonyms(TABLE)

    class Racing:
        """The other processor's put lands between our read and our put; the winner's item
        comes back with our refused put, so nothing is read again."""

        def put_item(self, **kwargs: Any) -> Any:
            other.identities(["u1"])
            return real.put_item(**kwargs)

        def get_item(self, **kwargs: Any) -> Any:
            raise AssertionError("the refused put returns the item: no GetItem")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    racing = Racing()
    ours = DynamoPseudonyms(TABLE, client=lambda: racing).identities(["u1"])
    assert ours == other.identities(["u1"])
    assert len(items()) == 1


def test_a_user_erased_between_the_read_and_the_put_gets_no_new_mapping(
    aws: dict[str, str],
) -> None:
    real = boto3.client("dynamodb")
    erasure = DynamoPseudonyms(TABLE)

    class Erasing:
        def put_item(self, **kwargs: Any) -> Any:
            erasure.forget("gone")  # the tombstone lands between our read and our put
            return real.put_item(**kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    erasing = Erasing()
    assert DynamoPseudonyms(TABLE, client=lambda: erasing).identities(["gone"]) == {"gone": ERASED}
    assert set(items()["gone"]) == {"user_digest", "erased_at", "expires_at"}


def test_forget_leaves_a_tombstone_and_an_erased_user_gets_no_new_mapping(
    aws: dict[str, str],
) -> None:
    store = DynamoPseudonyms(TABLE)
    before = store.identities(["gone"])["gone"]
    assert store.forget("gone") is True
    tombstone = items()["gone"]
    assert "gone" not in str(tombstone)  # keyed by a digest: not even the tombstone names it
    assert set(tombstone) == {"user_digest", "erased_at", "expires_at"}
    # 30 days after the moment it was erased (read from the tombstone itself: the test's
    # clock runs on, and a second may turn between the erasure and this line).
    erased_at = clock.parse(tombstone["erased_at"]["S"])
    assert int(tombstone["expires_at"]["N"]) == int((erased_at + timedelta(days=30)).timestamp())
    assert erased_at <= clock.now()
    late = [store.identities(["gone"])["gone"] for _ in range(2)]
    assert late == [ERASED, ERASED] and before != ERASED  # no pseudonym, no secret
    assert all(identity.erased for identity in late) and not before.erased
    assert items()["gone"] == tombstone
    assert store.forget("gone") is False  # idempotent
    assert store.forget("never-seen") is False
    assert set(items()["never-seen"]) == {"user_digest", "erased_at", "expires_at"}


def test_throttled_reads_and_writes_are_retried_then_raise(aws: dict[str, str]) -> None:
    real = boto3.client("dynamodb")

    class Throttled:
        def __init__(self, times: int) -> None:
            self.left = {"batch_get_item": times, "put_item": times}

        def __getattr__(self, name: str) -> Any:
            call = getattr(real, name)

            def maybe(**kwargs: Any) -> Any:
                if self.left.get(name, 0) > 0:
                    self.left[name] -= 1
                    error = {"Code": "ProvisionedThroughputExceededException", "Message": "x"}
                    raise ClientError({"Error": error}, name)
                return call(**kwargs)

            return maybe

    briefly = Throttled(3)
    store = DynamoPseudonyms(TABLE, client=lambda: briefly, backoff=NO_SLEEP)
    assert "u1" in store.identities(["u1"])
    stuck = Throttled(4)
    with pytest.raises(ClientError):
        DynamoPseudonyms(TABLE, client=lambda: stuck, backoff=NO_SLEEP).identities(["u2"])
