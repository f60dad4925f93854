"""Tokens for tests: signed like Cognito's (RS256, kid), or forged in the usual ways."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_testpool"
CLIENT_ID = "test-client-id"


class SigningKey:
    """An RSA key pair with its JWKS entry."""

    def __init__(self, kid: str = "test-key") -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64(numbers.e.to_bytes(3, "big")),
        }

    def sign(self, claims: dict[str, Any], with_kid: bool = True) -> str:
        headers = {"kid": self.kid} if with_kid else {}
        return jwt.encode(claims, self.private, algorithm="RS256", headers=headers)


def claims(
    sub: str = "00000000-0000-4000-8000-000000000001",
    token_use: str = "access",
    groups: list[str] | None = None,
    issuer: str = ISSUER,
    client_id: str = CLIENT_ID,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iss": issuer, "iat": now, "exp": now + 3600}
    body["token_use"] = token_use
    if token_use == "id":
        body["aud"] = client_id
    else:
        body["client_id"] = client_id
    if groups is not None:
        body["cognito:groups"] = groups
    return {**body, **extra}


def unsigned(payload: dict[str, Any], kid: str = "test-key") -> str:
    """An `alg: none` token."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}."


def hs256_with_public_key(payload: dict[str, Any], key: SigningKey) -> str:
    """The classic key-confusion forgery: HMAC keyed with the (public) RSA key."""
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    import hashlib
    import hmac

    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
