"""Running the app in this process against moto (tests, benchmarks).

The app keeps per-process state on purpose (settings, boto3 clients, the Cognito config, the
token verifier): all of it is forgotten here, between two emulated "processes". And moto's
user pool publishes its JWKS only over HTTP, so the authorizer is handed it directly.
"""

from __future__ import annotations

from typing import Any


def reset_app_caches() -> None:
    """Forget the app's cached factories and values and the boto3 clients. The boto3
    session stays, as in a warm Lambda: handlers registered on its events (call counters,
    the tests' IAM recorder) keep seeing every client made after."""
    from chalicelib.auth.authorizer import verifier
    from chalicelib.auth.config import cognito_config
    from chalicelib.core import aws, settings
    from chalicelib.images import image_analysis, images_service, thumbnail_maker
    from chalicelib.search import search_index_keeper, search_service
    from chalicelib.telemetry import telemetry_ingest, telemetry_processor
    from chalicelib.users import profile_set_up, user_events_publisher, user_welcome, users_service

    for cached in (settings.cors_allow_origins, users_service, cognito_config, verifier,
                   search_service, search_index_keeper, user_events_publisher, user_welcome,
                   profile_set_up, telemetry_ingest, telemetry_processor, images_service,
                   image_analysis, thumbnail_maker):  # fmt: skip
        cached.cache_clear()
    aws.reset_clients()


def moto_jwks() -> dict[str, Any]:
    """The public keys moto signs its Cognito tokens with."""
    from moto.utilities.utils import load_resource

    return dict(load_resource("cognitoidp/resources/jwks-public.json"))


def serve_moto_jwks() -> Any:
    """Make the authorizer read moto's JWKS without HTTP; returns a function that undoes it."""
    import chalicelib.auth.tokens as tokens

    original = tokens.fetch_json
    jwks = moto_jwks()
    tokens.fetch_json = lambda url, timeout=3.0: jwks

    def restore() -> None:
        tokens.fetch_json = original

    return restore
