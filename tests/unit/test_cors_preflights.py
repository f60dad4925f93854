"""Every route of the API answers a browser's preflight with exactly its own methods."""

from __future__ import annotations

from app import PREFLIGHTS, app

#: Routes a browser never calls cross-origin.
NOT_FOR_BROWSERS = {"/health"}


def test_every_route_has_a_preflight_naming_its_methods() -> None:
    for path, entries in app.routes.items():
        methods = {m for m in entries if m != "OPTIONS"}
        if path in NOT_FOR_BROWSERS or not methods:
            continue
        assert path in PREFLIGHTS, f"{path} has no preflight"
        assert set(PREFLIGHTS[path].split(",")) == methods, path
        assert "OPTIONS" in entries, path
    assert set(PREFLIGHTS) <= set(app.routes)
