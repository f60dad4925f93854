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
import os
import warnings


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


def serve(host: str, port: int, threads: int = 16) -> None:
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    os.environ["MOTO_PORT"] = str(port)  # moto's own call-backs (Step Functions) come here
    warnings.simplefilter("ignore")  # e.g. resource types moto's CloudFormation skips
    _cache_moto_lookups()
    app = DomainDispatcherApplication(create_backend_app)
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
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    serve(args.host, args.port, args.threads)


if __name__ == "__main__":
    main()
