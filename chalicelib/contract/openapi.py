"""The API's OpenAPI 3.1 document, generated from the app itself.

Paths, methods and which routes need a token come from `app.routes` (Chalice's own
table); what each operation takes and answers comes from its `@contract.operation` in
app.py, whose models (Pydantic v2, named by dotted path) are imported only here, when the
document is first asked for. Error statuses each operation can answer are derived from
what the HTTP boundary does (`core.http`: 400 for bad JSON, 413, 415, 503 with
Retry-After) and from the route (401/403 with a token, 404 with a path parameter), plus
those its contract names. Nothing here is kept by hand beside the routes, so the document
cannot drift from them (tests/unit/test_openapi.py checks both ways).
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from chalice import Chalice
from chalice.app import RouteEntry

from chalicelib.contract import Operation, contract_of
from chalicelib.contract.vocabulary import (
    AUDIENCES,
    ERRORS,
    HEADERS,
    REQUEST_HEADERS,
    TAGS,
    common_parameters,
    path_schema,
)

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
ERROR_MODEL = "chalicelib.contract.responses:ErrorBody"
BEARER = "bearerAuth"


def served_document(app: Chalice, context: dict[str, Any] | None) -> dict[str, Any]:
    """The document as GET /openapi.json answers it: built once per process (the routes
    never change), its server the path prefix the request came through (`/api`, the stage,
    on an execute-api URL; `/` on a custom domain or locally), so calls made from it reach
    this API wherever it is served."""
    path, resource = (context or {}).get("path") or "", (context or {}).get("resourcePath") or ""
    prefix = path[: -len(resource)] if resource and path.endswith(resource) else ""
    return {**_cached(app), "servers": [{"url": prefix or "/"}]}


@functools.cache
def _cached(app: Chalice) -> dict[str, Any]:
    return document(app)


def document(app: Chalice) -> dict[str, Any]:
    """The whole document for `app` (build it once per process: it does not change)."""
    operations = list(_operations(app))
    schemas, refs = _schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, entry, contract in operations:
        paths.setdefault(path, {})[method.lower()] = _operation(path, entry, contract, refs)
    return fill_links(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": app.app_name,
                "version": "1",
                "description": "Generated from the app's routes (app.py) and its Pydantic "
                "models. Sign in for a token and send `Authorization: Bearer <token>`.",
            },
            "servers": [{"url": "/"}],
            "tags": [{"name": t} for t in sorted({_tag(p) for p, *_ in operations})],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "responses": _error_responses(refs[ERROR_MODEL]),
                "parameters": common_parameters(),
                "headers": dict(HEADERS),
                "securitySchemes": {
                    BEARER: {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "A Cognito ID or access token of the user pool, or a "
                        "trusted producer's client-credentials token.",
                    }
                },
            },
        }
    )


def operation_routes(app: Chalice) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the document must hold: all but CORS preflights."""
    return {(m, p) for p, entries in app.routes.items() for m in entries if m != "OPTIONS"}


def load_model(dotted: str) -> Any:
    """The class a "package.module:Name" path names (ImportError/AttributeError if none)."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _operations(app: Chalice) -> Iterator[tuple[str, str, RouteEntry, Operation]]:
    for path, entries in sorted(app.routes.items()):
        for method, entry in sorted(entries.items()):
            if method == "OPTIONS":
                continue
            contract = contract_of(entry.view_function)
            if contract is None:
                raise LookupError(f"{method} {path} has no @contract.operation in app.py")
            if (contract.auth == "public") != (entry.authorizer is None):
                raise ValueError(
                    f"{method} {path}: auth={contract.auth!r} but authorizer "
                    f"is {getattr(entry.authorizer, 'name', None)!r}"
                )
            yield path, method, entry, contract


def _schemas(operations: list[Any]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Every model's JSON Schema in one pass (shared `$defs` become components; names that
    clash get pydantic's unique names); `refs` maps a dotted path to its `$ref`."""
    from pydantic.json_schema import models_json_schema

    wanted: dict[str, str] = {ERROR_MODEL: "serialization"}
    for *_, contract in operations:
        if contract.request:
            wanted[contract.request] = "validation"
        wanted.update({m: "serialization" for m in contract.responses.values() if m})
    keys = [(load_model(dotted), mode) for dotted, mode in wanted.items()]
    by_key, top = models_json_schema(keys, ref_template=SCHEMAS + "{model}")  # type: ignore[arg-type]
    refs = {dotted: by_key[key] for dotted, key in zip(wanted, keys, strict=True)}
    return dict(sorted(top.get("$defs", {}).items())), refs


def _operation(
    path: str, entry: RouteEntry, contract: Operation, refs: dict[str, dict[str, str]]
) -> dict[str, Any]:
    view = entry.view_function
    doc = (view.__doc__ or "").strip()
    description = " ".join(doc.split()) + ("\n\n" if doc else "")
    operation: dict[str, Any] = {
        "operationId": entry.view_name,
        "summary": contract.summary,
        "description": description + f"**Who may call:** {AUDIENCES[contract.auth]}",
        "tags": [_tag(path)],
        "parameters": _parameters(path, contract),
        "security": [] if contract.auth == "public" else [{BEARER: []}],
        "responses": _responses(contract, refs, _error_statuses(path, contract)),
    }
    if contract.request:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[contract.request]}},
        }
    return operation


def _parameters(path: str, contract: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_schema(name)}
        for name in re.findall(r"{(\w+)}", path)
    ]
    if contract.page:
        default, maximum = contract.page
        params.append(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "Items per page.",
                "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
            }
        )
        params.append({"$ref": "#/components/parameters/cursor"})
    params += [{"$ref": f"#/components/parameters/{name}"} for name in contract.query]
    params += [
        {"name": name, "in": "header", "required": False, **REQUEST_HEADERS[name]}
        for name in contract.headers
        if name in REQUEST_HEADERS
    ]
    params.append({"$ref": "#/components/parameters/X-Correlation-Id"})
    return params


def _error_statuses(path: str, contract: Operation) -> set[int]:
    statuses = set(contract.errors)
    if contract.auth != "public":
        statuses |= {401, 403}
    if contract.request:
        statuses |= {400, 413, 415}
    if contract.page or contract.query or contract.headers:
        statuses.add(400)
    if "{" in path:
        statuses.add(404)
    if contract.aws:
        statuses.add(503)
    return statuses


def _responses(
    contract: Operation, refs: dict[str, dict[str, str]], errors: set[int]
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in sorted(contract.responses.items()):
        headers = {"X-Correlation-Id": {"$ref": "#/components/headers/X-Correlation-Id"}}
        headers |= {
            name: {"$ref": f"#/components/headers/{name}"}
            for name in contract.headers
            if name in HEADERS
        }
        answer: dict[str, Any] = {"description": HTTPStatus(status).phrase, "headers": headers}
        if model:
            answer["content"] = {"application/json": {"schema": refs[model]}}
        if contract.links and status < 300:
            answer["links"] = {target: {"operationId": target} for target in contract.links}
        responses[str(status)] = answer
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    return responses


def fill_links(doc: dict[str, Any]) -> dict[str, Any]:
    """Each link's parameters: the target's path parameters, from the answer's body fields
    of the same names (`user_id` -> `$response.body#/user_id`)."""
    targets = {
        op["operationId"]: re.findall(r"{(\w+)}", path)
        for path, item in doc["paths"].items()
        for op in item.values()
    }
    for item in doc["paths"].values():
        for op in item.values():
            for answer in op["responses"].values():
                for link in answer.get("links", {}).values():
                    names = targets[link["operationId"]]  # KeyError: no such operation
                    link["parameters"] = {n: f"$response.body#/{n}" for n in names}
    return doc


def _error_responses(error_schema: dict[str, str]) -> dict[str, Any]:
    correlation = {"X-Correlation-Id": {"$ref": "#/components/headers/X-Correlation-Id"}}
    retry = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return {
        name: {
            "description": f"{HTTPStatus(status).phrase}: {codes}",
            "headers": correlation | (retry if status in (429, 503) else {}),
            "content": {"application/json": {"schema": error_schema}},
        }
        for status, (name, codes) in ERRORS.items()
    }


def _tag(path: str) -> str:
    first = path.strip("/").split("/")[0]
    return TAGS.get(first, first)
