"""User search: `search` answers `GET /users/search`, `apply_stream_records` keeps the index
up to date from the users table's stream.

A search reads, for each query word, the postings of the words that match it: the word
itself (EXACT), vocabulary words it starts (PREFIX) and words one typo away (FUZZY). It runs
in two waves of concurrent Queries: first each query word's own postings and its vocabulary
lookups (one prefix Query, one Query per neighbourhood variant), then the postings of the
words those lookups found. Users having every query word are ranked (`ranking`), the page
after the cursor is cut, and its profiles are read with one BatchGetItem.

What one search may read is bounded, whatever the data:
- at most MAX_QUERY_WORDS words and MAX_QUERY_LENGTH characters (else 400);
- at most MAX_EXPANSIONS prefix words and MAX_EXPANSIONS typo words per query word, the
  first in alphabetical order, as Elasticsearch's `max_expansions` (type more letters to
  narrow a prefix matching more words);
- a word's own postings: its MAX_POSTINGS_PER_WORD newest users; the expansions share what
  is left of POSTINGS_BUDGET, each reading at least MIN_POSTINGS_PER_EXPANSION newest users.
  Only a word held by thousands of users reaches these caps; it then acts like a stop word:
  the users beyond its newest ones are not found through it. All these bounds depend only on
  what is read, so the hits of every page of one query are the same: pagination holds.

A hit whose profile is gone (deleted, and the stream not yet applied) is skipped; the page
is then filled from the next hits, up to PROFILE_ROUNDS BatchGetItem calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from chalicelib.auth.policy import require_admin
from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import BadRequest
from chalicelib.core.observability import logger
from chalicelib.search.indexing import Posting, index_changes
from chalicelib.search.ranking import (
    Hit,
    decode_cursor,
    encode_cursor,
    hit_of,
    rank,
    start_after,
)
from chalicelib.search.text import (
    EXACT,
    FUZZY,
    FUZZY_MIN_LENGTH,
    PREFIX,
    query_variants,
    tier,
    words,
)
from chalicelib.users.model import public_view
from chalicelib.users.pagination import parse_limit

MAX_QUERY_LENGTH = 200
MAX_QUERY_WORDS = 5
MAX_EXPANSIONS = 50
#: Words read per neighbourhood key: a key lists the words one deletion away from it, a few
#: dozen at most in practice (bounded by the alphabet times the word length).
NEAR_READ_LIMIT = 200
MAX_POSTINGS_PER_WORD = 5_000
POSTINGS_BUDGET = 20_000
MIN_POSTINGS_PER_EXPANSION = 100
PROFILE_ROUNDS = 3
MAX_WORKERS = 8


class SearchIndex(Protocol):
    def postings(self, word: str, limit: int) -> list[tuple[str, str]]: ...
    def words_with_prefix(self, prefix: str, limit: int) -> list[str]: ...
    def words_near(self, variant: str, limit: int) -> list[str]: ...
    def unknown_words(self, words: Iterable[str]) -> set[str]: ...
    def write_postings(self, put: Iterable[Posting], delete: Iterable[Posting]) -> None: ...
    def add_words(self, words: Iterable[str]) -> None: ...


class Profiles(Protocol):
    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


def parse_query(raw: str | None) -> list[str]:
    """The distinct words of a query, in order, or BadRequest."""
    if raw is None or not raw.strip():
        raise BadRequest("q is required: the words to search for.")
    if len(raw) > MAX_QUERY_LENGTH:
        raise BadRequest(f"q must be at most {MAX_QUERY_LENGTH} characters.")
    found = list(dict.fromkeys(words(raw)))
    if not found:
        raise BadRequest("q has no word to search for (2 or more letters or digits).")
    if len(found) > MAX_QUERY_WORDS:
        raise BadRequest(f"q may have at most {MAX_QUERY_WORDS} words.")
    return found


class SearchService:
    def __init__(self, index: SearchIndex, profiles: Profiles, max_workers: int = MAX_WORKERS):
        self._index = index
        self._profiles = profiles
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # --- search -------------------------------------------------------------------------

    def search(
        self,
        principal: Principal,
        q_raw: str | None,
        limit_raw: str | None,
        cursor_raw: str | None,
    ) -> dict[str, Any]:
        """A page of the users matching every word of `q_raw`, best first. Admins only, as
        the users list: results show other users' emails and phone numbers."""
        require_admin(principal)
        query = parse_query(q_raw)
        limit = parse_limit(limit_raw)
        after = decode_cursor(cursor_raw, query) if cursor_raw is not None else None
        ranked = rank(self._hits(query))
        return self._page(ranked, start_after(ranked, after), limit, query)

    def _hits(self, query: list[str]) -> list[Hit]:
        """Every user matching all query words, with its tiers."""
        variants = sorted(
            {v for w in query if len(w) >= FUZZY_MIN_LENGTH for v in query_variants(w)}
        )
        own, prefixed, near = self._gather(
            [lambda w=w: self._index.postings(w, MAX_POSTINGS_PER_WORD) for w in query],
            [lambda w=w: self._index.words_with_prefix(w, MAX_EXPANSIONS + 1) for w in query],
            [lambda v=v: self._index.words_near(v, NEAR_READ_LIMIT) for v in variants],
        )
        postings = dict(zip(query, own, strict=True))
        near_words = dict(zip(variants, near, strict=True))
        matches = {
            query_word: matching_words(query_word, starting, near_words)
            for query_word, starting in zip(query, prefixed, strict=True)
        }

        expansions = sorted({w for found in matches.values() for w in found} - postings.keys())
        if expansions:
            left = POSTINGS_BUDGET - sum(len(p) for p in postings.values())
            each = min(
                MAX_POSTINGS_PER_WORD, max(MIN_POSTINGS_PER_EXPANSION, left // len(expansions))
            )
            (read,) = self._gather([lambda w=w: self._index.postings(w, each) for w in expansions])
            postings |= dict(zip(expansions, read, strict=True))
        return _combine(matches, postings)

    def _page(self, ranked: list[Hit], start: int, limit: int, query: list[str]) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        position, last = start, None
        for _ in range(PROFILE_ROUNDS):
            batch = ranked[position : position + limit - len(items)]
            if not batch:
                break
            found = self._profiles.get_many([hit.user_id for hit in batch])
            items += [public_view(found[h.user_id]) for h in batch if h.user_id in found]
            position, last = position + len(batch), batch[-1]
        more = position < len(ranked) and last is not None
        return {"items": items, "next_cursor": encode_cursor(last, query) if more else None}

    # --- index maintenance --------------------------------------------------------------

    def apply_stream_records(self, records: list[dict[str, Any]]) -> None:
        """Bring the index up to date with a batch of the users table's stream records (in
        stream order). Raises if a write could not be completed: the whole batch is then
        retried, which is safe (`indexing`)."""
        changes = index_changes(records)
        if not changes.put and not changes.delete:
            return
        self._index.write_postings(changes.put, changes.delete)
        unknown = self._index.unknown_words(changes.words)
        if unknown:
            self._index.add_words(unknown)
        logger.info(
            "search index updated",
            records=len(records),
            postings_put=len(changes.put),
            postings_deleted=len(changes.delete),
            words_added=len(unknown),
        )

    # --- helpers ------------------------------------------------------------------------

    def _gather(self, *groups: list[Callable[[], Any]]) -> list[list[Any]]:
        """Run every call of every group (concurrently when there are several), and return
        each group's results in order."""
        calls = [call for group in groups for call in group]
        if len(calls) <= 1 or self._max_workers <= 1:
            results = [call() for call in calls]
        else:
            results = list(self._executor().map(lambda call: call(), calls))
        out, start = [], 0
        for group in groups:
            out.append(results[start : start + len(group)])
            start += len(group)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="search")
            return self._pool


def matching_words(
    query_word: str, starting: Sequence[str], near: dict[str, list[str]]
) -> dict[str, int]:
    """The words that match `query_word`, with their tier: itself, then up to MAX_EXPANSIONS
    of the vocabulary words it starts (`starting`, in order), then up to MAX_EXPANSIONS of
    the words one typo away among those listed under its variants (`near`), by name."""
    found = {query_word: EXACT}
    found |= dict.fromkeys([w for w in starting if w != query_word][:MAX_EXPANSIONS], PREFIX)
    if len(query_word) >= FUZZY_MIN_LENGTH:
        listed = {w for v in query_variants(query_word) for w in near.get(v, [])}
        typos = sorted(w for w in listed if w not in found and tier(query_word, w) == FUZZY)
        found |= dict.fromkeys(typos[:MAX_EXPANSIONS], FUZZY)
    return found


def _combine(
    matches: dict[str, dict[str, int]], postings: dict[str, list[tuple[str, str]]]
) -> list[Hit]:
    """The users found for every query word, each with its best tier per query word."""
    created: dict[str, str] = {}
    best: list[dict[str, int]] = []
    for found in matches.values():
        tiers: dict[str, int] = {}
        for word, word_tier in found.items():
            for created_at, user_id in postings.get(word, []):
                created.setdefault(user_id, created_at)
                if word_tier < tiers.get(user_id, FUZZY + 1):
                    tiers[user_id] = word_tier
        best.append(tiers)
    best.sort(key=len)
    common = [u for u in best[0] if all(u in tiers for tiers in best[1:])] if best else []
    return [hit_of([tiers[u] for tiers in best], created[u], u) for u in common]
