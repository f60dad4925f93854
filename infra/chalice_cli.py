"""The chalice CLI, building for the project's Lambda runtime whatever Python runs it:
`python -m infra.chalice_cli package ...` (used by `make package` and `make deploy`).

Chalice takes the function runtime, and the ABI of the wheels it downloads for the
deployment package, from the Python it runs under (`Config.lambda_python_version`; its
source says "we may open this up to configuration later"). The app has a compiled
dependency (Pillow), so a package built under Python 3.11 would hold 3.11 extension modules
whatever runtime the template then names. Here that one property answers TARGET_RUNTIME, so
Chalice downloads the manylinux wheels of that runtime (cp312, glibc 2.34) and names it, on
both deploy paths.
"""

from __future__ import annotations

import sys

TARGET_RUNTIME = "python3.12"


def main() -> int:
    from chalice.cli import main as chalice_main
    from chalice.config import Config

    Config.lambda_python_version = property(lambda self: TARGET_RUNTIME)  # type: ignore[assignment,method-assign]
    sys.argv[0] = "chalice"
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
