"""What an order and a product are, and which input is acceptable: pure functions, no AWS.

Money is in minor units (cents) of one currency, EUR, as integers: no float ever holds a
price. The client sends what it wants (skus and quantities), where to and how to pay; prices
always come from the catalog. Validation collects every problem at once.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import BadRequest, ValidationFailed
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

_SKU = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,39}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PAYMENT_METHOD = re.compile(r"^pm_[A-Za-z0-9_]{1,64}$")
#: Printable ASCII, as the Idempotency-Key header's draft standard suggests.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
ADDRESS_FIELDS = {"name": 100, "line1": 200, "line2": 200, "city": 100, "postal_code": 20}
REQUIRED_ADDRESS = ("name", "line1", "city", "postal_code", "country")
ORDER_FIELDS = ("lines", "shipping_address", "payment_method")
PRODUCT_FIELDS = ("name", "unit_amount", "available", "active")


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
    problems = [
        {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in ORDER_FIELDS
    ]
    problems += [{"field": n, "issue": "is required"} for n in ORDER_FIELDS if n not in body]
    lines = _check_lines(body.get("lines"), problems) if "lines" in body else ()
    address = {}
    if "shipping_address" in body:
        address = _check_address(body["shipping_address"], problems)
    method = body.get("payment_method")
    if "payment_method" in body and not (
        isinstance(method, str) and _PAYMENT_METHOD.fullmatch(method)
    ):
        problems.append(
            {"field": "payment_method", "issue": "must be a payment method token (pm_...)"}
        )
    if problems:
        raise ValidationFailed("The order is not valid.", problems)
    return OrderRequest(lines, address, str(method))


def _check_lines(value: Any, problems: list[dict[str, str]]) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LINES:
        problems.append({"field": "lines", "issue": f"must be a list of 1 to {MAX_LINES} lines"})
        return ()
    lines: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, line in enumerate(value):
        where = f"lines[{index}]"
        if not isinstance(line, dict):
            problems.append({"field": where, "issue": "must be an object with sku and quantity"})
            continue
        unknown = sorted(set(line) - {"sku", "quantity"})
        if unknown:
            problems.append({"field": f"{where}.{unknown[0]}", "issue": "is not a known field"})
        sku, quantity = line.get("sku"), line.get("quantity")
        if not (isinstance(sku, str) and _SKU.fullmatch(sku)):
            problems.append({"field": f"{where}.sku", "issue": "must be a product's sku"})
        elif sku in seen:
            problems.append({"field": f"{where}.sku", "issue": "appears in another line"})
        else:
            seen.add(sku)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            problems.append({"field": f"{where}.quantity", "issue": "must be a whole number"})
        elif not 1 <= quantity <= MAX_QUANTITY:
            problems.append({"field": f"{where}.quantity", "issue": f"must be 1 to {MAX_QUANTITY}"})
        if isinstance(sku, str) and isinstance(quantity, int):
            lines.append((sku, quantity))
    return tuple(lines)


def _check_address(value: Any, problems: list[dict[str, str]]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append({"field": "shipping_address", "issue": "must be an object"})
        return {}
    address: dict[str, str] = {}
    for name in value:
        if name not in (*ADDRESS_FIELDS, "country"):
            problems.append({"field": f"shipping_address.{name}", "issue": "is not a known field"})
    for name in REQUIRED_ADDRESS:
        if name not in value:
            problems.append({"field": f"shipping_address.{name}", "issue": "is required"})
    for name, limit in ADDRESS_FIELDS.items():
        if name not in value:
            continue
        text = value[name]
        if not isinstance(text, str):
            problems.append({"field": f"shipping_address.{name}", "issue": "must be a string"})
            continue
        text = unicodedata.normalize("NFC", text.strip())
        if not 1 <= len(text) <= limit or _has_control_characters(text):
            issue = f"must be 1 to {limit} printable characters"
            problems.append({"field": f"shipping_address.{name}", "issue": issue})
        else:
            address[name] = text
    country = value.get("country")
    if "country" in value:
        if isinstance(country, str) and _COUNTRY.fullmatch(country):
            address["country"] = country
        else:
            issue = "must be an ISO 3166 country code such as DE"
            problems.append({"field": "shipping_address.country", "issue": issue})
    return address


def validate_product(body: Mapping[str, Any]) -> dict[str, Any]:
    """A `PUT /inventory/{sku}` body: name, unit_amount (cents), available (units for sale
    now), active (optional, default true)."""
    problems = [
        {"field": str(name), "issue": "is not a known field"}
        for name in body
        if name not in PRODUCT_FIELDS
    ]
    problems += [
        {"field": n, "issue": "is required"}
        for n in ("name", "unit_amount", "available")
        if n not in body
    ]
    product: dict[str, Any] = {}
    name = body.get("name")
    if "name" in body:
        if isinstance(name, str) and 1 <= len(name.strip()) <= 100:
            product["name"] = unicodedata.normalize("NFC", name.strip())
        else:
            problems.append({"field": "name", "issue": "must be 1 to 100 characters"})
    for field_name, low, high in (("unit_amount", 1, MAX_UNIT_AMOUNT), ("available", 0, MAX_STOCK)):
        number = body.get(field_name)
        if field_name not in body:
            continue
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            issue = f"must be a whole number from {low} to {high}"
            problems.append({"field": field_name, "issue": issue})
        else:
            product[field_name] = number
    active = body.get("active", True)
    if not isinstance(active, bool):
        problems.append({"field": "active", "issue": "must be true or false"})
    product["active"] = active
    if problems:
        raise ValidationFailed("The product is not valid.", problems)
    return product


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


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)
