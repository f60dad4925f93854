"""What a batch of users-table stream records changes in the search index. Pure.

The index holds one posting per (word, user), keyed by the user's `created_at` and id; the
postings a user should have are a function of its current profile (`postings_of`). A batch
of records is folded per user, in stream order, into one set of postings to put and one to
delete:

    put    = the postings of the user's last image (none if the last record is a REMOVE);
    delete = every posting of any image of the user in the batch, old or new, minus `put`.

The words of a user whose last record is a REMOVE are also listed (`removed_words`): the
service drops from the vocabulary those no other user has (`service`), so that nothing
derived from a deleted user's name, email or bio stays in the index.

That is the state the records would leave if applied one by one, reached with the fewest
writes and with no key written twice (BatchWriteItem refuses duplicate keys); it also covers
a `created_at` that changed, since the posting key holds it. Every posting of the current
image is put again, not only the new ones, so that any change repairs an index that missed
earlier records. Applying a batch again gives the same index: it can be retried whole.

Only user items count (the users domain tells them by key: `users.public.user_id_of_key`);
email claims and anything else sharing the table are ignored, as are images without a
well-formed `created_at` (never written by this app: they could not be paged through).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from chalicelib.core.clock import is_timestamp
from chalicelib.search.text import distinct_words
from chalicelib.users.public import user_id_of_key

SEARCHED_FIELDS = ("name", "email", "bio")
#: Far above what a valid profile yields (name 100, email 254, bio 1000 characters make at
#: most ~450 words): a bound on the writes one record can cause, whatever the table holds.
MAX_WORDS_PER_USER = 600


class Posting(NamedTuple):
    word: str
    created_at: str
    user_id: str


@dataclass
class IndexChanges:
    put: set[Posting] = field(default_factory=set)
    delete: set[Posting] = field(default_factory=set)
    #: The words of the users removed by the batch that no put posting keeps.
    removed_words: set[str] = field(default_factory=set)

    @property
    def words(self) -> set[str]:
        """The words the vocabulary must hold after this change."""
        return {posting.word for posting in self.put}


def postings_of(user_id: str, image: Mapping[str, Any] | None) -> set[Posting]:
    """The postings a user with this stream image (AttributeValue JSON) should have."""
    if not image:
        return set()
    created_at = _string(image, "created_at")
    if created_at is None or not is_timestamp(created_at):
        return set()
    texts = [_string(image, name) for name in SEARCHED_FIELDS]
    return {
        Posting(word, created_at, user_id)
        for word in distinct_words(texts, limit=MAX_WORDS_PER_USER)
    }


def index_changes(records: Iterable[Mapping[str, Any]]) -> IndexChanges:
    """The writes that bring the index up to date with `records` (in stream order)."""
    by_user: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        user_id = _user_id(record)
        if user_id is not None:
            by_user.setdefault(user_id, []).append(record)
    changes = IndexChanges()
    for user_id, user_records in by_user.items():
        seen: set[Posting] = set()
        for record in user_records:
            stream = record.get("dynamodb", {})
            seen |= postings_of(user_id, stream.get("OldImage"))
            seen |= postings_of(user_id, stream.get("NewImage"))
        last = user_records[-1]
        final = (
            set()
            if last.get("eventName") == "REMOVE"
            else postings_of(user_id, last.get("dynamodb", {}).get("NewImage"))
        )
        changes.put |= final
        changes.delete |= seen - final
        if last.get("eventName") == "REMOVE":
            changes.removed_words |= {posting.word for posting in seen}
    changes.removed_words -= changes.words
    return changes


def _user_id(record: Mapping[str, Any]) -> str | None:
    """The user a record is about, or None for any other item of the table."""
    key = record.get("dynamodb", {}).get("Keys", {}).get("pk", {}).get("S", "")
    return user_id_of_key(key)


def _string(image: Mapping[str, Any], name: str) -> str | None:
    value = image.get(name)
    return value.get("S") if isinstance(value, Mapping) else None
