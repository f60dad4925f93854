"""The request and response models the OpenAPI document is generated from: their JSON
schemas state the rules the API applies, their examples are valid, the answers the domain
modules build fit them, and none of it is loaded by `import app`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel

from chalicelib.core.errors import ValidationFailed
from chalicelib.images import model as images
from chalicelib.images.schemas import ImageRecord, UploadRequest
from chalicelib.orders import model as orders
from chalicelib.orders.schemas import OrderView, PlaceOrder, ProductUpdate, ProductView
from chalicelib.users import model as users
from chalicelib.users.schemas import (
    EmailChangeConfirmation,
    ProfileChanges,
    PublicUser,
    Signup,
    SignupConfirmation,
    UpdatedUser,
)
from infra.paths import PROJECT_DIR
from tests.unit.orders_fakes import ADDRESS

REQUESTS: dict[type[BaseModel], list[str]] = {
    Signup: ["email", "name"],
    SignupConfirmation: ["email", "code", "password"],
    ProfileChanges: [],
    EmailChangeConfirmation: ["code"],
    UploadRequest: ["content_type", "size"],
    PlaceOrder: ["lines", "shipping_address", "payment_method"],
    ProductUpdate: ["name", "unit_amount", "available"],
}
USER_ID = "0b0e8f6c-1111-4c4c-9d9d-2b2b2b2b2b2b"


def details(call: Any, body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as failed:
        call(body)
    return [(d["field"], d["issue"]) for d in failed.value.details]


@pytest.mark.parametrize("request_model", list(REQUESTS), ids=lambda m: m.__name__)
def test_a_request_schema_is_closed_documented_and_names_its_required_fields(
    request_model: type[BaseModel],
) -> None:
    schema = request_model.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema.get("required", []) == REQUESTS[request_model]
    assert request_model.__doc__ and schema["description"]
    for name, field in schema["properties"].items():
        assert "description" in field, f"{request_model.__name__}.{name} is not described"


@pytest.mark.parametrize("request_model", list(REQUESTS), ids=lambda m: m.__name__)
def test_every_example_of_a_request_is_valid(request_model: type[BaseModel]) -> None:
    schema = request_model.model_json_schema()
    assert schema["examples"], "a whole body to show"
    for example in schema["examples"]:
        request_model.model_validate(example)


def test_the_schemas_carry_the_limits_and_patterns_that_are_checked() -> None:
    signup = Signup.model_json_schema()["properties"]
    assert signup["email"]["pattern"] == users.EMAIL_PATTERN
    assert signup["email"]["maxLength"] == users.MAX_EMAIL_LENGTH
    assert (signup["name"]["minLength"], signup["name"]["maxLength"]) == (1, 100)
    assert signup["phone"]["pattern"] == users.E164_PATTERN
    assert signup["preferences"]["maxProperties"] == users.MAX_PREFERENCES
    assert signup["preferences"]["additionalProperties"] is False
    assert list(signup["preferences"]["patternProperties"]) == [users.PREFERENCE_KEY_PATTERN]
    changes = ProfileChanges.model_json_schema()
    assert changes["minProperties"] == 1
    assert {"type": "null"} in changes["properties"]["phone"]["anyOf"]  # null clears it
    assert "anyOf" not in changes["properties"]["name"]  # a name cannot be cleared
    password = SignupConfirmation.model_json_schema()["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (8, 256)
    upload = UploadRequest.model_json_schema()["properties"]
    assert upload["content_type"]["enum"] == list(images.CONTENT_TYPES)
    assert (upload["size"]["minimum"], upload["size"]["maximum"]) == (1, images.MAX_UPLOAD_BYTES)
    order = PlaceOrder.model_json_schema()
    assert (order["properties"]["lines"]["minItems"], order["properties"]["lines"]["maxItems"]) == (
        1,
        orders.MAX_LINES,
    )
    line = order["$defs"]["OrderLine"]
    assert line["additionalProperties"] is False and line["required"] == ["sku", "quantity"]
    assert line["properties"]["sku"]["pattern"] == orders.SKU_PATTERN
    address = order["$defs"]["ShippingAddress"]
    assert address["required"] == ["name", "line1", "city", "postal_code", "country"]
    assert address["properties"]["postal_code"]["maxLength"] == 20
    product = ProductUpdate.model_json_schema()["properties"]
    assert product["unit_amount"]["maximum"] == orders.MAX_UNIT_AMOUNT
    assert product["active"]["default"] is True


@pytest.mark.parametrize(
    ("code", "valid"),
    [("123456", True), ("12 34 56", True), (" 123456 ", True), ("12345", False),
     ("1234567", False), ("12a456", False), ("\uff11" * 6, False)],
)  # fmt: skip
def test_the_codes_pattern_takes_what_the_check_takes(code: str, valid: bool) -> None:
    pattern = EmailChangeConfirmation.model_json_schema()["properties"]["code"]["pattern"]
    assert bool(re.search(pattern, code)) is valid
    if valid:
        assert users.validate_email_confirmation({"code": code}) == code.replace(" ", "")
    else:
        assert details(users.validate_email_confirmation, {"code": code}) == [
            ("code", "must be 6 digits")
        ]


def test_every_unknown_field_of_a_line_is_named() -> None:
    body = {
        "lines": [{"sku": "BOOK-1", "quantity": 1, "unit_amount": 1, "discount": 5}],
        "shipping_address": dict(ADDRESS),
        "payment_method": "pm_card_visa",
    }
    assert details(orders.validate_order_request, body) == [
        ("lines[0].unit_amount", "is not a known field"),
        ("lines[0].discount", "is not a known field"),
    ]


def test_an_email_confirmation_names_unknown_fields_and_the_code_at_once() -> None:
    with pytest.raises(ValidationFailed) as failed:
        users.validate_email_confirmation({"code": "12", "email": "x@example.com"})
    assert failed.value.message == "The confirmation is not valid."
    assert [(d["field"], d["issue"]) for d in failed.value.details] == [
        ("email", "is not a known field"),
        ("code", "must be 6 digits"),
    ]
    with pytest.raises(ValidationFailed, match=r"^The code is not valid\.$"):
        users.validate_email_confirmation({})


def test_a_confirmation_lists_its_problems_in_field_order() -> None:
    assert details(users.validate_confirmation, {"extra": 1}) == [
        ("extra", "is not a known field"),
        ("email", "must be a valid email address"),
        ("code", "must be 6 digits"),
        ("password", "is required"),
    ]
    assert users.validate_confirmation(
        {"email": " ada@example.com ", "code": "123 456", "password": "Corr3ct-Horse!"}
    ) == ("ada@example.com", "123456", "Corr3ct-Horse!")


def test_text_no_service_can_store_is_refused_as_a_400() -> None:
    """A lone surrogate (JSON's "\\ud800") fails every AWS write: the client hears why."""
    assert details(
        orders.validate_product, {"name": "\ud800", "unit_amount": 1, "available": 1}
    ) == [("name", "must be 1 to 100 characters")]
    assert details(users.validate_changes, {"name": "Ada \ud800"}) == [
        ("name", "must not contain control characters")
    ]


def test_the_answers_fit_their_response_models() -> None:
    stored = {
        "pk": f"USER#{USER_ID}",
        "version": 3,
        "user_id": USER_ID,
        "email": "ada@example.com",
        "name": "Ada",
        "phone": None,
        "preferences": {"newsletter": True},
        "created_at": "2026-12-07T05:00:00Z",
        "updated_at": "2026-12-07T05:00:00Z",
    }
    PublicUser.model_validate(users.public_view(stored))
    UpdatedUser.model_validate({**users.public_view(stored), "pending_email": "a@example.org"})
    order = orders.new_order(
        USER_ID,
        USER_ID,
        [("BOOK-1", "A Book", 2, 1999)],
        ADDRESS,
        "pm_card_visa",
        "2026-12-07T05:00:00Z",
    )
    order["steps"] = {"ValidateOrder": {"entered_at": "1", "completed_at": "2", "attempts": 1,
                                        "outcome": "valid"}}  # fmt: skip
    OrderView.model_validate(orders.order_view(order))
    product = {"sku": "BOOK-1", "name": "A Book", "unit_amount": 1999, "currency": "EUR",
               "available": 3, "reserved": 1, "active": True, "version": 2}  # fmt: skip
    ProductView.model_validate(orders.product_view(product))
    record = {
        "image_id": USER_ID,
        "owner_id": USER_ID,
        "key": f"originals/{USER_ID}/{USER_ID}.jpg",
        "status": "ready",
        "content_type": "image/jpeg",
        "size": 1024,
        "width": 1600,
        "height": 1200,
        "labels": [{"name": "Dog", "confidence": 97.5}],
        "thumbnails": {"128": {"key": "k", "width": 128, "height": 96}},
        "created_key": "x",
        "lease_until": 5,
    }
    ImageRecord.model_validate(images.public_view(record))
    with pytest.raises(ValueError):
        PublicUser.model_validate({**users.public_view(stored), "pk": "USER#x"})


def test_importing_the_app_loads_no_model_and_a_validation_loads_them() -> None:
    """Cold start: Pydantic and the declared models load with the first validation only."""
    code = (
        "import sys, app\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported by app'\n"
        "assert not [m for m in sys.modules if m.endswith('.schemas')], 'schemas imported'\n"
        "from chalicelib.orders import model\n"
        "model.validate_product({'name': 'Lamp', 'unit_amount': 1, 'available': 0})\n"
        "assert 'chalicelib.orders.schemas' in sys.modules\n"
        "assert 'chalicelib.users.schemas' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("request_model", "body", "field", "expected"),
    [
        (UploadRequest, {"content_type": "image/png", "size": 516.0}, "size", 516),
        (ProductUpdate, {"name": "A", "unit_amount": 1999.0, "available": 40.0}, "available", 40),
        (ProductUpdate, {"name": "A", "unit_amount": 1999.0, "available": 40}, "unit_amount", 1999),
    ],
)
def test_a_whole_number_written_with_a_fraction_of_zero_is_that_number(
    request_model: type[BaseModel], body: dict[str, Any], field: str, expected: int
) -> None:
    """JSON has one kind of number, and the document's `integer` (JSON Schema) takes 516.0:
    so does the API, as the whole number it is."""
    from chalicelib.core.validation import validate

    assert request_model.model_json_schema()["properties"][field].get("type", "integer") == (
        "integer"
    )
    value = getattr(validate(request_model, body, "not valid"), field)
    assert value == expected and type(value) is int


def test_an_order_line_takes_a_quantity_of_2_0_and_refuses_2_5_true_and_a_string() -> None:
    from chalicelib.core.validation import validate

    body = {"lines": [{"sku": "BOOK-001", "quantity": 2.0}], "shipping_address": ADDRESS,
            "payment_method": "pm_card_visa"}  # fmt: skip
    assert validate(PlaceOrder, body, "not valid").lines[0].quantity == 2
    for wrong in (2.5, True, "2", float("nan"), float("inf")):
        body["lines"][0]["quantity"] = wrong
        with pytest.raises(ValidationFailed) as failed:
            validate(PlaceOrder, body, "not valid")
        assert failed.value.details[0]["field"] == "lines[0].quantity", wrong
