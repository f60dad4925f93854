"""User search: `search` answers `GET /users/search`, `apply_stream_records` keeps the index
up to date from the users table's stream.

Matching words. A query word matches the index words it "expands" to: itself (EXACT), up
to MAX_EXPANSIONS vocabulary words it starts (PREFIX), the first in alphabetical order, as
Elasticsearch's `max_expansions` (type more letters to narrow a prefix), and up to
MAX_EXPANSIONS words one typo away (FUZZY), also by name. The vocabulary keeps words no user
has any more (`repository`): such a dead word must not take a slot from a live one, so a
word counts only if its postings Query finds something; the next candidates are looked at
instead, at most MAX_EXPANSION_CHECKS per query word and kind (so at most that many Queries,
most of them finding nothing, are spent on dead words; live words past that bound are not
found through this query word: a bound on what dead vocabulary can cost). The first wave
reads the first MAX_EXPANSIONS candidates of each kind; further waves only run when some were
dead, and probe (Limit 1) growing numbers of the next candidates.

One word. The word's MAX_POSTINGS_PER_WORD newest users, and the newest ones of each
expansion sharing what is left of POSTINGS_BUDGET (at least MIN_POSTINGS_PER_EXPANSION
each): a word held by thousands of users acts like a stop word, its older users are not
found through it (type a rarer word as well).

Several words: the most selective word supplies the candidates. Reading a common word's
postings in full would make a query cost what its most common word matches; intersecting
capped reads would lose the older users of the rare word. Instead the query words race:
each reads its matching words' postings newest first (resuming after the last key read), in
rounds of concurrent Queries, FIRST_READ per matching word first, then GROWTH times more per
round. A query word is finished when all its matching words are read to their end. Once one
is, with T postings, the others stop as soon as they hold more than T (their round is cut to
reach T + 1, split over their unfinished matching words); and no query word reads more than
WORD_BUDGET (its round is split likewise). The finished word with the fewest postings is
the source.

- Every word finished: the postings are intersected, as they are all known.
- Otherwise the source's users (at most MAX_CANDIDATES) are the candidates: their profiles
  are read (one BatchGetItem per 100, concurrently; the users table, as for any page) and
  each is scored on its own words (`text.distinct_words` of name, email and bio, as the
  indexer cuts them): per query word, the best tier among its matching words. The result
  page is cut from these profiles: no further read. A candidate whose profile lost a word
  since it was indexed (the stream not applied yet) or is gone is not a hit.
- Capped: no word finished within WORD_BUDGET postings (or the smallest finished one holds
  more than MAX_CANDIDATES): the postings read are intersected, so only users among the
  newest postings read of every word are found. That happens only when every query word is
  held by thousands of users.

Cost. Until one word finishes, every query word reads the same per matching word, so when
the most selective word s (T postings) finishes, the others have read at most about
GROWTH * T + FIRST_READ per matching word (s's largest matching word needed the previous
round's reads, which were less than T); then T + 1 at most. A common word's users are
nearly all in one index word (its own), so a query costs about (number of words) * GROWTH * T
postings, plus T profiles, and never more than WORD_BUDGET postings per query word, MAX_ROUNDS
rounds and MAX_CANDIDATES profiles: whatever the size of the common word. A query word whose
matching words hold at most MAX_CANDIDATES postings always finishes (exact search): its
unfinished matching words each hold more than what was read so far, so its reads stay below
WORD_BUDGET (>= 5 * MAX_CANDIDATES) without being split, and its rounds reach MAX_CANDIDATES
within MAX_ROUNDS. All these bounds depend only on what is read, so every page of one query
sees the same hits: pagination holds.

When the hits come from postings (one word, every word finished, capped), only the page's
profiles are read; a hit whose profile is gone (deleted, and the stream not yet applied) is
skipped, and the page is filled from the next hits, up to PROFILE_ROUNDS BatchGetItem calls.
`concurrent.futures` is imported when a search first needs a thread (cold start).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.auth.policy import require_admin
from chalicelib.auth.tokens import Principal
from chalicelib.core import correlation
from chalicelib.core.errors import BadRequest
from chalicelib.core.observability import logger
from chalicelib.core.pagination import parse_limit
from chalicelib.search.indexing import MAX_WORDS_PER_USER, SEARCHED_FIELDS, Posting, index_changes
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
    distinct_words,
    query_variants,
    tier,
    words,
)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

MAX_QUERY_LENGTH = 200
MAX_QUERY_WORDS = 5
MAX_EXPANSIONS = 50
#: Candidates looked at per query word and kind (prefix, typo) to find MAX_EXPANSIONS live
#: words: dead words cost at most MAX_EXPANSION_CHECKS - MAX_EXPANSIONS probes each.
MAX_EXPANSION_CHECKS = 100
#: Probes of the first further wave of candidates, when some were dead; doubled each wave.
CHECK_WAVE = 16
#: Words read per neighbourhood key: a key lists the words one deletion away from it, a few
#: dozen at most in practice (bounded by the alphabet times the word length).
NEAR_READ_LIMIT = 200
# One word.
MAX_POSTINGS_PER_WORD = 5_000
POSTINGS_BUDGET = 20_000
MIN_POSTINGS_PER_EXPANSION = 100
# Several words (module docstring).
FIRST_READ = 16
GROWTH = 4
WORD_BUDGET = 5_000
MAX_CANDIDATES = 1_000
MAX_ROUNDS = 8
PROFILE_BATCH = 100  # BatchGetItem's limit
PROFILE_ROUNDS = 3
MAX_WORKERS = 8

Postings = list[tuple[str, str]]


class SearchIndex(Protocol):
    def postings(self, word: str, limit: int, after: tuple[str, str] | None = None) -> Postings: ...
    def words_with_prefix(self, prefix: str, limit: int) -> list[str]: ...
    def words_near(self, variant: str, limit: int) -> list[str]: ...
    def unknown_words(self, words: Iterable[str]) -> set[str]: ...
    def write_postings(self, put: Iterable[Posting], delete: Iterable[Posting]) -> None: ...
    def add_words(self, words: Iterable[str]) -> None: ...
    def remove_words(self, words: Iterable[str]) -> None: ...


class Profiles(Protocol):
    """The public views of the users among some ids that exist, by id (`users.public`)."""

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


class _Reads:
    """The postings read so far per index word, newest first. A word is done when a read
    returned fewer than it asked for: nothing is left after what was read."""

    def __init__(self, index: SearchIndex) -> None:
        self._index = index
        self.postings: dict[str, Postings] = {}
        self.done: set[str] = set()

    def calls(self, asks: Mapping[str, int]) -> tuple[list[str], list[Callable[[], Postings]]]:
        """The Queries reading `asks[word]` more postings of each word not done."""
        wanted = [w for w, n in asks.items() if n > 0 and w not in self.done]
        return wanted, [self._call(w, asks[w]) for w in wanted]

    def _call(self, word: str, limit: int) -> Callable[[], Postings]:
        read = self.postings.get(word)
        after = read[-1] if read else None
        return lambda: self._index.postings(word, limit, after=after)

    def record(self, wanted: list[str], asks: Mapping[str, int], found: list[Postings]) -> None:
        for word, postings in zip(wanted, found, strict=True):
            self.postings.setdefault(word, []).extend(postings)
            if len(postings) < asks[word]:
                self.done.add(word)

    def size(self, matching: Iterable[str]) -> int:
        return sum(len(self.postings.get(w, ())) for w in matching)

    def finished(self, matching: Iterable[str]) -> bool:
        return all(w in self.done for w in matching)


class SearchService:
    def __init__(
        self, index: SearchIndex, profiles: Profiles | None, max_workers: int = MAX_WORKERS
    ):
        """`profiles` is None for the stream consumer, which only keeps the index up to date
        (and so has no access to the users table)."""
        self._index = index
        self._profiles_reader = profiles
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
        hits, profiles = self._hits(query)
        ranked = rank(hits)
        return self._page(ranked, start_after(ranked, after), limit, query, profiles)

    def _hits(self, query: list[str]) -> tuple[list[Hit], dict[str, dict[str, Any]] | None]:
        """Every user matching all query words, with its tiers; and the profiles of the
        hits when they had to be read to find them (module docstring)."""
        one = len(query) == 1
        reads = _Reads(self._index)
        own = dict.fromkeys(query, MAX_POSTINGS_PER_WORD if one else FIRST_READ)
        variants = sorted(
            {v for w in query if len(w) >= FUZZY_MIN_LENGTH for v in query_variants(w)}
        )
        wanted, own_calls = reads.calls(own)
        own_read, prefixed, near = self._gather(
            own_calls,
            [lambda w=w: self._index.words_with_prefix(w, MAX_EXPANSION_CHECKS + 1) for w in query],
            [lambda v=v: self._index.words_near(v, NEAR_READ_LIMIT) for v in variants],
        )
        reads.record(wanted, own, own_read)
        near_words = dict(zip(variants, near, strict=True))
        candidates = {
            query_word: candidate_words(query_word, starting, near_words)
            for query_word, starting in zip(query, prefixed, strict=True)
        }
        if one:
            first = sum(min(MAX_EXPANSIONS, len(c)) for c in candidates[query[0]])
            left = POSTINGS_BUDGET - reads.size(query)
            each = min(
                MAX_POSTINGS_PER_WORD, max(MIN_POSTINGS_PER_EXPANSION, left // max(first, 1))
            )
            matches = self._live_matches(candidates, reads, each)
            return _combine(matches, reads.postings), None
        matches = self._live_matches(candidates, reads, FIRST_READ)
        return self._race(query, matches, reads)

    def _live_matches(
        self,
        candidates: dict[str, tuple[list[str], list[str]]],
        reads: _Reads,
        ask: int,
    ) -> dict[str, dict[str, int]]:
        """Each query word's matching words with their tier: itself, then per kind the
        first MAX_EXPANSIONS candidates (in order) whose postings Query finds something,
        looking at no more than MAX_EXPANSION_CHECKS of them. The matching words end up
        with `ask` postings read (or all of theirs)."""
        matches = {query_word: {query_word: EXACT} for query_word in candidates}
        queues = [
            (query_word, kind, list(found[:MAX_EXPANSION_CHECKS]))
            for query_word, (prefixed, typos) in candidates.items()
            for kind, found in ((PREFIX, prefixed), (FUZZY, typos))
        ]
        free = dict.fromkeys(((q, kind) for q, kind, _ in queues), MAX_EXPANSIONS)
        probed: set[str] = set()
        wave = 0
        while True:
            taken: list[tuple[str, int, list[str]]] = []
            for query_word, kind, queue in queues:
                slots = free[query_word, kind]
                if slots <= 0 or not queue:
                    continue
                size = slots if wave == 0 else max(slots, CHECK_WAVE << (wave - 1))
                taken.append((query_word, kind, queue[:size]))
                del queue[:size]
            if not taken:
                break
            # the first wave reads what a matching word needs; later ones only probe
            limit = ask if wave == 0 else 1
            asks = {w: limit for _, _, batch in taken for w in batch if w not in reads.postings}
            if wave:
                probed |= asks.keys()
            self._read(reads, asks)
            for query_word, kind, batch in taken:
                for word in batch:
                    if free[query_word, kind] > 0 and reads.postings.get(word):
                        matches[query_word][word] = kind
                        free[query_word, kind] -= 1
            wave += 1
        chosen = {w for found in matches.values() for w in found}
        self._read(reads, {w: ask - len(reads.postings[w]) for w in sorted(probed & chosen)})
        return matches

    def _race(
        self, query: list[str], matches: dict[str, dict[str, int]], reads: _Reads
    ) -> tuple[list[Hit], dict[str, dict[str, Any]] | None]:
        """Read the query words' postings in rounds until the most selective one is known
        (module docstring), then find the hits from it."""
        for round_ in range(1, MAX_ROUNDS + 1):
            source = self._smallest_finished(query, matches, reads)
            bound = None if source is None else reads.size(matches[source])
            asks: dict[str, int] = {}
            for query_word in query:
                found = matches[query_word]
                size = reads.size(found)
                if reads.finished(found) or (bound is not None and size > bound):
                    continue
                room = (WORD_BUDGET if bound is None else min(WORD_BUDGET, bound + 1)) - size
                unfinished = [w for w in found if w not in reads.done]
                if room <= 0:
                    continue
                share = min(FIRST_READ * GROWTH**round_, math.ceil(room / len(unfinished)))
                for word in unfinished:
                    asks[word] = max(asks.get(word, 0), share)
            if not asks:
                break
            self._read(reads, asks)

        source = self._smallest_finished(query, matches, reads)
        if all(reads.finished(found) for found in matches.values()):
            return _combine(matches, reads.postings), None
        if source is None or reads.size(matches[source]) > MAX_CANDIDATES:
            logger.info("search capped", words=len(query))
            return _combine(matches, reads.postings), None
        created: dict[str, str] = {}
        for word in matches[source]:
            for created_at, user_id in reads.postings.get(word, []):
                created.setdefault(user_id, created_at)
        profiles = self._profiles_of(sorted(created))
        hits = []
        for user_id, profile in profiles.items():
            tiers = score(profile, matches.values())
            if tiers is not None:
                hits.append(hit_of(tiers, created[user_id], user_id))
        return hits, profiles

    @staticmethod
    def _smallest_finished(
        query: list[str], matches: dict[str, dict[str, int]], reads: _Reads
    ) -> str | None:
        finished = [q for q in query if reads.finished(matches[q])]
        return min(finished, key=lambda q: reads.size(matches[q]), default=None)

    @property
    def _profiles(self) -> Profiles:
        if self._profiles_reader is None:
            raise RuntimeError("this search service keeps the index only: it reads no profiles")
        return self._profiles_reader

    def _profiles_of(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The profiles of `user_ids` that exist, PROFILE_BATCH per call, concurrently."""
        chunks = [user_ids[i : i + PROFILE_BATCH] for i in range(0, len(user_ids), PROFILE_BATCH)]
        (found,) = self._gather([lambda c=c: self._profiles.get_many(c) for c in chunks])
        return {user_id: p for part in found for user_id, p in part.items()}

    def _page(
        self,
        ranked: list[Hit],
        start: int,
        limit: int,
        query: list[str],
        profiles: dict[str, dict[str, Any]] | None,
    ) -> dict[str, Any]:
        if profiles is not None:  # every hit's profile is there already
            batch = ranked[start : start + limit]
            more = start + limit < len(ranked)
            return {
                "items": [profiles[hit.user_id] for hit in batch],
                "next_cursor": encode_cursor(batch[-1], query) if more else None,
            }
        items: list[dict[str, Any]] = []
        position, last = start, None
        for _ in range(PROFILE_ROUNDS):
            batch = ranked[position : position + limit - len(items)]
            if not batch:
                break
            found = self._profiles.get_many([hit.user_id for hit in batch])
            items += [found[h.user_id] for h in batch if h.user_id in found]
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
        removed = self._prune(changes.removed_words)
        logger.info(
            "search index updated",
            records=len(records),
            postings_put=len(changes.put),
            postings_deleted=len(changes.delete),
            words_added=len(unknown),
            words_removed=removed,
        )

    def _prune(self, words: set[str]) -> int:
        """Drop from the vocabulary the words of removed users that no posting holds any
        more. A user indexed meanwhile with such a word is not lost: its posting is written
        before its indexer checks the vocabulary, and the words are looked at again after
        their removal, and written back whole if a posting appeared (or the indexer, finding
        them unknown, writes them itself). Returns how many were removed."""
        ordered = sorted(words)
        (held,) = self._gather([self._holds(w) for w in ordered])
        dead = [w for w, h in zip(ordered, held, strict=True) if not h]
        if not dead:
            return 0
        self._index.remove_words(dead)
        (held,) = self._gather([self._holds(w) for w in dead])
        revived = [w for w, h in zip(dead, held, strict=True) if h]
        if revived:
            self._index.add_words(revived)
        return len(dead) - len(revived)

    # --- helpers ------------------------------------------------------------------------

    def _holds(self, word: str) -> Callable[[], bool]:
        """A call answering whether any posting holds `word` (one Query of one item)."""
        return lambda: bool(self._index.postings(word, 1))

    def _read(self, reads: _Reads, asks: Mapping[str, int]) -> None:
        """One wave of concurrent postings Queries."""
        wanted, calls = reads.calls(asks)
        if calls:
            (found,) = self._gather(calls)
            reads.record(wanted, asks, found)

    def _gather(self, *groups: list[Callable[[], Any]]) -> list[list[Any]]:
        """Run every call of every group (concurrently when there are several), and return
        each group's results in order."""
        calls = [call for group in groups for call in group]
        if len(calls) <= 1 or self._max_workers <= 1:
            results = [call() for call in calls]
        else:
            # `carried`: the workers' log lines keep the request's correlation id.
            results = list(self._executor().map(correlation.carried(lambda call: call()), calls))
        out, start = [], 0
        for group in groups:
            out.append(results[start : start + len(group)])
            start += len(group)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="search")
            return self._pool


def candidate_words(
    query_word: str, starting: Sequence[str], near: dict[str, list[str]]
) -> tuple[list[str], list[str]]:
    """The words that may expand `query_word`, in the order they are taken: the vocabulary
    words it starts (`starting`, alphabetical), and the words one typo away among those
    listed under its variants (`near`), alphabetical. Whether they are live is not known."""
    prefixed = [w for w in starting if w != query_word]
    typos: list[str] = []
    if len(query_word) >= FUZZY_MIN_LENGTH:
        listed = {w for v in query_variants(query_word) for w in near.get(v, [])}
        typos = sorted(w for w in listed if tier(query_word, w) == FUZZY)
    return prefixed, typos


def score(profile: Mapping[str, Any], matches: Iterable[dict[str, int]]) -> list[int] | None:
    """A profile's best tier per query word (given each query word's matching words), from
    the words the indexer would give it; None if some query word matches none."""
    has = set(distinct_words([profile.get(f) for f in SEARCHED_FIELDS], MAX_WORDS_PER_USER))
    tiers = []
    for found in matches:
        best = min((t for w, t in found.items() if w in has), default=None)
        if best is None:
            return None
        tiers.append(best)
    return tiers


def _combine(matches: dict[str, dict[str, int]], postings: dict[str, Postings]) -> list[Hit]:
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
