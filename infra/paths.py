"""Where the project is on disk, for the tooling (infra, local, bench, tests): its root, the
folder holding app.py, .chalice/ and infra/."""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
