"""What an acceptable order and product are: every problem reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.core.errors import BadRequest, ValidationFailed
from chalicelib.orders import model
from tests.unit.orders_fakes import ADDRESS


def order(**changes: Any) -> dict[str, Any]:
    body = {
        "lines": [{"sku": "BOOK-1", "quantity": 2}],
        "shipping_address": dict(ADDRESS),
        "payment_method": "pm_card_visa",
    }
    return {**body, **changes}


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as failed:
        model.validate_order_request(body)
    return [(d["field"], d["issue"]) for d in failed.value.details]


def test_a_good_order_is_read() -> None:
    request = model.validate_order_request(order())
    assert request.lines == (("BOOK-1", 2),)
    assert request.shipping_address["country"] == "DE"


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "lines": [{"sku": "bad sku", "quantity": 0}, {"sku": "A", "quantity": True}],
            "shipping_address": {"name": "", "line1": "x" * 201, "country": "Germany", "zip": 1},
            "payment_method": "visa",
            "coupon": "FREE",
        }
    )
    fields = [field for field, _ in found]
    assert fields == [
        "coupon",
        "lines[0].sku",
        "lines[0].quantity",
        "lines[1].quantity",
        "shipping_address.zip",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.name",
        "shipping_address.line1",
        "shipping_address.country",
        "payment_method",
    ]


@pytest.mark.parametrize(
    ("lines", "issue"),
    [
        ([], "must be a list of 1 to 50 lines"),
        ([{"sku": f"S{i}", "quantity": 1} for i in range(51)], "must be a list of 1 to 50 lines"),
        ("BOOK", "must be a list of 1 to 50 lines"),
    ],
)
def test_an_order_has_1_to_50_lines(lines: Any, issue: str) -> None:
    assert problems(order(lines=lines)) == [("lines", issue)]


def test_quantities_are_1_to_100_and_each_sku_appears_once() -> None:
    lines = [
        {"sku": "A", "quantity": 101},
        {"sku": "B", "quantity": 1},
        {"sku": "B", "quantity": 1},
    ]
    assert problems(order(lines=lines)) == [
        ("lines[0].quantity", "must be 1 to 100"),
        ("lines[2].sku", "appears in another line"),
    ]


def test_missing_parts_are_named() -> None:
    assert problems({}) == [
        ("lines", "is required"),
        ("shipping_address", "is required"),
        ("payment_method", "is required"),
    ]


def test_the_same_request_has_the_same_fingerprint() -> None:
    one = model.validate_order_request(order())
    address = dict(reversed(list(ADDRESS.items())))
    two = model.validate_order_request(order(shipping_address=address))
    three = model.validate_order_request(order(payment_method="pm_card_mastercard"))
    assert one.fingerprint() == two.fingerprint() != three.fingerprint()


def test_a_product_is_checked() -> None:
    assert model.validate_product({"name": " Lamp ", "unit_amount": 10, "available": 0}) == {
        "name": "Lamp",
        "unit_amount": 10,
        "available": 0,
        "active": True,
    }
    with pytest.raises(ValidationFailed) as failed:
        model.validate_product({"name": "", "unit_amount": 0, "available": -1, "active": "no"})
    assert [d["field"] for d in failed.value.details] == [
        "name",
        "unit_amount",
        "available",
        "active",
    ]


@pytest.mark.parametrize("sku", ["", "lower", "A" * 41, "A B"])
def test_bad_skus_are_refused(sku: str) -> None:
    with pytest.raises(BadRequest):
        model.check_sku(sku)


def test_open_orders_spread_over_the_shards() -> None:
    import uuid

    shards = {model.open_shard(str(uuid.uuid4())) for _ in range(400)}
    assert shards == {f"open#{n}" for n in range(model.OPEN_SHARDS)}


def test_the_view_lists_the_steps_in_the_order_they_were_taken() -> None:
    view = model.order_view(
        {
            "order_id": "o",
            "steps": {"B": {"entered_at": "2"}, "A": {"entered_at": "1"}},
            "open_shard": "open#1",
            "created_key": "k",
        }
    )
    assert view == {"order_id": "o", "steps": [{"state": "A", "entered_at": "1"},
                                               {"state": "B", "entered_at": "2"}]}  # fmt: skip
