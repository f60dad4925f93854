"""The chalice CLI, building for the project's Lambda runtime whatever Python runs it:
`python -m infra.chalice_cli package ...` (used by `make package` and `make deploy`).

Chalice takes the function runtime, and the ABI of the wheels it downloads for the
deployment package, from the Python it runs under (`Config.lambda_python_version`; its
source says "we may open this up to configuration later"). The app has a compiled
dependency (Pillow), so a package built under Python 3.11 would hold 3.11 extension modules
whatever runtime the template then names. Two small patches make Chalice build for
TARGET_RUNTIME instead:

- `Config.lambda_python_version` answers TARGET_RUNTIME, so Chalice names that runtime and
  asks for its ABI (cp312) and glibc (2.34, which Pillow's manylinux_2_28 wheels need);
- its `pip download` of manylinux wheels gets the matching `--python-version`, which
  Chalice leaves out (pip then assumes the running Python's version and finds no cp312
  wheel; Chalice reports "Could not install dependencies" and still exits 0).

`infra.package.check_deployment_zip` then checks the result: every requirement present,
no extension module of another CPython, no wheel compiled on this machine.
"""

from __future__ import annotations

import sys
from typing import Any

TARGET_RUNTIME = "python3.12"


def patch_chalice(runtime: str = TARGET_RUNTIME) -> None:
    from chalice.config import Config
    from chalice.deploy.packager import PipRunner

    Config.lambda_python_version = property(lambda self: runtime)  # type: ignore[assignment,method-assign]
    execute = PipRunner._execute
    python_version = runtime.removeprefix("python")

    def execute_for_runtime(self: Any, command: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        if command == "download" and "--abi" in args and "--python-version" not in args:
            args = [*args[:-1], "--python-version", python_version, args[-1]]
        return execute(self, command, args, *rest, **kw)

    PipRunner._execute = execute_for_runtime  # type: ignore[method-assign]


def main() -> int:
    from chalice.cli import main as chalice_main

    from infra.chalice_commands import allow_deploy_commands

    patch_chalice()
    allow_deploy_commands()
    sys.argv[0] = "chalice"
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
