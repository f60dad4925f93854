"""What an order and a product are, and which input is acceptable: pure functions, no AWS.

Money is in minor units (cents) of one currency, EUR, as integers: no float ever holds a
price. The client sends what it wants (skus and quantities), where to and how to pay; prices
always come from the catalog. Validation collects every problem at once; the
request bodies' rules are declared as Pydantic models in `schemas`, imported on first use
so that `import app` never loads Pydantic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import BadRequest
from chalicelib.core.ids import is_uuid

CURRENCY = "EUR"
MAX_LINES = 50
MAX_QUANTITY = 100
MAX_UNIT_AMOUNT = 10_000_000  # 100,000.00 EUR
MAX_STOCK = 1_000_000_000
#: A business rule the workflow's validation applies (not the API): larger orders need a
#: person to look at them.
MAX_ORDER_TOTAL = 1_000_000  # 10,000.00 EUR
#: Where the shop delivers: the EU, the EEA, Switzerland and the UK.
SHIPPING_COUNTRIES = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO", "CH", "GB",
    }
)  # fmt: skip

# Order statuses. An order is "open" (in the sweep's index) until it reaches a terminal one.
PENDING, VALIDATED, RESERVED, PAID = "pending", "validated", "reserved", "paid"
SHIPPING, SHIPPED, COMPLETED = "shipping", "shipped", "completed"
FAILED, CANCELLING, CANCELLED = "failed", "cancelling", "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
#: Partitions of the sweep's index of open orders (`open_shard`).
OPEN_SHARDS = 8
#: Before the goods are handed to the carrier, an order may still be cancelled.
CANCELLABLE = (PENDING, VALIDATED, RESERVED, PAID)

#: Matched whole; also the declared models' patterns (`schemas`).
SKU_PATTERN = r"^[A-Z0-9][A-Z0-9_-]{0,39}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
PAYMENT_METHOD_PATTERN = r"^pm_[A-Za-z0-9_]{1,64}$"
_SKU = re.compile(SKU_PATTERN)
_COUNTRY = re.compile(COUNTRY_PATTERN)
_PAYMENT_METHOD = re.compile(PAYMENT_METHOD_PATTERN)
#: Printable ASCII, as the Idempotency-Key header's draft standard suggests.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
ADDRESS_FIELDS = {"name": 100, "line1": 200, "line2": 200, "city": 100, "postal_code": 20}


@dataclass(frozen=True)
class OrderRequest:
    """A checked `POST /orders` body: (sku, quantity) pairs, the address, the payment method."""

    lines: tuple[tuple[str, int], ...]
    shipping_address: dict[str, str]
    payment_method: str

    def fingerprint(self) -> str:
        """Equal for equal requests (whatever their JSON's spacing or key order): what an
        `Idempotency-Key` is bound to."""
        address = sorted(self.shipping_address.items())
        text = repr((self.lines, address, self.payment_method))
        return hashlib.sha256(text.encode()).hexdigest()


def validate_order_request(body: Mapping[str, Any]) -> OrderRequest:
    """A `POST /orders` body checked and normalised (`schemas.PlaceOrder`), or
    ValidationFailed listing every problem."""
    from chalicelib.core.validation import validate
    from chalicelib.orders.schemas import PlaceOrder

    order = validate(PlaceOrder, body, "The order is not valid.")
    return OrderRequest(
        tuple((line.sku, line.quantity) for line in order.lines),
        order.shipping_address.model_dump(exclude_unset=True),
        order.payment_method,
    )


def validate_product(body: Mapping[str, Any]) -> dict[str, Any]:
    """A `PUT /inventory/{sku}` body (`schemas.ProductUpdate`): name, unit_amount (cents),
    available (units for sale now), active (optional, default true)."""
    from chalicelib.core.validation import validate
    from chalicelib.orders.schemas import ProductUpdate

    return validate(ProductUpdate, body, "The product is not valid.").model_dump()


def check_sku(sku: str) -> str:
    if not _SKU.fullmatch(sku):
        raise BadRequest("A sku is 1 to 40 upper-case letters, digits, '-' or '_'.")
    return sku


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return value


def is_order_id(value: str) -> bool:
    return is_uuid(value)


def open_shard(order_id: str, shards: int = OPEN_SHARDS) -> str:
    """The partition of the sweep's index an open order sits in (`open#0` ...): spread, so
    that no single partition takes every order's writes."""
    return f"open#{int(order_id[:8], 16) % shards}"


def new_order(
    order_id: str,
    owner_id: str,
    lines: Sequence[tuple[str, str, int, int]],
    shipping_address: Mapping[str, str],
    payment_method: str,
    now: str,
) -> dict[str, Any]:
    """A pending order as it is stored: `lines` are (sku, name, quantity, unit amount) as the
    catalog priced them; it is open, so it sits in a shard of the sweep's index."""
    priced = [
        {"sku": sku, "name": name, "quantity": quantity, "unit_amount": unit,
         "amount": unit * quantity}
        for sku, name, quantity, unit in lines
    ]  # fmt: skip
    return {
        "order_id": order_id,
        "owner_id": owner_id,
        "status": PENDING,
        "lines": priced,
        "currency": CURRENCY,
        "total_amount": sum(line["amount"] for line in priced),
        "shipping_address": dict(shipping_address),
        "payment_method": payment_method,
        "steps": {},
        "created_at": now,
        "updated_at": now,
        "created_key": f"{now}#{order_id}",
        "open_shard": open_shard(order_id),
    }


def order_view(order: Mapping[str, Any]) -> dict[str, Any]:
    """The order as the API shows it: the steps in the order the workflow took them."""
    view = {name: order[name] for name in VIEW_FIELDS if order.get(name) is not None}
    steps = order.get("steps") or {}
    view["steps"] = sorted(
        ({"state": name, **step} for name, step in steps.items()),
        key=lambda step: (step.get("entered_at", ""), step.get("completed_at", "")),
    )
    return view


VIEW_FIELDS = (
    "order_id",
    "owner_id",
    "status",
    "lines",
    "currency",
    "total_amount",
    "shipping_address",
    "payment_method",
    "payment",
    "tracking_number",
    "failure",
    "created_at",
    "updated_at",
)


def product_view(item: Mapping[str, Any]) -> dict[str, Any]:
    fields = ("sku", "name", "unit_amount", "currency", "available", "reserved", "active",
              "updated_at")  # fmt: skip
    return {name: item[name] for name in fields if item.get(name) is not None}
