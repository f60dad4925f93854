"""TokenVerifier and JwksKeys, with keys made here: every way a token can be wrong."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chalicelib.auth.tokens import (
    InvalidToken,
    JwksKeys,
    Principal,
    TokenVerifier,
    bearer_token,
)
from tests.unit.auth_helpers import (
    CLIENT_ID,
    ISSUER,
    SigningKey,
    claims,
    hs256_with_public_key,
    unsigned,
)

KEY = SigningKey("key-1")


class CountingJwks:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, url: str) -> dict:
        self.fetches += 1
        return {"keys": [k.jwk for k in self.keys]}


@pytest.fixture
def jwks() -> CountingJwks:
    return CountingJwks(KEY)


@pytest.fixture
def verifier(jwks: CountingJwks) -> TokenVerifier:
    return TokenVerifier(ISSUER, CLIENT_ID, JwksKeys("https://example/jwks.json", fetch=jwks))


@pytest.mark.parametrize("token_use", ["id", "access"])
def test_valid_tokens(verifier: TokenVerifier, token_use: str) -> None:
    token = KEY.sign(claims(token_use=token_use, groups=["admins", "staff"]))
    principal = verifier.verify(token)
    assert principal == Principal(
        "00000000-0000-4000-8000-000000000001", frozenset({"admins", "staff"})
    )
    assert principal.is_admin


def test_no_groups_is_not_admin(verifier: TokenVerifier) -> None:
    assert not verifier.verify(KEY.sign(claims())).is_admin


def test_leeway_admits_small_clock_skew(verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(KEY.sign(claims(exp=now - 10, iat=now - 100)))
    assert verifier.verify(KEY.sign(claims(nbf=now + 10)))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: KEY.sign(claims(exp=int(time.time()) - 120)), "expired"),
        (lambda: KEY.sign(claims(nbf=int(time.time()) + 600)), "not yet valid"),
        (lambda: KEY.sign(claims(iat=int(time.time()) + 600)), "issued in the future"),
        (KEY.sign(claims(issuer="https://cognito-idp.us-east-1.amazonaws.com/other")), "issuer"),
        (KEY.sign(claims(token_use="id", client_id="another-client")), "audience"),
        (KEY.sign(claims(token_use="access", client_id="another-client")), "client_id"),
        (KEY.sign(claims(token_use="refresh")), "token_use"),
        (KEY.sign({k: v for k, v in claims().items() if k != "token_use"}), "no token_use"),
        (KEY.sign({k: v for k, v in claims().items() if k != "exp"}), "no exp"),
        (KEY.sign(claims(**{"cognito:groups": "admins"})), "groups not a list"),
        (SigningKey("key-1").sign(claims()), "signed by another key with the same kid"),
        (SigningKey("key-9").sign(claims()), "unknown kid"),
        (KEY.sign(claims(), with_kid=False), "no kid"),
        (unsigned(claims(), kid="key-1"), "alg none"),
        (hs256_with_public_key(claims(), KEY), "HS256 keyed with the public key"),
        ("", "empty"),
        ("garbage", "garbage"),
        ("a.b.c", "three garbage segments"),
        (KEY.sign(claims())[:-4] + "AAAA", "tampered signature"),
        (KEY.sign(claims()).rsplit(".", 1)[0] + ".", "signature stripped"),
        ("é." + KEY.sign(claims()), "non-ascii"),
    ],
)
def test_rejected(verifier: TokenVerifier, token: str | Callable[[], str], reason: str) -> None:
    # Tokens whose validity depends on the time are signed when the test runs, not when
    # the module is collected (a long run would otherwise reach their `nbf`).
    with pytest.raises(InvalidToken):
        verifier.verify(token() if callable(token) else token)


@pytest.mark.parametrize(
    "header", ["Bearer a.b.c", "bearer a.b.c", "BEARER   a.b.c", " Bearer a.b.c ", "bEaReR a.b.c"]
)
def test_bearer_scheme_is_case_insensitive_with_one_or_more_spaces(header: str) -> None:
    assert bearer_token(header) == "a.b.c"


@pytest.mark.parametrize(
    "header",
    [
        "a.b.c",
        "",
        "Bearer",
        "Bearer ",
        "Bearera.b.c",
        "Bearer\ta.b.c",
        "Bearer a.b c",
        "Basic a.b.c",
        "Token a.b.c",
        "Bearer: a.b.c",
    ],
)
def test_a_bare_token_or_another_scheme_is_refused(header: str) -> None:
    with pytest.raises(InvalidToken):
        bearer_token(header)


def test_tampered_payload_is_rejected(verifier: TokenVerifier) -> None:
    header, _, signature = KEY.sign(claims()).split(".")
    forged_payload = KEY.sign(claims(groups=["admins"])).split(".")[1]
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{forged_payload}.{signature}")


def test_keys_are_cached_and_refreshed_on_rotation(jwks: CountingJwks) -> None:
    now = [1000.0]
    keys = JwksKeys("u", fetch=jwks, min_refresh_seconds=30, clock=lambda: now[0])
    verifier = TokenVerifier(ISSUER, CLIENT_ID, keys)
    for _ in range(5):
        verifier.verify(KEY.sign(claims()))
    assert jwks.fetches == 1

    rotated = SigningKey("key-2")
    jwks.keys.append(rotated)
    now[0] += 31
    assert verifier.verify(rotated.sign(claims()))  # unknown kid: fetched again
    assert jwks.fetches == 2


def test_unknown_kids_cannot_flood_the_jwks_endpoint(jwks: CountingJwks) -> None:
    now = [1000.0]
    keys = JwksKeys("u", fetch=jwks, min_refresh_seconds=30, clock=lambda: now[0])
    verifier = TokenVerifier(ISSUER, CLIENT_ID, keys)
    for i in range(20):
        with pytest.raises(InvalidToken):
            verifier.verify(SigningKey(f"forged-{i % 2}").sign(claims()))
    assert jwks.fetches == 1


def test_verified_tokens_are_remembered_until_expiry_or_ttl(jwks: CountingJwks) -> None:
    from chalicelib.auth.tokens import VerifiedTokens

    calls = []

    class Counting(TokenVerifier):
        def verify(self, token: str) -> Principal:
            calls.append(token)
            return super().verify(token)

    now = [time.time()]
    inner = Counting(ISSUER, CLIENT_ID, JwksKeys("u", fetch=jwks))
    cache = VerifiedTokens(inner, ttl=300, clock=lambda: now[0])
    token = KEY.sign(claims(exp=int(now[0]) + 120))
    for _ in range(3):
        cache.verify(token)
    assert len(calls) == 1
    now[0] += 121  # past the token's exp: not trusted from memory, verified again
    cache.verify(token)
    assert len(calls) == 2
    long_lived = KEY.sign(claims(exp=int(now[0]) + 3600))
    cache.verify(long_lived)
    now[0] += 301  # past the ttl: verified again
    cache.verify(long_lived)
    assert calls.count(long_lived) == 2


def test_bad_tokens_are_never_remembered(verifier: TokenVerifier) -> None:
    from chalicelib.auth.tokens import VerifiedTokens

    cache = VerifiedTokens(verifier)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            cache.verify("garbage")


def test_a_jwks_outage_is_a_rejected_token_not_a_crash() -> None:
    attempts = []

    def down(url: str) -> dict:
        attempts.append(url)
        raise OSError("connection refused")

    now = [1000.0]
    keys = JwksKeys("u", fetch=down, min_refresh_seconds=30, clock=lambda: now[0])
    verifier = TokenVerifier(ISSUER, CLIENT_ID, keys)
    for i in range(3):
        with pytest.raises(InvalidToken):
            verifier.verify(SigningKey(f"forged-{i}").sign(claims()))
    assert len(attempts) == 1  # a failed fetch counts against the refresh interval


def test_known_keys_survive_a_failed_refresh_and_withdrawn_keys_expire() -> None:
    served = {"keys": [KEY.jwk]}
    fail = [False]

    def fetch(url: str) -> dict:
        if fail[0]:
            raise OSError("down")
        return served

    now = [1000.0]
    keys = JwksKeys("u", fetch=fetch, min_refresh_seconds=30, max_age_seconds=3600,
                    clock=lambda: now[0])  # fmt: skip
    verifier = TokenVerifier(ISSUER, CLIENT_ID, keys)
    token = KEY.sign(claims())
    assert verifier.verify(token)
    fail[0] = True
    now[0] += 3601  # stale: a refresh is tried, fails, the known key stays in use
    assert verifier.verify(token)
    fail[0] = False
    served["keys"] = []  # Cognito withdrew the key
    now[0] += 3601
    with pytest.raises(InvalidToken):
        verifier.verify(token)


# --- machine identities (client-credentials access tokens) ---------------------------------

MACHINE_CLIENT = "machine-client-id"
METRICS = "telemetry/metrics.write"


def machine_claims(**extra: object) -> dict:
    """As Cognito issues them for the client-credentials grant: `sub` is the client."""
    body = claims(sub=MACHINE_CLIENT, client_id=MACHINE_CLIENT, scope=METRICS)
    return {**body, **extra}


@pytest.fixture
def with_machines(jwks: CountingJwks) -> TokenVerifier:
    keys = JwksKeys("https://example/jwks.json", fetch=jwks)
    return TokenVerifier(ISSUER, CLIENT_ID, keys, machine_client_ids=[MACHINE_CLIENT])


def test_a_machine_clients_token_is_a_machine_principal_with_its_scopes(
    with_machines: TokenVerifier,
) -> None:
    principal = with_machines.verify(KEY.sign(machine_claims()))
    assert principal.user_id == MACHINE_CLIENT
    assert principal.is_machine and principal.scopes == frozenset({METRICS})
    assert not principal.is_admin and principal.groups == frozenset()


def test_a_users_token_is_never_a_machine(with_machines: TokenVerifier) -> None:
    principal = with_machines.verify(KEY.sign(claims(scope="aws.cognito.signin.user.admin")))
    assert not principal.is_machine
    assert principal.scopes == frozenset({"aws.cognito.signin.user.admin"})
    # a user's token claiming the metrics scope is still a user's
    assert not with_machines.verify(KEY.sign(claims(scope=METRICS))).is_machine
    assert with_machines.verify(KEY.sign(claims(token_use="id"))).scopes == frozenset()


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        (machine_claims(sub="00000000-0000-4000-8000-000000000001"), "a user's sub"),
        (machine_claims(username="ada"), "a username"),
        (machine_claims(**{"cognito:groups": ["admins"]}), "groups (would be an admin)"),
        (claims(token_use="id", client_id=MACHINE_CLIENT, sub=MACHINE_CLIENT), "an ID token"),
        (machine_claims(scope=["telemetry/metrics.write"]), "scope not a string"),
    ],
)
def test_a_machine_clients_token_must_be_a_client_credentials_one(
    with_machines: TokenVerifier, token_claims: dict, reason: str
) -> None:
    with pytest.raises(InvalidToken):
        with_machines.verify(KEY.sign(token_claims))


def test_machine_tokens_are_refused_where_no_machine_client_is_configured(
    verifier: TokenVerifier,
) -> None:
    with pytest.raises(InvalidToken, match="another app client"):
        verifier.verify(KEY.sign(machine_claims()))


def test_an_admin_group_never_makes_a_machine_an_admin() -> None:
    assert not Principal("m", frozenset({"admins"}), is_machine=True).is_admin
