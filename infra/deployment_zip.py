"""The deployment zip `chalice package` writes, made reproducible and checked before it is
shipped (infra/package.py): bytecode out, every requirement in, no extension module or
locally built wheel that would not load on Lambda's python3.12."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from infra.chalice_cli import TARGET_RUNTIME
from infra.paths import PROJECT_DIR

_EXTENSION_MODULE = re.compile(r"\.cpython-(\d+)[^/]*\.(so|pyd)$")


def strip_bytecode(zip_path: Path) -> int:
    """Drop `__pycache__/` and `*.pyc` from the zip (Chalice copies chalicelib/ as it lies on
    disk): bytecode of the packaging Python is dead weight on python3.12 and carries source
    mtimes, so the zip would differ per checkout. Returns how many entries were dropped."""
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.infolist()
        kept = [
            e
            for e in entries
            if "__pycache__/" not in e.filename and not e.filename.endswith(".pyc")
        ]
        if len(kept) == len(entries):
            return 0
        data = {e.filename: archive.read(e) for e in kept}
    rewritten = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(rewritten, "w") as archive:
        for entry in kept:
            archive.writestr(entry, data[entry.filename], compress_type=entry.compress_type)
    rewritten.replace(zip_path)
    return len(entries) - len(kept)


def zip_problems(
    zip_path: Path, runtime: str = TARGET_RUNTIME, required: list[str] | None = None
) -> list[str]:
    """What would keep the zip from loading on Lambda: a requirement missing, compiled
    extension modules built for another CPython, or a wheel built here (Chalice compiles a
    package from source, silently, when no manylinux wheel fits the runtime: it would link
    this machine's libraries, absent on Lambda)."""
    wanted = runtime.removeprefix("python").replace(".", "")
    with zipfile.ZipFile(zip_path) as archive:
        wrong = [
            name
            for name in archive.namelist()
            if (m := _EXTENSION_MODULE.search(name)) and m.group(1) != wanted
        ]
        local_builds = [
            name.split("/")[0]
            for name in archive.namelist()
            if name.endswith(".dist-info/WHEEL")
            and any(
                tag.endswith("linux_x86_64") and "manylinux" not in tag
                for tag in re.findall(r"^Tag: (\S+)$", archive.read(name).decode(), re.M)
            )
        ]
        installed = {
            _canonical(name.split("/")[0].removesuffix(".dist-info").rsplit("-", 1)[0])
            for name in archive.namelist()
            if ".dist-info/" in name
        }
    wanted_dists = pinned_requirements() if required is None else required
    missing = sorted(set(wanted_dists) - installed)
    problems = []
    if missing:
        problems.append(
            f"{zip_path} lacks {missing} from requirements.txt: Chalice could not install "
            f"them for {runtime} (it says so, then carries on)."
        )
    if local_builds:
        problems.append(
            f"{zip_path} holds packages compiled on this machine, not manylinux wheels: "
            f"{local_builds}. Pin a version that publishes a manylinux wheel for {runtime}."
        )
    if wrong:
        problems.append(
            f"{zip_path} holds extension modules built for another Python than {runtime} "
            f"(Chalice builds for the Python it runs under): {wrong[:5]}. "
            f"Run the packaging under Python {runtime.removeprefix('python')}."
        )
    return problems


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements() -> list[str]:
    """The distributions requirements.txt names (canonical names)."""
    lines = (PROJECT_DIR / "requirements.txt").read_text().splitlines()
    return [
        _canonical(re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0])
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]
