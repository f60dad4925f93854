"""From stream records to index writes: the pure diff (no AWS).

Also the helpers that build Lambda's DynamoDB stream records, used by the other search tests.
"""

from __future__ import annotations

import itertools
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.search.indexing import (
    MAX_WORDS_PER_USER,
    IndexChanges,
    Posting,
    index_changes,
    postings_of,
)

_sequence = itertools.count(1)


def user(n: int, **fields: Any) -> dict[str, Any]:
    stamp = f"2026-11-26T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000Z"
    return {
        "user_id": f"00000000-0000-4000-8000-{n:012d}",
        "email": f"user{n}@example.com",
        "name": f"User {n}",
        "preferences": {"newsletter": True},
        "created_at": stamp,
        "updated_at": stamp,
        "version": 1,
        **fields,
    }


def image(profile: dict[str, Any]) -> dict[str, Any]:
    """The user item as the users table stores it, in AttributeValue JSON."""
    serializer = TypeSerializer()
    item = {
        **profile,
        "pk": f"USER#{profile['user_id']}",
        "entity": "USER",
        "created_key": f"{profile['created_at']}#{profile['user_id']}",
    }
    return {k: serializer.serialize(v) for k, v in item.items() if v is not None}


def record(
    event: str, key: str, old: dict[str, Any] | None = None, new: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One record of a Lambda DynamoDB stream event (NEW_AND_OLD_IMAGES)."""
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": 1764115200,
        "Keys": {"pk": {"S": key}},
        "SequenceNumber": str(next(_sequence)),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if old is not None:
        stream["OldImage"] = old
    if new is not None:
        stream["NewImage"] = new
    return {
        "eventID": str(next(_sequence)),
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026",
        "dynamodb": stream,
    }


def insert(profile: dict[str, Any]) -> dict[str, Any]:
    return record("INSERT", f"USER#{profile['user_id']}", new=image(profile))


def modify(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return record("MODIFY", f"USER#{old['user_id']}", old=image(old), new=image(new))


def remove(profile: dict[str, Any]) -> dict[str, Any]:
    return record("REMOVE", f"USER#{profile['user_id']}", old=image(profile))


def claim(email: str, user_id: str = "00000000-0000-4000-8000-000000000001") -> dict[str, Any]:
    """An email claim item's INSERT: same table, not a user."""
    item = {"pk": {"S": f"EMAIL#{email}"}, "user_id": {"S": user_id}, "status": {"S": "active"}}
    return record("INSERT", f"EMAIL#{email}", new=item)


def words_of(changes: set[Posting]) -> set[str]:
    return {p.word for p in changes}


# --- postings of one image ----------------------------------------------------------------


def test_postings_cover_name_email_and_bio_only() -> None:
    alice = user(1, name="Alice Smith", email="Alice.Smith@Example.com", bio="Climbs; bakes.")
    alice["phone"] = "+14155550123"
    found = postings_of(alice["user_id"], image(alice))
    assert words_of(found) == {"alice", "smith", "example", "com", "climbs", "bakes"}
    assert {(p.created_at, p.user_id) for p in found} == {(alice["created_at"], alice["user_id"])}


def test_an_image_without_a_well_formed_created_at_has_no_postings() -> None:
    assert postings_of(user(1)["user_id"], image(user(1, created_at="yesterday"))) == set()
    assert postings_of(user(1)["user_id"], image(user(1, created_at=None))) == set()
    assert postings_of(user(1)["user_id"], None) == set()


def test_words_per_user_are_capped() -> None:
    bio = " ".join(f"w{n}" for n in range(2 * MAX_WORDS_PER_USER))
    assert len(postings_of(user(1)["user_id"], image(user(1, bio=bio)))) == MAX_WORDS_PER_USER


# --- diffs of record batches --------------------------------------------------------------


def test_insert_puts_every_word() -> None:
    changes = index_changes([insert(user(1, name="Ann Lee"))])
    assert words_of(changes.put) == {"ann", "lee", "user1", "example", "com"}
    assert changes.delete == set()
    assert changes.words == words_of(changes.put)


def test_modify_deletes_only_the_words_that_went_and_puts_the_current_ones() -> None:
    old = user(1, name="Ann Lee", bio="gardening")
    new = {**old, "name": "Ann Park", "bio": None}
    changes = index_changes([modify(old, new)])
    assert words_of(changes.delete) == {"lee", "gardening"}
    assert words_of(changes.put) == {"ann", "park", "user1", "example", "com"}


def test_remove_deletes_every_word() -> None:
    changes = index_changes([remove(user(1, name="Ann Lee"))])
    assert changes.put == set()
    assert words_of(changes.delete) == {"ann", "lee", "user1", "example", "com"}


def test_a_changed_created_at_moves_every_posting() -> None:
    old = user(1, name="Ann Lee")
    new = {**old, "created_at": user(2)["created_at"]}
    changes = index_changes([modify(old, new)])
    assert {p.created_at for p in changes.delete} == {old["created_at"]}
    assert {p.created_at for p in changes.put} == {new["created_at"]}
    assert words_of(changes.delete) == words_of(changes.put)


def test_records_of_one_user_fold_in_stream_order() -> None:
    v1 = user(1, name="Ann Lee")
    v2 = {**v1, "name": "Ann Park"}
    v3 = {**v1, "name": "Ann Quinn"}
    changes = index_changes([insert(v1), modify(v1, v2), modify(v2, v3)])
    assert words_of(changes.put) == {"ann", "quinn", "user1", "example", "com"}
    assert words_of(changes.delete) == {"lee", "park"}
    # created then removed in the same batch: nothing stays
    gone = index_changes([insert(v1), modify(v1, v2), remove(v2)])
    assert gone.put == set()
    assert words_of(gone.delete) == {"ann", "lee", "park", "user1", "example", "com"}
    # removed, then the same id written again (never happens, but stays correct)
    back = index_changes([remove(v1), insert(v3)])
    assert words_of(back.put) == {"ann", "quinn", "user1", "example", "com"}
    assert words_of(back.delete) == {"lee"}


def test_users_do_not_affect_each_other() -> None:
    a, b = user(1, name="Ann Lee"), user(2, name="Ann Lee")
    changes = index_changes([insert(a), remove(b)])
    assert {p.user_id for p in changes.put} == {a["user_id"]}
    assert {p.user_id for p in changes.delete} == {b["user_id"]}


def test_email_claims_and_foreign_items_are_ignored() -> None:
    records = [
        claim("ann@example.com"),
        record("REMOVE", "EMAIL#ann@example.com", old={"pk": {"S": "EMAIL#ann@example.com"}}),
        record("INSERT", "USER#not-a-uuid", new=image(user(1))),
        record("INSERT", "SOMETHING#else", new=image(user(1))),
        {"eventName": "INSERT"},
    ]
    assert index_changes(records) == IndexChanges()


# --- the fold equals applying records one by one ----------------------------------------------

_names = st.sampled_from(["Ann Lee", "Ann Park", "Bo Quinn", "Lee Park", None])


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid stream histories of two users: INSERT, MODIFYs, maybe REMOVE, maybe again."""
    records: list[dict[str, Any]] = []
    current: dict[int, dict[str, Any] | None] = {1: None, 2: None}
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.sampled_from([1, 2]))
        name = draw(_names)
        old = current[n]
        if old is None:
            current[n] = user(n, name=name or "Someone")
            records.append(insert(current[n]))
        elif draw(st.booleans()) and name is None:
            records.append(remove(old))
            current[n] = None
        else:
            current[n] = {**old, "bio": name, "version": old["version"] + 1}
            records.append(modify(old, current[n]))
    return records


@settings(max_examples=200)
@given(histories(), st.integers(1, 8))
def test_applying_in_batches_gives_the_state_of_the_last_images(
    records: list[dict[str, Any]], batch: int
) -> None:
    """Applying the diffs of consecutive batches to a set of postings leaves exactly the
    postings of each user's last image, however the stream is cut into batches, and applying
    a batch twice changes nothing more."""
    state: set[Posting] = set()
    for start in range(0, len(records), batch):
        changes = index_changes(records[start : start + batch])
        assert not changes.put & changes.delete
        for _ in range(2):  # a retried batch
            state = (state - changes.delete) | changes.put
    expected: set[Posting] = set()
    last: dict[str, dict[str, Any]] = {}
    for r in records:
        last[r["dynamodb"]["Keys"]["pk"]["S"]] = r
    for key, r in last.items():
        if r["eventName"] != "REMOVE":
            expected |= postings_of(key.removeprefix("USER#"), r["dynamodb"]["NewImage"])
    assert state == expected
