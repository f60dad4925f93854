"""The search service over an in-memory index with the DynamoDB adapter's key layout: input
validation, agreement with a brute-force search, bounds, and pages whose profiles are gone."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import BadRequest, Forbidden
from chalicelib.search import service as search_service_module
from chalicelib.search.indexing import SEARCHED_FIELDS, Posting
from chalicelib.search.ranking import hit_of, rank
from chalicelib.search.repository import neighbourhood_key, posting_key, prefix_key
from chalicelib.search.service import MAX_EXPANSIONS, SearchService, parse_query
from chalicelib.search.text import distinct_words, index_variants, tier
from chalicelib.users.model import public_view
from tests.unit.test_search_indexing import insert, modify, remove, user

ADMIN = Principal("00000000-0000-4000-8000-00000000ad01", frozenset({"admins"}))
MEMBER = Principal("00000000-0000-4000-8000-000000000001", frozenset())


class MemoryIndex:
    """The SearchIndex port over (pk, sk) keys laid out as DynamoSearchIndex does, each
    partition a sorted list (a Query reads one partition, as in DynamoDB)."""

    def __init__(self) -> None:
        self.partitions: dict[str, list[str]] = {}
        self.calls: Counter[str] = Counter()
        self.postings_read = 0  # postings returned, as the Query items a search reads

    @property
    def keys(self) -> set[tuple[str, str]]:
        return {(pk, sk) for pk, part in self.partitions.items() for sk in part}

    def _put(self, pk: str, sk: str) -> None:
        part = self.partitions.setdefault(pk, [])
        at = bisect.bisect_left(part, sk)
        if at == len(part) or part[at] != sk:
            part.insert(at, sk)

    def _delete(self, pk: str, sk: str) -> None:
        part = self.partitions.get(pk, [])
        at = bisect.bisect_left(part, sk)
        if at < len(part) and part[at] == sk:
            del part[at]

    def postings(
        self, word: str, limit: int, after: tuple[str, str] | None = None
    ) -> list[tuple[str, str]]:
        self.calls["postings"] += 1
        part = self.partitions.get(f"W#{word}", [])
        end = len(part) if after is None else bisect.bisect_left(part, "#".join(after))
        newest = part[max(0, end - limit) : end][::-1]
        self.postings_read += len(newest)
        return [tuple(sk.split("#", 1)) for sk in newest]  # type: ignore[misc]

    def words_with_prefix(self, prefix: str, limit: int) -> list[str]:
        self.calls["words_with_prefix"] += 1
        part = self.partitions.get(f"P#{prefix[:2]}", [])
        start = bisect.bisect_left(part, prefix)
        return list(itertools.takewhile(lambda w: w.startswith(prefix), part[start:]))[:limit]

    def words_near(self, variant: str, limit: int) -> list[str]:
        self.calls["words_near"] += 1
        return self.partitions.get(f"D#{variant}", [])[:limit]

    def unknown_words(self, words: Iterable[str]) -> set[str]:
        return {w for w in words if not self._has(*_key(prefix_key(w)))}

    def _has(self, pk: str, sk: str) -> bool:
        part = self.partitions.get(pk, [])
        at = bisect.bisect_left(part, sk)
        return at < len(part) and part[at] == sk

    def write_postings(self, put: Iterable[Posting], delete: Iterable[Posting]) -> None:
        for posting in delete:
            self._delete(*_key(posting_key(posting)))
        for posting in put:
            self._put(*_key(posting_key(posting)))

    def add_words(self, words: Iterable[str]) -> None:
        for word in words:
            for variant in index_variants(word):
                self._put(*_key(neighbourhood_key(variant, word)))
            self._put(*_key(prefix_key(word)))

    def remove_words(self, words: Iterable[str]) -> None:
        for word in words:
            self._delete(*_key(prefix_key(word)))
            for variant in index_variants(word):
                self._delete(*_key(neighbourhood_key(variant, word)))


def renamed(profile: dict[str, Any]) -> dict[str, Any]:
    """A MODIFY giving the user other words: its old ones stay in the vocabulary, dead (a
    removed user's own words leave it: `test_user_erasure_aws.py`)."""
    return modify(profile, {**profile, "name": "Someone Else", "version": 2})


def _key(key: dict[str, Any]) -> tuple[str, str]:
    return key["pk"]["S"], key["sk"]["S"]


class MemoryProfiles:
    """The Profiles port: the public views of the users stored, as the users domain gives."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.batches: list[list[str]] = []

    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.batches.append(list(user_ids))
        return {u: public_view(self.users[u]) for u in user_ids if u in self.users}


class World:
    def __init__(self) -> None:
        self.index = MemoryIndex()
        self.profiles = MemoryProfiles()
        self.service = SearchService(self.index, self.profiles, max_workers=1)

    def add(self, *profiles: dict[str, Any]) -> None:
        self.service.apply_stream_records([insert(p) for p in profiles])
        self.profiles.users |= {p["user_id"]: p for p in profiles}

    def ids(self, q: str, limit: int = 100) -> list[str]:
        """Every page of a search, as user ids, checking each page's size."""
        found: list[str] = []
        cursor = None
        while True:
            page = self.service.search(ADMIN, q, str(limit), cursor)
            assert len(page["items"]) <= limit
            found += [item["user_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return found
            assert len(page["items"]) == limit


@pytest.fixture
def world() -> World:
    return World()


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [None, "", "   ", "\t\n", "a", "a b c", "!!! ...", "x" * 201, "one two three four five six"],
)
def test_unusable_queries_are_bad_requests(world: World, q: str | None) -> None:
    with pytest.raises(BadRequest):
        world.service.search(ADMIN, q, None, None)


@pytest.mark.parametrize(("limit", "cursor"), [("0", None), ("101", None), ("x", None)])
def test_bad_limit_is_bad_request(world: World, limit: str, cursor: str | None) -> None:
    with pytest.raises(BadRequest):
        world.service.search(ADMIN, "ann", limit, cursor)


def test_only_admins_may_search(world: World) -> None:
    world.add(user(1, name="Kim"))
    world.index.calls.clear()
    with pytest.raises(Forbidden):
        world.service.search(MEMBER, "kim", None, None)
    with pytest.raises(Forbidden):  # refused before the query is even looked at
        world.service.search(MEMBER, None, None, None)
    assert world.index.calls == Counter()


def test_bad_cursor_is_bad_request_before_any_read(world: World) -> None:
    with pytest.raises(BadRequest):
        world.service.search(ADMIN, "ann", None, "garbage")
    assert world.index.calls == Counter()


def test_query_words_drop_one_character_words_and_repeats() -> None:
    assert parse_query("J. Smith smith SMITH  Ann") == ["smith", "ann"]


# --- agreement with brute force -----------------------------------------------------------

_VOCABULARY = ["ann", "anna", "anne", "annie", "bob", "bobby", "lee", "leo", "li", "park"]
_VOCABULARY += ["parks", "smith", "smyth", "smiht", "smithson", "zoe", "zoey"]


def _brute_force(profiles: list[dict[str, Any]], query: list[str]) -> list[str]:
    hits = []
    for p in profiles:
        has = distinct_words([p.get(f) for f in SEARCHED_FIELDS], limit=1000)
        tiers = []
        for q in query:
            found = [t for w in has if (t := tier(q, w)) is not None]
            if not found:
                break
            tiers.append(min(found))
        else:
            hits.append(hit_of(tiers, p["created_at"], p["user_id"]))
    return [h.user_id for h in rank(hits)]


@st.composite
def _query_word(draw: st.DrawFn) -> str:
    word = draw(st.sampled_from(_VOCABULARY))
    kind = draw(st.sampled_from(["same", "prefix", "typo"]))
    if kind == "prefix" and len(word) > 2:
        return word[: draw(st.integers(2, len(word) - 1))]
    if kind == "typo":
        i = draw(st.integers(0, len(word) - 1))
        return word[:i] + draw(st.sampled_from("aeiknoy")) + word[i + 1 :]
    return word


#: Up to 14 users, each named by 1-3 words of the vocabulary.
_NAMES = st.lists(
    st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=3).map(" ".join),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(
    names=_NAMES,
    query=st.lists(_query_word(), min_size=1, max_size=2).map(" ".join),
    limit=st.integers(1, 4),
)
def test_search_finds_what_brute_force_finds_in_the_same_order(
    names: list[str], query: str, limit: int
) -> None:
    world = World()
    profiles = [user(n, name=name, email=f"u{n}@x.io") for n, name in enumerate(names)]
    world.add(*profiles)
    assert world.ids(query, limit) == _brute_force(profiles, parse_query(query))


# --- bounds and missing profiles ----------------------------------------------------------


def test_a_prefix_expands_to_the_first_words_in_alphabetical_order(world: World) -> None:
    profiles = [user(n, name=f"Pre{n:03d}x") for n in range(MAX_EXPANSIONS + 10)]
    world.add(*profiles)
    found = world.ids("pre")
    assert found == [p["user_id"] for p in reversed(profiles[:MAX_EXPANSIONS])]


def test_an_expensive_word_reads_its_newest_postings_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_service_module, "MAX_POSTINGS_PER_WORD", 3)
    profiles = [user(n, name="Common") for n in range(5)]
    world.add(*profiles)
    assert world.ids("common") == [p["user_id"] for p in reversed(profiles)][:3]


def test_hits_without_a_profile_are_skipped_and_the_page_is_filled(world: World) -> None:
    profiles = [user(n, name="Kim") for n in range(10)]
    world.add(*profiles)
    newest_first = [p["user_id"] for p in reversed(profiles)]
    for gone in newest_first[1:4]:  # deleted, the stream not applied yet
        del world.profiles.users[gone]
    page = world.service.search(ADMIN, "kim", "3", None)
    assert [i["user_id"] for i in page["items"]] == [newest_first[0], *newest_first[4:6]]
    assert world.profiles.batches == [newest_first[0:3], newest_first[3:5], newest_first[5:6]]
    rest = world.service.search(ADMIN, "kim", "10", page["next_cursor"])
    assert [i["user_id"] for i in rest["items"]] == newest_first[6:]
    assert rest["next_cursor"] is None


def test_results_are_public_views(world: World) -> None:
    world.add(user(1, name="Kim", phone="+14155550123", bio="hi"))
    (item,) = world.service.search(ADMIN, "kim", None, None)["items"]
    assert item == public_view(user(1, name="Kim", phone="+14155550123", bio="hi"))
    assert "version" not in item


def test_updates_and_removals_reach_the_results(world: World) -> None:
    kim = user(1, name="Kim Lee")
    world.add(kim)
    renamed = {**kim, "name": "Kim Park", "version": 2}
    world.service.apply_stream_records([modify(kim, renamed)])
    assert world.ids("lee") == []
    assert world.ids("park") == [kim["user_id"]]
    world.service.apply_stream_records([remove(renamed)])
    assert world.ids("kim") == []
    # only postings went; the vocabulary stays (harmless: its postings are empty)
    assert all(pk.startswith(("P#", "D#")) for pk, _ in world.index.keys)


# --- a common word in the query ------------------------------------------------------------

GMAIL_USERS = 5_200


@pytest.fixture(scope="module")
def gmail() -> World:
    """5,200 users with a gmail address; the oldest, Zed Quux, is the only one named so."""
    world = World()
    zed = user(0, name="Zed Quux", email="zed@gmail.com")
    world.add(zed, *(user(n, name="Pat Jones", email=f"pat{n}@gmail.com") for n in range(1, 5200)))
    return world


@pytest.mark.parametrize(
    "q", ["zed", "zed gmail", "quux gmail", "zed@gmail.com", "gmail com quux", "Quux, Zed (Gmail)"]
)
def test_a_common_word_does_not_hide_older_users(gmail: World, q: str) -> None:
    gmail.index.postings_read = 0
    gmail.profiles.batches.clear()
    assert gmail.ids(q) == [user(0)["user_id"]]
    # what the rare word costs, not the 5,200 postings of gmail (or com)
    assert gmail.index.postings_read < 200, gmail.index.postings_read
    assert sum(map(len, gmail.profiles.batches)) == 1


def test_a_query_of_common_words_only_reads_a_bounded_part_of_them(gmail: World) -> None:
    """Documented cap: when every word is very common, only the users among the postings
    read (the newest ones) are found; what is read stays bounded."""
    gmail.index.postings_read = 0
    page = gmail.service.search(ADMIN, "jones gmail", "100", None)
    assert gmail.index.postings_read <= 2 * search_service_module.WORD_BUDGET
    newest_first = [user(n)["user_id"] for n in range(GMAIL_USERS - 1, 0, -1)]
    assert [item["user_id"] for item in page["items"]] == newest_first[:100]
    assert page["next_cursor"] is not None


def test_a_common_word_next_to_a_rare_one_ranks_as_brute_force(world: World) -> None:
    """Past the first reads, candidates come from the rarest word and are checked on their
    profiles: tiers and order as everywhere else."""
    profiles = [user(n, name="Kim Jones", email=f"kim{n}@gmail.com") for n in range(40)]
    profiles += [
        user(40, name="Zed Quux"),  # no gmail
        user(41, name="Zed Quuxley", email="zq@gmail.com"),  # quux prefix
        user(42, name="Zed Quix", email="zq2@gmail.com"),  # quux typo
        user(43, name="Zed Quux", email="zq3@gmail.com"),
        user(44, name="Quux Zed", email="zq4@gmial.com"),  # gmail typo
        user(45, name="Zed Quux", email="zq5@gmail.com"),
    ]
    world.add(*profiles)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_service_module, "FIRST_READ", 2)
        for q in ["quux gmail", "zed quux gmail", "gmail zed", "quu zed gmai"]:
            assert world.ids(q, limit=2) == _brute_force(profiles, parse_query(q)), q
            world.index.postings_read = 0
            world.service.search(ADMIN, q, "2", None)
            assert world.index.postings_read < 30, q  # not the 40 of gmail


def test_a_hit_is_checked_on_the_current_profile(world: World) -> None:
    """A candidate whose profile lost the rare word (stream not applied yet) is not a hit;
    a deleted one is skipped, as on the one-word path."""
    profiles = [user(n, name="Kim Jones", email=f"kim{n}@gmail.com") for n in range(20)]
    profiles += [user(n, name="Zed Quux", email=f"zq{n}@gmail.com") for n in (20, 21, 22)]
    world.add(*profiles)
    world.profiles.users[user(21)["user_id"]] = {**profiles[21], "name": "Bob Quux"}
    del world.profiles.users[user(22)["user_id"]]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_service_module, "FIRST_READ", 2)
        assert world.ids("zed gmail") == [user(20)["user_id"]]


@settings(max_examples=150, deadline=None)
@given(
    names=_NAMES,
    query=st.lists(_query_word(), min_size=2, max_size=3).map(" ".join),
    limit=st.integers(1, 4),
    first_read=st.integers(1, 3),
)
def test_tiny_reads_find_what_brute_force_finds_in_the_same_order(
    names: list[str], query: str, limit: int, first_read: int
) -> None:
    """The race between the query words, and the profile check, against brute force: tiny
    reads make every path run on a few users."""
    world = World()
    profiles = [user(n, name=name, email=f"u{n}@x.io") for n, name in enumerate(names)]
    world.add(*profiles)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_service_module, "FIRST_READ", first_read)
        assert world.ids(query, limit) == _brute_force(profiles, parse_query(query))


# --- vocabulary of words no user has any more --------------------------------------------


def test_a_removed_users_words_are_checked_in_parallel_and_shared_ones_stay() -> None:
    class ThreadedIndex(MemoryIndex):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def postings(self, word: str, limit: int, after: Any = None) -> list[tuple[str, str]]:
            self.threads.add(threading.current_thread().name)
            return super().postings(word, limit, after)

    index = ThreadedIndex()
    service = SearchService(index, MemoryProfiles(), max_workers=4)
    gone, stays = user(1, name="Kim Park Lee"), user(2, name="Ada Lee")
    service.apply_stream_records([insert(gone), insert(stays)])
    index.threads.clear()
    service.apply_stream_records([remove(gone)])
    words = {sk for pk, sk in index.keys if pk.startswith("P#")}
    assert {"kim", "park"}.isdisjoint(words) and {"ada", "lee"} <= words
    assert index.threads and all(t.startswith("search") for t in index.threads)


def test_dead_prefix_words_do_not_take_the_expansion_slots(world: World) -> None:
    profiles = [user(n, name=f"Pre{n:03d}x") for n in range(MAX_EXPANSIONS + 10)]
    world.add(*profiles)
    world.service.apply_stream_records([renamed(p) for p in profiles[:MAX_EXPANSIONS]])
    live = profiles[MAX_EXPANSIONS:]
    assert world.ids("pre") == [p["user_id"] for p in reversed(live)]
    assert world.ids("pre x") == [p["user_id"] for p in reversed(live)]


def test_dead_typo_words_do_not_take_the_expansion_slots(world: World) -> None:
    typos = sorted({w[:i] + c + w[i + 1 :] for w in ["kvat"] for i in (0, 1, 2) for c in "bcdfg"})
    typos = [t for t in typos if t != "kvat"]  # 15 words one substitution away
    profiles = [user(n, name=f"Sam {t}") for n, t in enumerate(typos)]
    world.add(*profiles)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_service_module, "MAX_EXPANSIONS", 5)
        assert len(world.ids("kvat")) == 5
        world.service.apply_stream_records([renamed(p) for p in profiles[:10]])
        assert world.ids("kvat") == [p["user_id"] for p in reversed(profiles[10:])]


def test_skipping_dead_words_is_bounded(world: World) -> None:
    checks = search_service_module.MAX_EXPANSION_CHECKS
    profiles = [user(n, name=f"Pre{n:03d}x") for n in range(checks + 20)]
    world.add(*profiles)
    world.service.apply_stream_records([renamed(p) for p in profiles[: checks - 5]])
    world.index.calls.clear()
    found = world.ids("pre")
    # the 5 live words within the bound are found, those past it are not (documented)
    assert found == [p["user_id"] for p in reversed(profiles[checks - 5 : checks])]
    # the query word, the candidates looked at, and the rest of the 5 live ones' postings
    assert world.index.calls["postings"] <= 1 + checks + 5
    assert world.index.calls["words_with_prefix"] == 1


# --- import cost ----------------------------------------------------------------------------


def test_importing_search_does_not_load_thread_pools_or_hashing() -> None:
    import subprocess
    import sys

    code = "import sys, chalicelib.search; print(sorted(m for m in ('hashlib', "
    code += "'concurrent.futures') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
