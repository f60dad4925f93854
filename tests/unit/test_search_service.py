"""The search service over an in-memory index with the DynamoDB adapter's key layout: input
validation, agreement with a brute-force search, bounds, and pages whose profiles are gone."""

from __future__ import annotations

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
from chalicelib.search.text import distinct_words, tier
from chalicelib.users.model import public_view
from tests.unit.test_search_indexing import insert, modify, remove, user

ADMIN = Principal("00000000-0000-4000-8000-00000000ad01", frozenset({"admins"}))
MEMBER = Principal("00000000-0000-4000-8000-000000000001", frozenset())


class MemoryIndex:
    """The SearchIndex port over a set of (pk, sk) keys laid out as DynamoSearchIndex does."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.calls: Counter[str] = Counter()

    def _partition(self, pk: str) -> list[str]:
        return sorted(sk for p, sk in self.keys if p == pk)

    def postings(self, word: str, limit: int) -> list[tuple[str, str]]:
        self.calls["postings"] += 1
        newest = list(reversed(self._partition(f"W#{word}")))[:limit]
        return [tuple(sk.split("#", 1)) for sk in newest]  # type: ignore[misc]

    def words_with_prefix(self, prefix: str, limit: int) -> list[str]:
        self.calls["words_with_prefix"] += 1
        return [w for w in self._partition(f"P#{prefix[:2]}") if w.startswith(prefix)][:limit]

    def words_near(self, variant: str, limit: int) -> list[str]:
        self.calls["words_near"] += 1
        return self._partition(f"D#{variant}")[:limit]

    def unknown_words(self, words: Iterable[str]) -> set[str]:
        return {w for w in words if _key(prefix_key(w)) not in self.keys}

    def write_postings(self, put: Iterable[Posting], delete: Iterable[Posting]) -> None:
        self.keys -= {_key(posting_key(p)) for p in delete}
        self.keys |= {_key(posting_key(p)) for p in put}

    def add_words(self, words: Iterable[str]) -> None:
        from chalicelib.search.text import index_variants

        for word in words:
            self.keys |= {_key(neighbourhood_key(v, word)) for v in index_variants(word)}
            self.keys.add(_key(prefix_key(word)))


def _key(key: dict[str, Any]) -> tuple[str, str]:
    return key["pk"]["S"], key["sk"]["S"]


class MemoryProfiles:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.batches: list[list[str]] = []

    def get_many(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.batches.append(list(user_ids))
        return {u: self.users[u] for u in user_ids if u in self.users}


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


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(
        st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=3).map(" ".join),
        min_size=1,
        max_size=14,
    ),
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
