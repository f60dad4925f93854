"""The app's real answers match the schemas the OpenAPI document gives them: each call below
goes through the routes (chalice.test.Client, the authorizer included) and its status and
body are checked against the document's operation for that route."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app import app
from chalicelib.contract.openapi import document
from tests.unit.orders_fakes import ADDRESS

PRODUCT = {"name": "Book", "unit_amount": 2999, "available": 5}
ORDER = {"lines": [{"sku": "BOOK-1", "quantity": 1}], "shipping_address": dict(ADDRESS),
         "payment_method": "pm_card_visa"}  # fmt: skip


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(app)


def check(doc: dict[str, Any], route: str, response: Any) -> Any:
    """The answer's status is documented for `route` ("GET /users"), and its body fits."""
    method, path = route.split(" ", 1)
    answers = doc["paths"][path][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in answers, f"{route} answered {status}: {response.body[:300]!r}"
    answer = answers[status]
    if "$ref" in answer:
        answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    if "content" not in answer:
        assert not response.body, route
        return None
    body = json.loads(response.body)
    schema = {**answer["content"]["application/json"]["schema"], "components": doc["components"]}
    problems = [
        f"{list(e.absolute_path)}: {e.message[:200]}"
        for e in Draft202012Validator(schema).iter_errors(body)
    ]
    assert problems == [], f"{route}: {problems}"
    return body


def test_users_answers_fit_the_document(doc: dict[str, Any], api: Any, accounts: Any) -> None:
    anyone = api.as_(None)
    check(doc, "POST /register", anyone.post("/register", {"email": "x@example.com", "name": "X"}))
    check(doc, "POST /register", anyone.post("/register", {"email": "nope"}))
    user, token = accounts.register(phone="+14155550123", bio="Hi")
    own = api.as_(token)
    user_id = user["user_id"]
    check(doc, "GET /users/{user_id}", own.get(f"/users/{user_id}"))
    check(doc, "PUT /users/{user_id}", own.put(f"/users/{user_id}", {"email": "new@example.com"}))
    check(doc, "PUT /users/{user_id}", own.put(f"/users/{user_id}", {}))
    check(doc, "GET /users", api.get("/users?limit=1"))
    check(doc, "GET /users", own.get("/users"))
    check(doc, "GET /users", anyone.get("/users"))
    check(doc, "GET /users/search", api.get("/users/search?q=user"))
    check(doc, "GET /users/{user_id}/export", own.get(f"/users/{user_id}/export"))
    check(doc, "GET /health", anyone.get("/health"))
    check(doc, "DELETE /users/{user_id}", own.delete(f"/users/{user_id}"))


def test_images_orders_and_reports_answers_fit_the_document(
    doc: dict[str, Any], api: Any, accounts: Any
) -> None:
    _, token = accounts.register()
    own = api.as_(token)
    upload = own.post("/images", {"content_type": "image/png", "size": 1000})
    image_id = check(doc, "POST /images", upload)["image_id"]
    check(doc, "GET /images", own.get("/images?limit=5"))
    check(doc, "GET /images/{image_id}", own.get(f"/images/{image_id}"))  # not analysed: 404
    check(doc, "PUT /inventory/{sku}", api.put("/inventory/BOOK-1", PRODUCT))
    check(doc, "GET /inventory/{sku}", own.get("/inventory/BOOK-1"))
    check(doc, "PUT /inventory/{sku}", own.put("/inventory/BOOK-1", PRODUCT))
    order = check(doc, "POST /orders", own.post("/orders", ORDER, {"Idempotency-Key": "k-1"}))
    check(doc, "POST /orders", own.post("/orders", {**ORDER, "lines": []}))
    check(doc, "GET /orders", own.get("/orders"))
    check(doc, "GET /orders/{order_id}", own.get(f"/orders/{order['order_id']}"))
    check(
        doc, "POST /orders/{order_id}/cancel", own.post(f"/orders/{order['order_id']}/cancel", {})
    )
    check(doc, "GET /analytics/daily", api.get("/analytics/daily"))
    check(doc, "GET /analytics/daily/{day}", api.get("/analytics/daily/2020-01-01"))
    events = {"events": [{"event_type": "user_activity", "activity_type": "page_view",
                          "timestamp": "2026-12-01T00:00:00Z"}]}  # fmt: skip
    check(doc, "POST /events", own.post("/events", events))
