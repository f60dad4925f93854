"""`make run`'s /docs: Swagger UI on the API's own port, reading the app's /openapi.json."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from chalice import Chalice
from chalice.config import Config
from chalice.local import LocalDevServer

from local.docs import DocsRequestHandler, assets_dir, docs_answer
from local.server import FastLocalServer


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Chalice(app_name="docs-test")

    @app.route("/openapi.json", methods=["GET"])
    def openapi() -> dict[str, str]:
        return {"openapi": "3.1.0"}

    local = LocalDevServer(
        app,
        Config.create(chalice_app=app, app_name="docs-test"),
        "127.0.0.1",
        0,
        handler_cls=DocsRequestHandler,
        server_cls=FastLocalServer,
    )
    thread = threading.Thread(target=local.server.serve_forever, daemon=True)
    thread.start()
    host, port = local.server.server_address[:2]
    yield f"http://{host}:{port}"
    local.shutdown()
    local.server.server_close()
    thread.join(timeout=5)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers["Content-Type"], refused.read()


def test_the_page_loads_swagger_ui_on_the_apps_document(base_url: str) -> None:
    status, kind, page = get(f"{base_url}/docs")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert b'url: "/openapi.json"' in page
    assert b"persistAuthorization: true" in page
    for asset in (b"/docs/swagger-ui-bundle.js", b"/docs/swagger-ui.css"):
        assert asset in page
        status, _, body = get(base_url + asset.decode())
        assert status == 200 and len(body) > 10_000
    assert get(f"{base_url}/docs/")[0] == 200


def test_the_bundle_reads_openapi_3_1() -> None:
    """Swagger UI renders OpenAPI 3.1 from version 5 on (4.x refuses the document)."""
    version = assets_dir().name.removeprefix("swagger-ui-")
    assert int(version.split(".")[0]) >= 5, version


def test_other_paths_reach_the_app(base_url: str) -> None:
    status, kind, body = get(f"{base_url}/openapi.json")
    assert (status, body) == (200, b'{"openapi":"3.1.0"}')
    assert kind == "application/json"


@pytest.mark.parametrize(
    "path", ["/docs/../app.py", "/docs/..%2Fapp.py", "/docs/nope.js", "/docsx", "/docs/vendor"]
)
def test_nothing_outside_the_bundles_files_is_served(path: str) -> None:
    assert docs_answer(path) is None
