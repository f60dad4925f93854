"""Every route of the API answers a browser's preflight with exactly its own methods."""

from __future__ import annotations

from typing import Any

from app import app

#: Routes a browser never calls cross-origin.
NOT_FOR_BROWSERS = {"/health"}


def test_every_route_has_a_preflight_naming_its_methods(client: Any) -> None:
    origin = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"}
    checked = 0
    for path, entries in app.routes.items():
        methods = {m for m in entries if m != "OPTIONS"}
        if path in NOT_FOR_BROWSERS or not methods:
            assert "OPTIONS" not in entries, path
            continue
        assert "OPTIONS" in entries, f"{path} has no preflight"
        concrete = path.replace("{", "x").replace("}", "")
        answer = client.http.request("OPTIONS", concrete, headers=origin)
        assert answer.status_code == 204, path
        allowed = set(answer.headers["Access-Control-Allow-Methods"].split(","))
        assert allowed == methods | {"OPTIONS"}, path
        checked += 1
    assert checked >= 15
