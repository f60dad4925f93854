"""Running the app in this process against moto (tests, benchmarks).

The app keeps per-process state on purpose (settings, boto3 clients, the Cognito config, the
token verifier): all of it is forgotten here, between two emulated "processes". And moto's
user pool publishes its JWKS only over HTTP, so the authorizer is handed it directly.
"""

from __future__ import annotations

from typing import Any


def reset_app_caches() -> None:
    """Forget every cached factory and value of the app's loaded modules (each a
    `functools.cache` function defined in its module, so a new factory needs no entry here),
    and the boto3 clients. The boto3 session stays, as in a warm Lambda: handlers registered
    on its events (call counters, the tests' IAM recorder) reach the clients made after."""
    import sys

    from chalicelib.core import aws

    for module_name, module in list(sys.modules.items()):
        if module is None or module is aws or not module_name.startswith("chalicelib."):
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and (
                getattr(value, "__module__", None) == module_name
            ):
                value.cache_clear()
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


def mailed_code(email: str, region: str = "us-east-1") -> str:
    """The newest verification code the app asked moto's SES (in this process) to mail to
    `email`: what its owner would read in their inbox."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from local.mailbox import code_in

    wanted = email.casefold()
    for message in reversed(ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages):
        to = [a.casefold() for addresses in message.destinations.values() for a in addresses]
        code = code_in(message.subject)
        if wanted in to and code is not None:
            return code
    raise LookupError(f"no code was mailed to {email}")
