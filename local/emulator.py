"""The AWS emulator: moto's server app on 127.0.0.1, served by waitress.

Run as its own process (`python -m local.emulator --port 5000`) so that it has a core of its
own while the API uses the other. moto's bundled server (werkzeug's development server) spends
about 0.7 ms of HTTP handling on each call; waitress about 0.3 ms, and it sets TCP_NODELAY, so
keep-alive clients (botocore) never wait on Nagle and delayed ACKs. One known difference:
waitress drops request headers with an underscore in their name (S3 metadata keys such as
`x-amz-meta-my_key`); use dashes.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from typing import Any


def _cache_moto_lookups() -> None:
    """moto (5.2.5) lists its package directory and introspects a response class on every
    request: about 0.3 ms of a 0.8 ms GetItem. Both answers never change in a running
    process, so remember them. Skipped if a moto upgrade renames them."""
    from functools import cache

    import moto.backends
    import moto.core.responses

    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules
    method_names = getattr(moto.core.responses, "method_names_from_class", None)
    if method_names is not None:
        moto.core.responses.method_names_from_class = cache(method_names)


_ATTRIBUTE_VALUE_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


def _is_wire_attribute_value(value: object) -> bool:
    """True if `value` is a DynamoDB AttributeValue already in its JSON wire form."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    [(kind, inner)] = value.items()
    if kind in ("S", "N", "B"):
        return isinstance(inner, str)
    if kind in ("SS", "NS", "BS"):
        return isinstance(inner, list) and all(isinstance(item, str) for item in inner)
    if kind in ("BOOL", "NULL"):
        return isinstance(inner, bool)
    if kind == "M":
        return isinstance(inner, dict) and all(
            isinstance(name, str) and _is_wire_attribute_value(item) for name, item in inner.items()
        )
    if kind == "L":
        return isinstance(inner, list) and all(_is_wire_attribute_value(item) for item in inner)
    return False


def _pass_through_dynamodb_attribute_values() -> None:
    """moto serialises each DynamoDB AttributeValue by walking its ten-member shape with
    name-guessing attribute pickers: the largest cost of a GetItem of a 12-attribute user
    (about a third of the emulator's CPU). moto's DynamoDB backend already holds them in
    their JSON wire form, so emit them as they are; anything else (bytes, numbers) takes the
    normal path. tests/unit/test_emulator.py checks the answers equal stock moto's."""
    from moto.core.serialize import BaseJSONSerializer

    original = BaseJSONSerializer._serialize_type_structure

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _is_wire_attribute_value(value):
            serialized[self.get_serialized_name(shape, key)] = value
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = serialize_structure  # type: ignore[method-assign]


class _KnownGaps(logging.Filter):
    """moto warns at every provisioning that its CloudFormation skips the DLQ alarm: known
    and documented (README, Known limits), so not repeated on every `make run`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.getMessage().startswith("No Moto CloudFormation support for")
            and "AWS::CloudWatch::Alarm" in record.getMessage()
        )


def serve(
    host: str,
    port: int,
    threads: int = 64,
    lambda_endpoint: str | None = None,
    arm_faults_later: bool = False,
) -> None:
    """Serve moto on host:port. `lambda_endpoint`: where Lambda invocations run (the local
    runtime's invoke endpoint; see `local.fidelity`).

    Each Lambda task a state machine runs holds a server thread while the handler runs, and the
    handler's own AWS calls need others: `threads` bounds how many tasks can be in flight.

    Faults (`local.faults`) come from LOCAL_FAULTS, LOCAL_FAULT_KINDS, LOCAL_FAULT_SEED and
    LOCAL_FAULT_TIMEOUT_S; `arm_faults_later`: none until `POST /_local/faults {"armed":
    true}` (the stack arms them once it has seeded the catalog with the app's own code)."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from local import fidelity, oauth2

    os.environ["MOTO_PORT"] = str(port)  # moto's own call-backs (Step Functions) come here
    fidelity.apply(lambda_endpoint)
    warnings.simplefilter("ignore")  # e.g. resource types moto's CloudFormation skips
    logging.getLogger("moto").addFilter(_KnownGaps())
    # The ASL interpreter logs every failed state as an error with the state's whole repr: a
    # Catch that works as designed (an order out of stock) is not an emulator error. Each
    # execution's path is in its history (GetExecutionHistory), each task in the event
    # runtime's log.
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    _cache_moto_lookups()
    _pass_through_dynamodb_attribute_values()
    # The user pool's OAuth 2.0 token endpoint (client credentials), which moto lacks.
    app = oauth2.TokenEndpoint(DomainDispatcherApplication(create_backend_app))
    app = _fault_injector(app, armed=not arm_faults_later)
    # What SES and SNS sent, for the console, without moto's whole-state dump.
    from local.outbox import OutboxEndpoint

    app = OutboxEndpoint(app)
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=threads,
        backlog=1024,
        connection_limit=1000,
        channel_timeout=300,
        max_request_body_size=5 * 1024**3,
        ident="serverless-app-emulator",
        _quiet=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--lambda-endpoint", help="the local runtime's Lambda invoke endpoint")
    parser.add_argument(
        "--arm-faults-later",
        action="store_true",
        help="inject LOCAL_FAULTS only once POST /_local/faults arms them",
    )
    args = parser.parse_args()
    serve(args.host, args.port, args.threads, args.lambda_endpoint, args.arm_faults_later)


def _fault_injector(app: Any, armed: bool) -> Any:
    """moto's app behind the fault injector, its plan from the environment (a bad spec stops
    the emulator here, with the reason)."""
    from local.faults import DEFAULT_TIMEOUT_S, FaultInjector, parse_faults

    plan = parse_faults(os.environ.get("LOCAL_FAULTS"), os.environ.get("LOCAL_FAULT_KINDS"))
    seed = os.environ.get("LOCAL_FAULT_SEED")
    timeout_s = float(os.environ.get("LOCAL_FAULT_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    return FaultInjector(app, plan, int(seed) if seed else None, timeout_s, armed=armed)


if __name__ == "__main__":
    main()
