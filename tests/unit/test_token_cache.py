"""The authorizer's cache of verified tokens (`VerifiedTokens`): keyed by the whole token,
never trusted past the token's `exp` by the app's clock, bounded (least recently used out
first), and never a refusal remembered as a success.

The app's clock and PyJWT's (which checks `exp` against the machine's time) are moved
together here, so a token can expire during a test without waiting for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from chalicelib.auth.tokens import InvalidToken, JwksKeys, Principal, TokenVerifier, VerifiedTokens
from chalicelib.core import clock
from tests.unit.auth_helpers import CLIENT_ID, ISSUER, SigningKey, claims

KEY = SigningKey("cache-key")
SUB = "00000000-0000-4000-8000-00000000cafe"


class Time:
    """One time source for the app's clock and PyJWT's, in epoch seconds."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def shared_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[Time]:
    shared = Time()

    class PyJwtDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(shared.now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", PyJwtDatetime)
    with clock.use(lambda: datetime.fromtimestamp(shared.now, UTC)):
        yield shared


class Counting(TokenVerifier):
    """A real verifier that counts the tokens it was asked to verify."""

    def __init__(self, **kwargs: Any) -> None:
        keys = JwksKeys("https://example/jwks.json", fetch=lambda _: {"keys": [KEY.jwk]})
        super().__init__(ISSUER, CLIENT_ID, keys, **kwargs)
        self.calls: list[str] = []

    def verify(self, token: str) -> Principal:
        self.calls.append(token)
        return super().verify(token)


def token_at(now: float, lifetime: int = 3600, **extra: Any) -> str:
    return KEY.sign(claims(sub=SUB, iat=int(now), exp=int(now) + lifetime, **extra))


def test_a_warm_token_is_verified_once(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner)
    token = token_at(shared_time.now)
    principals = [cache.verify(token) for _ in range(5)]
    assert inner.calls == [token]
    assert {p.user_id for p in principals} == {SUB}


def test_a_cached_token_is_refused_once_it_expired(shared_time: Time) -> None:
    inner = Counting()  # PyJWT's leeway: 30 s past `exp`
    cache = VerifiedTokens(inner, ttl=300)
    token = token_at(shared_time.now, lifetime=60)
    cache.verify(token)
    shared_time.advance(59)
    cache.verify(token)
    assert len(inner.calls) == 1  # still from memory, one second before `exp`
    shared_time.advance(2)  # past `exp`: never from memory again
    cache.verify(token)  # verified anew, accepted within the leeway...
    cache.verify(token)
    assert len(inner.calls) == 3  # ...but not kept
    assert len(cache) == 0
    shared_time.advance(30)
    for attempt in (4, 5):
        with pytest.raises(InvalidToken):
            cache.verify(token)
        assert len(inner.calls) == attempt  # refused each time, never from memory


def test_an_entry_lasts_at_most_the_ttl(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner, ttl=300)
    token = token_at(shared_time.now, lifetime=3600)
    cache.verify(token)
    shared_time.advance(299)
    cache.verify(token)
    assert len(inner.calls) == 1
    shared_time.advance(2)
    cache.verify(token)
    assert len(inner.calls) == 2


def test_the_cache_reads_the_apps_clock(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner)
    token = token_at(shared_time.now, lifetime=60)
    cache.verify(token)
    with clock.use(lambda: datetime.fromtimestamp(shared_time.now + 61, UTC)):
        cache.verify(token)  # PyJWT still sees the old time (and accepts): the app's says stale
    assert len(inner.calls) == 2


def test_another_token_of_the_same_user_is_verified_on_its_own(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner)
    before = token_at(shared_time.now)
    assert not cache.verify(before).is_admin
    shared_time.advance(1)  # signed in again after joining the admins group
    after = token_at(shared_time.now, **{"cognito:groups": ["admins"]})
    assert cache.verify(after).is_admin
    assert not cache.verify(before).is_admin  # each token keeps its own claims
    assert inner.calls == [before, after]


def test_a_token_differing_in_any_part_is_not_the_cached_one(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner)
    token = token_at(shared_time.now)
    cache.verify(token)
    header, payload, signature = token.split(".")
    forged_signature = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    for forged in (f"{header}.{payload}.{forged_signature}", f"{header}.{payload}.", token[:-1]):
        with pytest.raises(InvalidToken):
            cache.verify(forged)
    assert cache.verify(token).user_id == SUB
    assert len(inner.calls) == 4


def test_refusals_are_never_remembered(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner)
    refused = KEY.sign(claims(sub=SUB, client_id="another-client"))
    for attempt in (1, 2, 3):
        with pytest.raises(InvalidToken):
            cache.verify(refused)
        assert len(inner.calls) == attempt
    assert len(cache) == 0


def test_the_least_recently_used_token_goes_first(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner, max_entries=2)
    first, second, third = (token_at(shared_time.now + i) for i in range(3))
    cache.verify(first)
    cache.verify(second)
    cache.verify(first)  # used again: `second` is now the oldest
    cache.verify(third)
    assert len(cache) == 2
    inner.calls.clear()
    cache.verify(first)
    cache.verify(third)
    assert inner.calls == []
    cache.verify(second)
    assert inner.calls == [second]
    assert len(cache) == 2


def test_threads_share_it_within_its_bound(shared_time: Time) -> None:
    inner = Counting()
    cache = VerifiedTokens(inner, max_entries=8)
    tokens = [token_at(shared_time.now + i) for i in range(20)]
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                assert cache.verify(tokens[(i + offset) % len(tokens)]).user_id == SUB
        except BaseException as exc:  # collected for the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(cache) <= 8
