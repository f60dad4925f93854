"""Search against moto: the DynamoDB adapters and the service, fed with stream records.

The tables come from infra/resources.json (the `aws` fixture). Every DynamoDB call the app's
client makes is metered, so the tests can show what a search costs.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import boto3
import pytest

from chalicelib.core import aws as aws_clients
from chalicelib.core.backoff import MAX_ATTEMPTS
from chalicelib.core.dynamo import Unprocessed
from chalicelib.search.repository import DynamoSearchIndex
from chalicelib.search.service import SearchService
from chalicelib.users.public import DynamoPublicProfiles
from tests.unit.test_search_indexing import claim, image, insert, modify, remove, user
from tests.unit.test_search_service import ADMIN

SEARCH_TABLE = "serverless-app-dev-search"
USERS_TABLE = "serverless-app-dev-users"


class Meter:
    """Calls by operation, and items read (Query ScannedCount, BatchGetItem items). The
    search calls from worker threads: counts are taken under a lock, or two threads adding
    at once lose one (seen on a slow, busy machine: 19 Queries counted for 20)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.items_read = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-call.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def _before(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[model.name] += 1

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        read = 0
        if model.name == "Query":
            read = parsed.get("ScannedCount", 0)
        elif model.name == "BatchGetItem":
            read = sum(len(v) for v in parsed.get("Responses", {}).values())
        with self._lock:
            self.items_read += read

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.items_read = 0


class Search:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.client = aws_clients.client("dynamodb")
        self.meter = Meter(self.client)
        self.index = DynamoSearchIndex(SEARCH_TABLE, sleep=self.sleeps.append)
        self.service = SearchService(
            self.index, DynamoPublicProfiles(USERS_TABLE, sleep=self.sleeps.append)
        )

    def add(self, *profiles: dict[str, Any]) -> None:
        """Store the users and index them as their INSERT records would."""
        for profile in profiles:
            self.client.put_item(TableName=USERS_TABLE, Item=image(profile))
        self.service.apply_stream_records([insert(p) for p in profiles])

    def ids(self, q: str, limit: int = 100) -> list[str]:
        page = self.service.search(ADMIN, q, str(limit), None)
        return [item["user_id"] for item in page["items"]]

    def snapshot(self) -> set[tuple[str, str]]:
        """Every key of the index table (a Scan by the test, not by the app)."""
        keys: set[tuple[str, str]] = set()
        for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=SEARCH_TABLE):
            keys |= {(i["pk"]["S"], i["sk"]["S"]) for i in page["Items"]}
        return keys


@pytest.fixture
def search(aws: dict[str, str]) -> Search:
    return Search()


def uid(n: int) -> str:
    return user(n)["user_id"]


# --- matching and ranking -----------------------------------------------------------------


def test_exact_then_prefix_then_typo_whatever_their_age(search: Search) -> None:
    search.add(
        user(1, name="Alice Smith", email="alice.smith@wonderland.org"),
        user(2, name="Bob Smithson"),
        user(3, name="Carol Smyth", bio="Plays the drums."),
        user(4, name="Dave Jones"),
    )
    assert search.ids("smith") == [uid(1), uid(2), uid(3)]
    assert search.ids("SMITH") == search.ids("Smíth") == search.ids("smith")
    assert search.ids("alice") == [uid(1)]
    assert search.ids("wonderland.org") == [uid(1)]  # two words, both in one email
    assert search.ids("jon") == [uid(4)]
    assert search.ids("nobody") == []


TYPOS = {
    "jahnson": True,  # substitution
    "johnsson": True,  # insertion
    "jonson": True,  # deletion
    "jhonson": True,  # transposition
    "jhnsn": False,  # two edits
    "jo": True,  # prefix
    "jh": False,  # 2-character words: no typo
}


def test_one_typo_of_any_kind_is_found(search: Search) -> None:
    search.add(user(1, name="Quentin Johnson"), user(2, name="Someone Else"))
    found = {q: search.ids(q) == [uid(1)] for q in TYPOS}
    assert found == TYPOS
    assert all(search.ids(q) == [] for q, hit in TYPOS.items() if not hit)


def test_every_query_word_must_match_and_worse_matches_rank_lower(search: Search) -> None:
    search.add(
        user(1, name="Ann Lee"),
        user(2, name="Ann Leeds"),  # ann exact, lee prefix
        user(3, name="Anne Lee"),  # ann prefix, lee exact: same rank as 2, newer
        user(4, name="Lee Park"),  # no ann
        user(5, name="Anna Lea"),  # ann prefix, lee typo
        user(6, name="Ann Lee", email="ann.lee@example.com"),  # newer than 1
    )
    assert search.ids("ann lee") == [uid(6), uid(1), uid(3), uid(2), uid(5)]
    assert search.ids("lee ann") == search.ids("ann lee")
    assert search.ids("ann lee park") == []


def test_equal_matches_come_newest_first(search: Search) -> None:
    search.add(*(user(n, name="Eve Adams") for n in (10, 30, 20)))
    assert search.ids("adams") == [uid(30), uid(20), uid(10)]


def test_pages_follow_each_other_without_gap_or_repeat(search: Search) -> None:
    exact = [user(n, name="Page Tester") for n in range(100, 123)]
    prefixed = [user(n, name="Pager Tester") for n in range(200, 204)]
    typos = [user(n, name="Pago Tester") for n in range(300, 303)]
    search.add(*exact, *prefixed, *typos)
    expected = [p["user_id"] for group in (exact, prefixed, typos) for p in reversed(group)]
    seen: list[str] = []
    cursor = None
    search.meter.reset()
    pages = 0
    while pages < 10:
        page = search.service.search(ADMIN, "page", "7", cursor)
        pages += 1
        seen += [item["user_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert seen == expected
    assert search.meter.calls["BatchGetItem"] == 5  # one per page
    assert search.meter.calls["Scan"] == 0


def test_a_common_word_reads_its_newest_postings_only(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.search import service

    monkeypatch.setattr(service, "MAX_POSTINGS_PER_WORD", 3)
    search.add(*(user(n, name="Common") for n in range(1, 7)))
    assert search.ids("common") == [uid(6), uid(5), uid(4)]


def test_queries_follow_pages_when_dynamodb_stops_early(search: Search) -> None:
    """DynamoDB ends a Query page at 1 MB; shrink pages to 2 items to see them followed."""
    search.add(*(user(n, name="Paged", bio=f"Pagedword{n}") for n in range(1, 8)))

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = min(params.get("Limit", 2), 2)

    search.client.meta.events.register("provide-client-params.dynamodb.Query", small_pages)
    search.meter.reset()
    assert search.ids("paged") == [uid(n) for n in range(7, 0, -1)]
    assert search.meter.calls["Query"] > 10


# --- maintenance from the stream ----------------------------------------------------------


def test_modify_removes_the_old_words(search: Search) -> None:
    kim = user(1, name="Kim Lee", bio="gardening")
    search.add(kim)
    renamed = {**kim, "name": "Kim Park", "bio": None, "version": 2}
    search.client.put_item(TableName=USERS_TABLE, Item=image(renamed))
    search.service.apply_stream_records([modify(kim, renamed)])
    assert search.ids("lee") == search.ids("gardening") == []
    assert search.ids("park") == search.ids("kim") == [uid(1)]
    postings = {pk for pk, sk in search.snapshot() if pk.startswith("W#")}
    assert "W#lee" not in postings and "W#gardening" not in postings


def test_remove_removes_every_posting_of_the_user(search: Search) -> None:
    kim, other = user(1, name="Kim Lee"), user(2, name="Kim Other")
    search.add(kim, other)
    search.service.apply_stream_records([remove(kim)])
    assert search.ids("kim") == [uid(2)]
    assert not [key for key in search.snapshot() if key[1].endswith(uid(1))]


def test_email_claims_are_ignored_without_a_call(search: Search) -> None:
    search.meter.reset()
    search.service.apply_stream_records([claim("kim@example.com")])
    assert search.meter.calls == Counter()
    assert search.snapshot() == set()


def test_replaying_records_gives_the_same_index(search: Search) -> None:
    v1 = user(1, name="Kim Lee")
    v2 = {**v1, "name": "Kim Park", "version": 2}
    records = [insert(v1), insert(user(2, name="Ann Lee")), modify(v1, v2), remove(user(2))]
    search.service.apply_stream_records(records)
    once = search.snapshot()
    search.service.apply_stream_records(records)
    assert search.snapshot() == once
    for split in range(len(records)):  # a retry of any tail, as Lambda may redeliver it
        search.service.apply_stream_records(records[split:])
        assert search.snapshot() == once
    assert ("W#park", f"{v1['created_at']}#{uid(1)}") in once
    assert not {key for key in once if key[0] in ("W#lee", "W#ann")}


def test_vocabulary_is_written_once_per_word(search: Search) -> None:
    search.add(user(1, name="Kim Lee"))
    search.meter.reset()
    search.add(user(2, name="Kim Lee"))  # the same words (but its own email word)
    words = {pk for pk, sk in search.snapshot() if pk.startswith("P#")}
    assert words == {"P#ki", "P#le", "P#us", "P#ex", "P#co"}
    # postings (5 words) + the one new word's vocabulary (user2: 6 neighbourhood + 1 prefix)
    assert search.meter.calls == Counter({"PutItem": 1, "BatchWriteItem": 3, "BatchGetItem": 1})


class DropFromBatches:
    """Make DynamoDB look throttled: the first `times` BatchWriteItem/BatchGetItem calls
    process only half of their items, and report the rest as unprocessed. Calls may run on
    several threads: what a call dropped is kept per thread."""

    def __init__(self, client: Any, times: int) -> None:
        self.left = times
        self.lock = threading.Lock()
        self.call = threading.local()
        events = client.meta.events
        for op in ("BatchWriteItem", "BatchGetItem"):
            events.register(f"provide-client-params.dynamodb.{op}", self._params)
            events.register(f"after-call.dynamodb.{op}", self._after)

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.call.dropped = []
        with self.lock:
            if self.left <= 0:
                return
            self.left -= 1
        ((table, request),) = params["RequestItems"].items()
        items = request if model.name == "BatchWriteItem" else request["Keys"]
        keep = len(items) // 2 or 1  # a call needs an item: a lone one is also reported
        self.call.dropped = items[keep:] or items
        if model.name == "BatchWriteItem":
            params["RequestItems"][table] = items[:keep]
        else:
            params["RequestItems"][table] = {**request, "Keys": items[:keep]}
        self.call.table, self.call.request = table, request

    def _after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        dropped = getattr(self.call, "dropped", [])
        if not dropped:
            return
        if model.name == "BatchWriteItem":
            parsed["UnprocessedItems"] = {self.call.table: dropped}
        else:
            parsed["UnprocessedKeys"] = {self.call.table: {**self.call.request, "Keys": dropped}}


def test_unprocessed_writes_are_retried_with_backoff(search: Search) -> None:
    profiles = [user(n, name=f"Retry Person{n}", bio="throttled writes") for n in range(1, 6)]
    search.add(*profiles)
    expected = search.snapshot()
    search.service.apply_stream_records([remove(p) for p in profiles])
    assert not {k for k in search.snapshot() if k[0].startswith("W#")}

    DropFromBatches(search.client, times=4)
    search.sleeps.clear()
    search.meter.reset()
    search.service.apply_stream_records([insert(p) for p in profiles])
    assert search.snapshot() == expected
    assert search.meter.calls["BatchWriteItem"] > 4  # several chunks, written concurrently
    assert len(search.sleeps) == 4 and all(0 <= s <= 1 for s in search.sleeps)


def test_writes_still_unprocessed_after_every_retry_raise(search: Search) -> None:
    DropFromBatches(search.client, times=10_000)
    search.meter.reset()
    with pytest.raises(Unprocessed):
        search.service.apply_stream_records([insert(user(1, name="Kim"))])
    assert search.meter.calls["BatchWriteItem"] == MAX_ATTEMPTS


def test_unprocessed_profile_reads_are_retried(search: Search) -> None:
    profiles = [user(n, name="Kim") for n in range(1, 5)]
    search.add(*profiles)
    DropFromBatches(search.client, times=1)
    search.meter.reset()
    assert search.ids("kim") == [uid(4), uid(3), uid(2), uid(1)]
    assert search.meter.calls["BatchGetItem"] == 2


# --- cost: the matches, never the users ---------------------------------------------------

QUERIES = ["zebulon", "quen", "zebulno", "quentin zeb", "zz"]


def _costs(search: Search) -> dict[str, tuple[Counter[str], int, int]]:
    costs = {}
    for q in QUERIES:
        search.meter.reset()
        found = len(search.ids(q))
        costs[q] = (Counter(search.meter.calls), search.meter.items_read, found)
    return costs


def test_search_cost_does_not_depend_on_non_matching_users(search: Search) -> None:
    search.add(*(user(n, name="Quentin Zebulon") for n in range(1, 4)))
    filler = [user(n, name=f"Filler Person{n}", bio="nothing to see") for n in range(10, 70)]
    search.add(*filler[:5])
    few = _costs(search)
    search.add(*filler[5:])
    many = _costs(search)
    assert few == many
    for q in QUERIES[:4]:
        calls, items_read, found = many[q]
        assert found == 3
        assert set(calls) == {"Query", "BatchGetItem"}  # never a Scan
        assert calls["BatchGetItem"] == 1
        assert items_read < 20, (q, items_read)


def test_a_common_word_costs_what_the_rarest_word_matches(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oldest of many gmail users is found by `zed gmail`, and the search costs the
    same with 12 or 60 gmail users: what it reads follows zed's postings, not gmail's."""
    from chalicelib.search import service

    monkeypatch.setattr(service, "MAX_POSTINGS_PER_WORD", 5)  # a word's own read, one word
    monkeypatch.setattr(service, "FIRST_READ", 2)  # each word's first read, several words
    search.add(user(1, name="Zed Quux", email="zed@gmail.com"))
    search.add(*(user(n, name="Pat Jones", email=f"pat{n}@gmail.com") for n in range(2, 13)))
    queries = ["zed gmail", "quux gmail com", "zed@gmail.com"]

    def costs() -> dict[str, tuple[Counter[str], int]]:
        found = {}
        for q in queries:
            search.meter.reset()
            assert search.ids(q) == [uid(1)], q
            found[q] = (Counter(search.meter.calls), search.meter.items_read)
        return found

    few = costs()
    search.add(*(user(n, name="Pat Jones", email=f"pat{n}@gmail.com") for n in range(13, 61)))
    assert costs() == few
    assert all(calls["BatchGetItem"] == 1 for calls, _ in few.values())


def test_postings_are_read_on_from_a_key(search: Search) -> None:
    search.add(*(user(n, name="Paged") for n in range(1, 6)))
    first = search.index.postings("paged", 2)
    assert [u for _, u in first] == [uid(5), uid(4)]
    rest = search.index.postings("paged", 10, after=first[-1])
    assert [u for _, u in rest] == [uid(3), uid(2), uid(1)]
    assert search.index.postings("paged", 10, after=rest[-1]) == []


def test_stream_records_from_moto_index_what_the_users_repository_wrote(search: Search) -> None:
    """The records moto's stream holds for writes made by the users adapter (email claims
    included); moto's DynamoDB Streams API is not reachable with this botocore, so they are
    read from its backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    from chalicelib.users.repository import DynamoUserRepository

    repo = DynamoUserRepository(USERS_TABLE)
    kim, ann = user(1, name="Kim Lee"), user(2, name="Ann Lee")
    for profile in (kim, ann):
        repo.add(profile, repo.reserve_email(profile["email"]))
    repo.replace(kim, moved := {**kim, "name": "Kim Park", "email": "kp@example.org", "version": 2})
    repo.remove(ann)
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables[USERS_TABLE]
    records = [r.to_json() for r in table.stream_shard.items]
    assert any(r["dynamodb"]["Keys"]["pk"]["S"].startswith("EMAIL#") for r in records)
    search.service.apply_stream_records(records)
    assert search.ids("lee") == []
    assert search.ids("park") == search.ids("kp") == [uid(1)]
    assert search.service.search(ADMIN, "park", None, None)["items"][0]["email"] == moved["email"]
    assert {sk.split("#")[1] for pk, sk in search.snapshot() if pk.startswith("W#")} == {uid(1)}
