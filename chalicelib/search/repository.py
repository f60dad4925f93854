"""The search index table in DynamoDB.

The index table has a `pk`/`sk` key and nothing else; items carry no other attribute:

- posting, one per (word, user): `W#<word>` / `<created_at>#<user_id>`. A word's postings
  are one partition, newest user last, so a Query read backwards lists its users newest first.
- prefix entry, one per word: `P#<first two characters>` / `<word>`. `begins_with(sk, q)`
  lists the words that start with q.
- neighbourhood entry, one per word and variant (`text.index_variants`): `D#<variant>` /
  `<word>`. Querying a query word's variants lists the words that may be one typo away.

Prefix and neighbourhood entries form the vocabulary, shared by all users and written once
per word: the neighbourhood entries first, then the prefix entry, which thereby marks the
word as complete and is what `unknown_words` checks. Vocabulary is deleted only for the
words of a removed user that nobody else has (`remove_words`, in the opposite order: the
prefix entry first); a word a changed profile no longer has stays, and costs one Query that
finds no posting; the service skips such words when
it picks a query word's expansions, looking at a bounded number of them (`service`). A
periodic clean-up could drop them; nothing depends on it.

Every read is a Query of one partition or a BatchGetItem of known keys: nothing here reads a
partition that does not belong to a word of the query, so the cost never grows with the
number of users, only with the matches. Batch writes and reads retry what DynamoDB leaves
unprocessed, and throttled calls, with backoff (`core.dynamo`), and raise if some is still
left, so the stream batch is retried. The profiles of a result page come from the users
domain (`users.public`). The write pool (`concurrent.futures`) is imported when the indexer
first needs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from chalicelib.core import aws, correlation
from chalicelib.core.backoff import MAX_ATTEMPTS, Backoff
from chalicelib.core.dynamo import WRITE_BATCH, batch_get, batch_write
from chalicelib.search.indexing import Posting
from chalicelib.search.text import index_variants

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

WRITE_WORKERS = 8


def posting_key(posting: Posting) -> dict[str, Any]:
    return {
        "pk": {"S": f"W#{posting.word}"},
        "sk": {"S": f"{posting.created_at}#{posting.user_id}"},
    }


def prefix_key(word: str) -> dict[str, Any]:
    return {"pk": {"S": f"P#{word[:2]}"}, "sk": {"S": word}}


def neighbourhood_key(variant: str, word: str) -> dict[str, Any]:
    return {"pk": {"S": f"D#{variant}"}, "sk": {"S": word}}


class _Batches:
    """BatchWriteItem / BatchGetItem (`core.dynamo`), the write calls running concurrently."""

    def __init__(
        self,
        client: Callable[[], Any],
        sleep: Callable[[float], None],
        max_attempts: int,
        write_workers: int = WRITE_WORKERS,
    ) -> None:
        self._client = client
        self._backoff = Backoff(sleep, max_attempts)
        self._write_workers = write_workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def write(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        """Apply PutRequest/DeleteRequest items (no key twice), 25 per call, the calls
        running concurrently: a stream batch of long bios is thousands of items, too slow
        one call after the other for the function's timeout. Returns when all are applied."""
        chunks = [requests[i : i + WRITE_BATCH] for i in range(0, len(requests), WRITE_BATCH)]
        if len(chunks) <= 1 or self._write_workers <= 1:
            for chunk in chunks:
                self._write_chunk(table, chunk)
            return
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._write_workers, "search-write")
        # `carried`: the workers' log lines keep the invocation's correlation id.
        write = correlation.carried(lambda chunk: self._write_chunk(table, chunk))
        list(self._pool.map(write, chunks))

    def _write_chunk(self, table: str, chunk: Sequence[dict[str, Any]]) -> None:
        batch_write(self._client(), table, chunk, self._backoff).raise_if_any(table)

    def get(
        self, table: str, keys: Sequence[dict[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """The items found for `keys` (in no particular order), 100 keys per call."""
        return batch_get(self._client(), table, keys, self._backoff, **options)


class DynamoSearchIndex:
    def __init__(
        self,
        table_name: str,
        client: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
        write_workers: int = WRITE_WORKERS,
    ) -> None:
        self._table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))
        self._batches = _Batches(self._client, sleep, max_attempts, write_workers)

    # --- reads --------------------------------------------------------------------------

    def postings(
        self, word: str, limit: int, after: tuple[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """Up to `limit` users having `word`, newest first, as (created_at, user_id); with
        `after`, the ones that come after that posting (older): a read resumed by key."""
        values = {":pk": {"S": f"W#{word}"}}
        condition = None
        if after is not None:
            values[":after"] = {"S": "#".join(after)}
            condition = "sk < :after"
        keys = self._query(values, limit, condition=condition, newest_first=True)
        return [tuple(key.split("#", 1)) for key in keys]  # type: ignore[misc]

    def words_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` vocabulary words starting with `prefix` (2+ characters), in order."""
        values = {":pk": {"S": f"P#{prefix[:2]}"}, ":prefix": {"S": prefix}}
        return self._query(values, limit, condition="begins_with(sk, :prefix)")

    def words_near(self, variant: str, limit: int) -> list[str]:
        """Up to `limit` vocabulary words listed under the neighbourhood key `variant`."""
        return self._query({":pk": {"S": f"D#{variant}"}}, limit)

    def unknown_words(self, words: Iterable[str]) -> set[str]:
        """The words whose vocabulary entries are not (completely) written yet."""
        wanted = sorted(set(words))
        found = self._batches.get(
            self._table, [prefix_key(w) for w in wanted], ProjectionExpression="sk"
        )
        return set(wanted) - {item["sk"]["S"] for item in found}

    # --- writes -------------------------------------------------------------------------

    def write_postings(self, put: Iterable[Posting], delete: Iterable[Posting]) -> None:
        """Put and delete postings; the two sets must not share a key (one call may hold
        both, and BatchWriteItem refuses a key twice)."""
        requests = [{"DeleteRequest": {"Key": posting_key(p)}} for p in sorted(delete)]
        requests += [{"PutRequest": {"Item": posting_key(p)}} for p in sorted(put)]
        self._batches.write(self._table, requests)

    def add_words(self, words: Iterable[str]) -> None:
        """Write the vocabulary entries of `words`: every neighbourhood entry first, then the
        prefix entries, which mark the words complete (module docstring)."""
        ordered = sorted(set(words))
        neighbourhood = [
            {"PutRequest": {"Item": neighbourhood_key(variant, word)}}
            for word in ordered
            for variant in sorted(index_variants(word))
        ]
        self._batches.write(self._table, neighbourhood)
        self._batches.write(
            self._table, [{"PutRequest": {"Item": prefix_key(word)}} for word in ordered]
        )

    def remove_words(self, words: Iterable[str]) -> None:
        """Delete the vocabulary entries of `words`: the prefix entries first, so a word
        being removed counts as unknown (an indexer adding it meanwhile writes it again
        whole), then the neighbourhood entries."""
        ordered = sorted(set(words))
        self._batches.write(
            self._table, [{"DeleteRequest": {"Key": prefix_key(word)}} for word in ordered]
        )
        self._batches.write(
            self._table,
            [
                {"DeleteRequest": {"Key": neighbourhood_key(variant, word)}}
                for word in ordered
                for variant in sorted(index_variants(word))
            ],
        )

    # --- helpers ------------------------------------------------------------------------

    def _query(
        self,
        values: dict[str, Any],
        limit: int,
        condition: str | None = None,
        newest_first: bool = False,
    ) -> list[str]:
        """The sort keys of up to `limit` items of one partition, following pages."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk" + (f" AND {condition}" if condition else ""),
            "ExpressionAttributeValues": values,
            "ProjectionExpression": "sk",
            "ScanIndexForward": not newest_first,
        }
        keys: list[str] = []
        while len(keys) < limit:
            response = self._client().query(**request, Limit=limit - len(keys))
            keys += [item["sk"]["S"] for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last
        return keys
