"""The OpenAPI document is the app's routes and models: none missing, none extra, valid 3.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from chalice import Chalice
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from app import app
from chalicelib import contract
from chalicelib.contract.openapi import document, load_model, operation_routes, served_document
from infra.paths import PROJECT_DIR

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(app)


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    errors = [e.message for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []


def test_every_route_is_an_operation_and_every_operation_a_route(doc: dict[str, Any]) -> None:
    routes = operation_routes(app)
    assert len(routes) >= 25  # app.py's routes, /openapi.json included
    assert documented(doc) == routes
    assert ("OPTIONS", "/users") not in documented(doc)  # CORS preflights are not the API's


def test_every_reference_resolves_in_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # KeyError: a dangling $ref
        assert isinstance(node, dict), ref


def test_every_declared_model_is_importable() -> None:
    declared = set()
    for entries in app.routes.values():
        for method, entry in entries.items():
            spec = contract.contract_of(entry.view_function)
            if method != "OPTIONS" and spec is not None:
                declared |= {m for m in [spec.request, *spec.responses.values()] if m}
    assert len(declared) >= 15
    for dotted in declared:
        assert hasattr(load_model(dotted), "model_json_schema"), dotted


def test_a_route_without_a_contract_fails_the_document() -> None:
    other = Chalice(app_name="undeclared")

    @other.route("/things", methods=["GET"])
    def things() -> dict:
        return {}

    with pytest.raises(LookupError, match="GET /things"):
        document(other)


def test_a_contract_that_says_public_on_a_route_with_a_token_fails_the_document() -> None:
    other = Chalice(app_name="mismatch")

    @other.authorizer()
    def auth(request: Any) -> Any:
        raise AssertionError("never called")

    @other.route("/things", methods=["GET"], authorizer=auth)
    @contract.operation("Things", responses={200: None}, auth="public")
    def things() -> dict:
        return {}

    with pytest.raises(ValueError, match="auth='public'"):
        document(other)


def test_security_follows_the_routes_authorizer(doc: dict[str, Any]) -> None:
    public = set()
    for method, path in operation_routes(app):
        operation = doc["paths"][path][method.lower()]
        if app.routes[path][method].authorizer is None:
            assert operation["security"] == []
            public.add((method, path))
        else:
            assert operation["security"] == [{"bearerAuth": []}]
            assert {"401", "403"} <= set(operation["responses"])
    assert {("GET", "/health"), ("GET", "/openapi.json"), ("POST", "/register")} <= public
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_errors_bodies_paging_and_headers_are_documented(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    users = paths["/users"]["get"]
    names = {p.get("name") or p["$ref"].rsplit("/", 1)[1] for p in users["parameters"]}
    assert {"limit", "cursor", "X-Correlation-Id"} <= names
    assert users["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UserPage"
    }
    assert "next_cursor" in doc["components"]["schemas"]["UserPage"]["required"]
    order = paths["/orders"]["post"]
    assert "Idempotency-Key" in {p.get("name") for p in order["parameters"]}
    assert {"Location", "X-Correlation-Id"} <= set(order["responses"]["202"]["headers"])
    assert {"400", "413", "415", "422", "503"} <= set(order["responses"])
    assert order["requestBody"]["required"] is True
    busy = doc["components"]["responses"]["ServiceUnavailable"]
    assert "Retry-After" in busy["headers"]
    assert busy["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "404" in paths["/users/{user_id}"]["get"]["responses"]
    assert "503" not in paths["/health"]["get"]["responses"]
    assert paths["/images/{image_id}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert doc["servers"] == [{"url": "/"}]


def test_create_operations_link_to_what_reads_and_changes_their_result(
    doc: dict[str, Any],
) -> None:
    operation_ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    assert len(operation_ids) == len(operation_routes(app))  # unique
    expected = {
        ("/register/confirm", "post", "201"): {"get_user", "update_user", "delete_user"},
        ("/orders", "post", "202"): {"get_order", "cancel_order"},
    }
    for (path, method, status), targets in expected.items():
        links = doc["paths"][path][method]["responses"][status]["links"]
        assert {link["operationId"] for link in links.values()} == targets
        for link in links.values():
            assert link["operationId"] in operation_ids
            [(name, value)] = link["parameters"].items()
            assert value == f"$response.body#/{name}"


def test_image_upload_is_an_intent_with_no_link_to_the_image(doc: dict[str, Any]) -> None:
    """The image exists only once the pipeline has recorded it (GET 404 until then): POST
    /images promises no resource, so no 201, no Location and no link to read or delete it."""
    responses = doc["paths"]["/images"]["post"]["responses"]
    assert "202" in responses and "201" not in responses
    assert "links" not in responses["202"]
    assert "Location" not in responses["202"].get("headers", {})


def test_get_openapi_json_serves_the_document_without_a_token(client: Any) -> None:
    response = client.http.get("/openapi.json")
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Correlation-Id"]
    served = json.loads(response.body)
    assert served == json.loads(json.dumps(document(app)))
    assert documented(served) == operation_routes(app)


@pytest.mark.parametrize(
    ("path", "server"),
    [("/api/openapi.json", "/api"), ("/openapi.json", "/"), (None, "/")],
)
def test_the_server_is_the_prefix_the_document_was_asked_through(
    path: str | None, server: str
) -> None:
    """An execute-api URL has the stage in its path: calls made from the document keep it."""
    context = {"path": path, "resourcePath": "/openapi.json"} if path else None
    assert served_document(app, context)["servers"] == [{"url": server}]
    assert served_document(app, context)["paths"] == document(app)["paths"]


def test_importing_the_app_does_not_import_pydantic() -> None:
    """Cold start: the contracts in app.py name their models; only the document loads them."""
    code = "import sys, app; assert 'pydantic' not in sys.modules, 'pydantic imported'"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
