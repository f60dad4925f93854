"""User search cost at 1,000 and 10,000 users: the same queries, the same matches.

In-process moto, tables from infra/resources.json. 1,000 generated users (names, an email
with a per-user word, a short bio) are written to the users table and indexed through
`SearchService.apply_stream_records` (INSERT records in batches of 100, as Lambda delivers
them); searches are measured; then 9,000 more users are added and the same searches measured
again. Ten users of the first thousand, and only they, have the rare word "zeppelin" in
their bio, so the exact, prefix ("zeppe") and typo ("zepelin") queries match the same ten
users at both sizes. Per search: median latency, DynamoDB calls, items read (the sum of the
Queries' ScannedCount, plus the profiles BatchGetItem returns).

What it shows: for the same matches, calls and items read are identical at 1k and 10k (the
ratio is exactly 1: no Query touches a partition of a non-matching word, and nothing is
scanned), and latency stays flat. A common first name (about 1 user in 40) is measured too,
as information: its cost grows with its matches (x10 users, x10 postings read), which is the
expected behaviour of a one-word query. A query joining the rare word and a common one costs
what the rare word matches, whatever the common word's size: "zeppelin example" (every user
has "example" in their email: 1,000 then 10,000 postings) and "zeppelin olivia" (the common
first name) read the same at both sizes. Their common word is read only until it is known to
be the larger one, and the rare word's users are checked on their profiles, which the page
then shows (`chalicelib.search.service`).

moto's Query reads and sorts the whole table for every call (`Table.query` ->
`all_items()`), where DynamoDB reads only the key's partition, and within it only from the
key condition's start up to Limit items. Measured as is, moto's latency would grow with the
table, and with the partition of a common word of which the search reads 16 postings, and
say nothing about our code. So for the duration of the benchmark a Query of a table's own
key is served from that partition only and, when it has a Limit and no key condition or a
`sk < :value` one, from the Limit + 1 items where DynamoDB would start reading (kept sorted
per partition; the rest of moto's Query, including paging, sorting and ScannedCount, is
unchanged and gives the same answer). Calls and items read do not depend on this.
"""

from __future__ import annotations

import bisect
import contextlib
import random
import resource
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import AWS_OVERRIDES, STAGE, Result, ms, patched_environ, quiet_stdout, stage_env

SMALL, LARGE = 1_000, 10_000
RARE_WORD, RARE_USERS = "zeppelin", 10
QUERIES = {
    "exact (10 matches)": "zeppelin",
    "prefix (10 matches)": "zeppe",
    "typo (10 matches)": "zepelin",
    "rare + everyone (10 matches)": "zeppelin example",
    "rare + common name": "zeppelin olivia",
    "common name (info)": "olivia",
}
RARE_QUERIES = [label for label in QUERIES if "10 matches" in label]
#: Queries whose cost must not change from 1k to 10k users: those with a rare word.
FLAT_QUERIES = [label for label in QUERIES if "(info)" not in label]
STREAM_BATCH = 100


def _words(text: str) -> list[str]:
    return text.split()


FIRST = _words(
    """olivia liam emma noah amelia oliver sophia elijah mia lucas isabella mason harper
    ethan evelyn logan abigail james ella aiden grace jacob chloe henry lily samuel nora owen
    hazel daniel aria wyatt layla carter riley julian stella isaac violet"""
)
LAST = _words(
    """smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez
    lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white
    harris sanchez clark ramirez lewis robinson walker young allen king wright scott torres
    nguyen hill flores"""
)
BIO = _words(
    """loves hiking coffee music travel photography cooking reading running cycling
    design code data cloud python gardening climbing painting chess movies podcasts yoga
    baking science history football tennis swimming writing poetry jazz guitar piano film
    startups teaching volunteering birds astronomy sailing skiing surfing"""
)
DOMAINS = ["example.com", "mail.example.org", "corp.example.net"]


def _users(start: int, count: int, rng: random.Random) -> list[dict[str, Any]]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    users = []
    for n in range(start, start + count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if n == 7:  # a user of the rare word also has the common first name
            first = "olivia"
        bio = rng.sample(BIO, 4)
        if n < SMALL and n % (SMALL // RARE_USERS) == 7:
            bio[1] = RARE_WORD
        stamp = (base + timedelta(seconds=n, microseconds=rng.randrange(10**6))).isoformat(
            timespec="microseconds"
        )
        users.append(
            {
                "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "email": f"{first}.{last}{n}@{rng.choice(DOMAINS)}",
                "name": f"{first.title()} {last.title()}",
                "bio": " ".join(bio).capitalize() + ".",
                "preferences": {"newsletter": n % 2 == 0},
                "created_at": stamp.replace("+00:00", "Z"),
                "updated_at": stamp.replace("+00:00", "Z"),
                "version": 1,
            }
        )
    return users


def _store_and_index(service: Any, client: Any, users: list[dict[str, Any]]) -> None:
    """Write the users (BatchWriteItem) and index them from their INSERT records."""
    from boto3.dynamodb.types import TypeSerializer

    from chalicelib.users import USERS_TABLE
    from chalicelib.users.repository import sort_key, user_key

    serializer = TypeSerializer()
    table = USERS_TABLE.name
    for start in range(0, len(users), STREAM_BATCH):
        batch = users[start : start + STREAM_BATCH]
        images = [
            {
                k: serializer.serialize(v)
                for k, v in {
                    **u,
                    "pk": user_key(u["user_id"]),
                    "entity": "USER",
                    "created_key": sort_key(u),
                }.items()
            }
            for u in batch
        ]
        for chunk in range(0, len(images), 25):
            client.batch_write_item(
                RequestItems={
                    table: [{"PutRequest": {"Item": i}} for i in images[chunk : chunk + 25]]
                }
            )
        service.apply_stream_records(
            [
                {
                    "eventName": "INSERT",
                    "eventSource": "aws:dynamodb",
                    "dynamodb": {
                        "Keys": {"pk": image["pk"]},
                        "NewImage": image,
                        "StreamViewType": "NEW_AND_OLD_IMAGES",
                    },
                }
                for image in images
            ]
        )


class Meter:
    """DynamoDB calls and items read, on the app's client, while `recording`."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items = 0
        self.recording = False

    def before(self, model: Any, **_: Any) -> None:
        if self.recording:
            self.calls[model.name] += 1

    def after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if not self.recording:
            return
        if model.name in ("Query", "Scan"):
            self.items += parsed.get("ScannedCount", 0)
        elif model.name == "BatchGetItem":
            self.items += sum(len(v) for v in parsed.get("Responses", {}).values())


def _measure(service: Any, meter: Meter, q: str, reps: int) -> dict[str, Any]:
    from chalicelib.auth.tokens import ADMIN_GROUP, Principal

    admin = Principal(str(uuid.UUID(int=1, version=4)), frozenset({ADMIN_GROUP}))
    for _ in range(3):  # warm-up
        service.search(admin, q, "20", None)
    times: list[float] = []
    calls: Counter[str] = Counter()
    items = 0
    found = 0
    for _ in range(reps):
        meter.calls, meter.items = Counter(), 0
        meter.recording = True
        started = time.perf_counter()
        page = service.search(admin, q, "20", None)
        times.append(time.perf_counter() - started)
        meter.recording = False
        calls, items, found = meter.calls, meter.items, len(page["items"])
    return {
        "median_s": statistics.median(times),
        "calls": dict(calls),
        "calls_total": sum(calls.values()),
        "items_read": items,
        "results_on_page": found,
    }


@contextlib.contextmanager
def partition_local_queries() -> Iterator[None]:
    """Serve a Query of a table's own key from that key's partition (module docstring)."""
    from moto.dynamodb.models.table import Table

    original_query, original_all_items = Table.query, Table.all_items
    local = threading.local()
    sorted_keys: dict[tuple[int, Any], tuple[int, list[Any], list[str]]] = {}
    sorting = threading.Lock()

    def ordered(self: Any, hash_key: Any) -> tuple[list[Any], list[str]]:
        """The partition's range keys in order, and their values (cached while the
        partition keeps its size: the benchmark only adds items)."""
        partition = self.items.get(hash_key, {})
        with sorting:
            size, keys, values = sorted_keys.get((id(self), hash_key), (-1, [], []))
            if size != len(partition):
                keys = sorted(partition, key=lambda k: k.value)
                values = [k.value for k in keys]
                sorted_keys[id(self), hash_key] = (len(partition), keys, values)
        return keys, values

    def window(self: Any, hash_key: Any, args: tuple[Any, ...]) -> list[Any] | None:
        """The items DynamoDB would read for this Query, or None to let moto decide."""
        comparison, values, limit, start, forward = args[:5]
        if not limit or start is not None or comparison not in (None, "<"):
            return None
        keys, ordered_values = ordered(self, hash_key)
        end = len(keys)
        if comparison == "<":
            if forward is not False:
                return None
            end = bisect.bisect_left(ordered_values, values[0].value)
        chosen = keys[max(0, end - limit - 1) : end] if forward is False else keys[: limit + 1]
        partition = self.items.get(hash_key, {})
        return [partition[k] for k in chosen]

    def all_items(self: Any) -> list[Any]:
        partition = getattr(local, "partition", None)
        if partition is not None and partition[0] is self and self.range_key_attr:
            if partition[2] is not None:
                return partition[2]
            return list(self.items.get(partition[1], {}).values())
        return original_all_items(self)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        local.partition = None
        if index_name is None:
            # a FilterExpression applies after Limit, in moto as in DynamoDB: no matter
            legacy_filter = set(kwargs) - {"hash_key_conditions", "range_key_conditions"}
            narrow = self.range_key_attr and len(args) >= 5 and not legacy_filter
            local.partition = (self, hash_key, window(self, hash_key, args) if narrow else None)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            local.partition = None

    Table.all_items, Table.query = all_items, query  # type: ignore[method-assign]
    try:
        yield
    finally:
        Table.all_items, Table.query = original_all_items, original_query  # type: ignore[method-assign]


def run(quick: bool) -> Result:
    reps = 15 if quick else 60
    sizes: dict[int, dict[str, Any]] = {}
    build_s: dict[int, float] = {}
    with patched_environ(stage_env(), drop_prefixes=AWS_OVERRIDES), quiet_stdout():
        import boto3
        from moto import mock_aws

        from chalicelib.core import aws
        from chalicelib.search import search_service
        from local.inprocess import reset_app_caches
        from local.provision import provision

        reset_app_caches()
        search_service.cache_clear()
        try:
            with mock_aws(), partition_local_queries():
                provision(STAGE, boto3.client("cloudformation"))
                service = search_service()
                client = aws.client("dynamodb")
                meter = Meter()
                client.meta.events.register("before-call.dynamodb", meter.before)
                client.meta.events.register("after-call.dynamodb", meter.after)
                rng = random.Random(20261126)
                indexed = 0
                for size in (SMALL, LARGE):
                    started = time.perf_counter()
                    _store_and_index(service, client, _users(indexed, size - indexed, rng))
                    build_s[size] = time.perf_counter() - started
                    indexed = size
                    sizes[size] = {
                        label: _measure(service, meter, q, reps) for label, q in QUERIES.items()
                    }
        finally:
            search_service.cache_clear()
            reset_app_caches()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return _report(sizes, build_s, reps, peak_mb)


def _report(
    sizes: dict[int, dict[str, Any]], build_s: dict[int, float], reps: int, peak_mb: float
) -> Result:
    result = Result("search", "GET /users/search cost at 1k vs 10k users (same queries)")
    result.row(
        "setup",
        f"indexed 1k users in {build_s[SMALL]:.1f} s, +9k in {build_s[LARGE]:.1f} s; "
        f"{reps} searches per query and size, limit 20; peak RSS {peak_mb:.0f} MB",
    )
    result.row(
        "columns",
        "median latency / DynamoDB calls / items read, per search: 1k -> 10k (ratio 10k/1k)",
    )
    metrics: dict[str, Any] = {"reps": reps, "build_s": build_s, "peak_rss_mb": peak_mb}
    for label, q in QUERIES.items():
        small, large = sizes[SMALL][label], sizes[LARGE][label]
        ratios = {
            key: large[key] / small[key] if small[key] else float("nan")
            for key in ("median_s", "calls_total", "items_read")
        }
        result.row(
            f"{label} q={q!r}",
            f"{ms(small['median_s'])} / {small['calls_total']} / {small['items_read']} -> "
            f"{ms(large['median_s'])} / {large['calls_total']} / {large['items_read']} "
            f"(x{ratios['median_s']:.2f} / x{ratios['calls_total']:.2f} / "
            f"x{ratios['items_read']:.2f}); results {small['results_on_page']} -> "
            f"{large['results_on_page']}",
        )
        metrics[label] = {"q": q, "1k": small, "10k": large, "ratio_10k_1k": ratios}
    for label in FLAT_QUERIES:
        small, large = sizes[SMALL][label], sizes[LARGE][label]
        name = label.split(" (")[0]
        same = small["calls"] == large["calls"] and small["items_read"] == large["items_read"]
        if label in RARE_QUERIES:
            same = same and small["results_on_page"] == large["results_on_page"] == RARE_USERS
        result.check(
            f"{name}: calls, items read 10k/1k",
            f"x{large['items_read'] / small['items_read']:.2f}",
            "x1.00 (same matches)" if label in RARE_QUERIES else "x1.00",
            same,
        )
        ratio = large["median_s"] / small["median_s"]
        result.check(f"{name}: median latency 10k/1k", f"x{ratio:.2f}", "<= x1.5", ratio <= 1.5)
    scans = sum(sizes[s][label]["calls"].get("Scan", 0) for s in sizes for label in QUERIES)
    result.check("Scan calls during searches", scans, "0", scans == 0)
    result.metrics = metrics
    return result
