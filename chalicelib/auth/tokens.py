"""Verification of Cognito ID and access tokens (RS256 JWTs) against the pool's JWKS.

The RS256 signature is checked with python-rsa and the claims with PyJWT, both pure Python:
`cryptography` (PyJWT's usual RSA backend) brings compiled modules built for the Python that
packages the app, which Lambda's python3.12 cannot load when packaging ran on another
version. Both are imported on first use: only the authorizer pays for them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core import clock

ALGORITHM = "RS256"
DEFAULT_LEEWAY_SECONDS = 30
ADMIN_GROUP = "admins"
#: `Authorization: Bearer <token>` (RFC 6750 2.1): the scheme is case-insensitive (RFC 7235
#: 2.1) and one or more spaces separate it from the token.
_BEARER = re.compile(r"bearer +(\S+)", re.IGNORECASE | re.ASCII)


class InvalidToken(Exception):
    """The token must not be trusted; the message says why (for logs, never for clients)."""


def bearer_token(authorization: str) -> str:
    """The token in an Authorization header's value; a bare token (no `Bearer ` scheme) or
    any other scheme is refused like a malformed token."""
    match = _BEARER.fullmatch(authorization.strip())
    if match is None:
        raise InvalidToken("not a bearer token: Authorization must be 'Bearer <token>'")
    return match.group(1)


@dataclass(frozen=True)
class Principal:
    """Who calls. A user (a person, signed in through the user app client), or a machine:
    a trusted producer signed in with the client-credentials grant of a machine app client,
    whose `user_id` is that client's id. A machine is nobody's user: it has no groups, is
    never an admin, and may call only the routes that say they accept one."""

    user_id: str
    groups: frozenset[str]
    #: When the token it came from expires (epoch seconds); not part of who it is.
    expires_at: float = field(default=0.0, compare=False)
    #: The access token's OAuth scopes (`scope`, split on spaces); none for an ID token.
    scopes: frozenset[str] = frozenset()
    is_machine: bool = False

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups and not self.is_machine


def fetch_json(url: str, timeout: float = 3.0) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return dict(json.load(response))


class JwksKeys:
    """The pool's signing keys by `kid`, kept for the process. An unknown `kid` (keys
    rotated) fetches the set again, at most once per `min_refresh_seconds` (a failed fetch
    counts too), so forged kids cannot become a flood of JWKS requests; and the set is
    fetched again after `max_age_seconds`, so a key Cognito withdrew stops being trusted.
    If a fetch fails, the keys already known stay in use."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[str], dict[str, Any]] | None = None,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._fetch = fetch if fetch is not None else fetch_json
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any | None:
        now = self._clock()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._max_age
        key = self._keys.get(kid)
        if key is not None and fresh:
            return key
        with self._lock:
            if self._fetched_at is None or now - self._fetched_at >= self._min_refresh:
                self._fetched_at = now
                try:
                    self._keys = self._load()
                except Exception as exc:  # network, HTTP, JSON: keep the keys we have
                    from chalicelib.core.observability import logger

                    logger.warning("JWKS fetch failed", url=self._url, error=repr(exc))
            return self._keys.get(kid)

    def _load(self) -> dict[str, Any]:
        import rsa
        from jwt.utils import base64url_decode

        keys = {}
        for jwk in self._fetch(self._url).get("keys", []):
            if jwk.get("kty") != "RSA" or not jwk.get("kid") or jwk.get("use", "sig") != "sig":
                continue
            modulus = int.from_bytes(base64url_decode(jwk["n"]), "big")
            exponent = int.from_bytes(base64url_decode(jwk["e"]), "big")
            keys[jwk["kid"]] = rsa.PublicKey(modulus, exponent)
        return keys


class TokenVerifier:
    """Checks signature, `exp`/`nbf`/`iat` (with leeway), issuer, audience (ID tokens) or
    `client_id` (access tokens) and `token_use`. Only RS256; no shared secret anywhere.

    Access tokens of `machine_client_ids` are accepted only as Cognito issues them for the
    client-credentials grant (`sub` is the client id, no username, no groups): a machine
    `Principal` with the token's scopes. Those clients' ID tokens are refused."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        keys: JwksKeys,
        leeway: int = DEFAULT_LEEWAY_SECONDS,
        machine_client_ids: Collection[str] = (),
    ) -> None:
        self._issuer = issuer
        self._client_id = client_id
        self._keys = keys
        self._leeway = leeway
        self._machine_clients = frozenset(machine_client_ids) - {client_id}

    def verify(self, token: str) -> Principal:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no key id")
        key = self._keys.key(kid)
        if key is None:
            raise InvalidToken(f"unknown key id {kid[:64]!r}")
        _check_signature(token, key)
        try:
            claims = jwt.decode(
                token,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "verify_signature": False,  # checked above, with the pool's key
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_iss": True,
                    "verify_aud": False,  # ID tokens only; checked below
                    "require": ["exp", "iat", "iss", "sub", "token_use"],
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        token_use = claims["token_use"]
        machine = False
        if token_use == "id":
            if claims.get("aud") != self._client_id:
                raise InvalidToken("ID token for another app client")
        elif token_use == "access":
            client = claims.get("client_id")
            if isinstance(client, str) and client in self._machine_clients:
                machine = True
                if claims["sub"] != client or "username" in claims or "cognito:groups" in claims:
                    raise InvalidToken("machine client's token is not a client-credentials one")
            elif client != self._client_id:
                raise InvalidToken("access token for another app client")
        else:
            raise InvalidToken(f"token_use {token_use!r}")
        groups = claims.get("cognito:groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidToken("cognito:groups is not a list of names")
        scope = claims.get("scope", "") if token_use == "access" else ""
        if not isinstance(scope, str):
            raise InvalidToken("scope is not a string")
        return Principal(
            user_id=str(claims["sub"]),
            groups=frozenset(groups),
            expires_at=float(claims["exp"]),
            scopes=frozenset(scope.split()),
            is_machine=machine,
        )


class VerifiedTokens:
    """Tokens already verified, so that a warm request pays a look-up instead of an RS256
    check (about 0.25 ms of pure Python): what API Gateway's authorizer cache does
    (`ttl_seconds`), for the invocations that reach the authorizer anyway (its cache
    missed, other API stages, the local stack).

    - Keyed by the whole token: another token of the same user (a new sign-in after a group
      change, say) is verified on its own, and no part of a token stands for the rest.
    - An entry is trusted until the token's `exp` or `ttl` seconds after it was verified,
      whichever comes first, by the app's clock (`core.clock`); past it the token is
      verified again, so an expired token is refused, cached or not.
    - Only successes are kept: a refused token raises and leaves nothing behind.
    - At most `max_entries`, the least recently used dropped first; safe across threads (the
      local server's).

    What no cache of a stateless token can see: a user signed out, disabled or deleted, or
    taken out of a group, keeps what the token says until its `exp`, cached or not (API
    Gateway's cache behaves the same); the `ttl` bounds how long a token signed with a key
    Cognito withdrew from its JWKS is still accepted from memory.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        ttl: float = 300.0,
        max_entries: int = 4096,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._verifier = verifier
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock if clock is not None else _app_time
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                if now < entry[0]:
                    self._entries.move_to_end(token)
                    return entry[1]
                del self._entries[token]
        principal = self._verifier.verify(token)  # InvalidToken: nothing is kept
        until = min(principal.expires_at, now + self._ttl)
        if until > now:  # a token accepted within the leeway past `exp` is never kept
            with self._lock:
                self._entries[token] = (until, principal)
                self._entries.move_to_end(token)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return principal

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every token (the next request of each is verified again)."""
        with self._lock:
            self._entries.clear()


def _app_time() -> float:
    """Now, in epoch seconds, from the app's clock."""
    return clock.now().timestamp()


def _check_signature(token: str, key: Any) -> None:
    """RS256: RSASSA-PKCS1-v1_5 with SHA-256 over `header.payload`."""
    import rsa
    from jwt.utils import base64url_decode

    header_and_payload, _, signature = token.rpartition(".")
    try:
        signed = header_and_payload.encode("ascii")
        used_hash = rsa.verify(signed, base64url_decode(signature), key)
    except (rsa.VerificationError, ValueError, UnicodeError) as exc:
        raise InvalidToken(f"bad signature: {exc.__class__.__name__}") from None
    if used_hash != "SHA-256":
        raise InvalidToken(f"signed with {used_hash}, not SHA-256")
