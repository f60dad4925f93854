"""The orders and catalog API's request bodies (and the order and product they answer
with) as declared models.

`model.validate_order_request` and `model.validate_product` check bodies with these
classes, and the OpenAPI document is generated from them, so both say the same. Imported
only on first validation (Pydantic is not loaded by `import app`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import core_schema

from chalicelib.core.ids import UUID_PATTERN
from chalicelib.core.validation import Issue, NoControlCharacters, absent, refuse, whole_number
from chalicelib.orders import model

#: Request bodies: unknown fields refused, no type coercion (`"5"` is no number, `true` no
#: 1). Built on first use, not at import: a function builds only the models it validates.
BODY = ConfigDict(extra="forbid", strict=True, defer_build=True)

#: The skus of the order's lines met so far, while its lines are validated.
_SKUS_SEEN: ContextVar[set[str] | None] = ContextVar("skus_seen", default=None)


class DistinctSkus:
    """On a list of lines: a sku appearing in an earlier line is refused at the later one
    (the lines are checked in order; a JSON schema cannot say this, the description does)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: Callable[[Any], core_schema.CoreSchema]
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._fresh, handler(source))

    @staticmethod
    def _fresh(value: Any, handler: Callable[[Any], Any]) -> Any:
        token = _SKUS_SEEN.set(set())
        try:
            return handler(value)
        finally:
            _SKUS_SEEN.reset(token)


def _first_time(sku: str) -> str:
    seen = _SKUS_SEEN.get()
    if seen is not None:
        if sku in seen:
            raise refuse("duplicate_sku", "appears in another line")
        seen.add(sku)
    return sku


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _strip_nfc(value: Any) -> Any:
    return unicodedata.normalize("NFC", value.strip()) if isinstance(value, str) else value


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


Sku = Annotated[
    str,
    Field(pattern=model.SKU_PATTERN),
    AfterValidator(_first_time),
    Issue("must be a product's sku", missing="must be a product's sku"),
]
Quantity = Annotated[
    int,
    Field(ge=1, le=model.MAX_QUANTITY),
    BeforeValidator(whole_number),
    Issue(
        f"must be 1 to {model.MAX_QUANTITY}",
        {"int_type": "must be a whole number"},
        missing="must be a whole number",
    ),
]


class OrderLine(BaseModel):
    """One product of the order and how many; its price comes from the catalog."""

    model_config = BODY

    sku: Sku = Field(description="Upper-case letters, digits, '-' and '_'.", examples=["BOOK-001"])
    quantity: Quantity = Field(description="Units of the product.", examples=[2])


def _address_text(limit: int) -> Any:
    issue = f"must be 1 to {limit} printable characters"
    return Annotated[
        str,
        Field(min_length=1, max_length=limit),
        BeforeValidator(_strip_nfc),
        NoControlCharacters(issue=issue),
        Issue(issue, {"string_type": "must be a string"}),
    ]


_ADDRESS_DOC = "Stripped and NFC-normalised; no control characters."
Country = Annotated[
    str, Field(pattern=model.COUNTRY_PATTERN), Issue("must be an ISO 3166 country code such as DE")
]


class ShippingAddress(BaseModel):
    """Where the goods go. The order workflow (not this check) refuses countries the shop
    does not deliver to (`model.SHIPPING_COUNTRIES`)."""

    model_config = BODY

    name: _address_text(model.ADDRESS_FIELDS["name"]) = Field(  # type: ignore[valid-type]
        description=_ADDRESS_DOC, examples=["Ada Lovelace"]
    )
    line1: _address_text(model.ADDRESS_FIELDS["line1"]) = Field(  # type: ignore[valid-type]
        description=_ADDRESS_DOC, examples=["12 St James Sq"]
    )
    line2: _address_text(model.ADDRESS_FIELDS["line2"]) = absent(  # type: ignore[valid-type]
        description=_ADDRESS_DOC, examples=["Flat 3"]
    )
    city: _address_text(model.ADDRESS_FIELDS["city"]) = Field(  # type: ignore[valid-type]
        description=_ADDRESS_DOC, examples=["London"]
    )
    postal_code: _address_text(model.ADDRESS_FIELDS["postal_code"]) = Field(  # type: ignore[valid-type]
        description=_ADDRESS_DOC, examples=["SW1Y 4JH"]
    )
    country: Country = Field(description="ISO 3166-1 alpha-2, upper case.", examples=["GB"])


Lines = Annotated[
    list[Annotated[OrderLine, Issue("must be an object with sku and quantity")]],
    Field(min_length=1, max_length=model.MAX_LINES),
    DistinctSkus(),
    Issue(f"must be a list of 1 to {model.MAX_LINES} lines"),
]
PaymentMethod = Annotated[
    str,
    Field(pattern=model.PAYMENT_METHOD_PATTERN),
    Issue("must be a payment method token (pm_...)"),
]


class PlaceOrder(BaseModel):
    """POST /orders: what to buy, where to send it and how to pay. Prices come from the
    catalog, never from the client. An `Idempotency-Key` header binds the key to this body:
    the same key with another body is refused."""

    model_config = ConfigDict(
        **BODY,
        json_schema_extra={
            "examples": [
                {
                    "lines": [{"sku": "BOOK-001", "quantity": 2}],
                    "payment_method": "pm_card_visa",
                    "shipping_address": {
                        "name": "Ada Lovelace",
                        "line1": "12 St James Sq",
                        "city": "London",
                        "postal_code": "SW1Y 4JH",
                        "country": "GB",
                    },
                }
            ]
        },
    )

    lines: Lines = Field(description="1 to 50 lines, each sku in one line only.")
    shipping_address: Annotated[ShippingAddress, Issue("must be an object")] = Field(
        description="Where the goods go: an address in a country the shop delivers to."
    )
    payment_method: PaymentMethod = Field(
        description="A payment provider's method token.", examples=["pm_card_visa"]
    )


_AMOUNT_ISSUE = f"must be a whole number from 1 to {model.MAX_UNIT_AMOUNT}"
_STOCK_ISSUE = f"must be a whole number from 0 to {model.MAX_STOCK}"


class ProductUpdate(BaseModel):
    """PUT /inventory/{sku} (admins): the product's name, price and stock, and whether it
    is sold; the whole product, not a patch."""

    model_config = ConfigDict(
        **BODY,
        json_schema_extra={
            "examples": [{"name": "A Book", "unit_amount": 1999, "available": 40, "active": True}]
        },
    )

    name: Annotated[
        str,
        Field(min_length=1, max_length=100),
        BeforeValidator(_strip),
        AfterValidator(_nfc),
        Issue("must be 1 to 100 characters"),
    ] = Field(description="Stripped, then NFC-normalised.", examples=["A Book"])
    unit_amount: Annotated[
        int,
        Field(ge=1, le=model.MAX_UNIT_AMOUNT),
        BeforeValidator(whole_number),
        Issue(_AMOUNT_ISSUE),
    ] = Field(description=f"The price in cents of {model.CURRENCY}.", examples=[1999])
    available: Annotated[
        int, Field(ge=0, le=model.MAX_STOCK), BeforeValidator(whole_number), Issue(_STOCK_ISSUE)
    ] = Field(description="Units for sale now (reserved units not counted).", examples=[40])
    active: Annotated[bool, Issue("must be true or false")] = Field(
        True, description="Whether it is sold."
    )


# --- answers (documentation and contract tests only) ---------------------------------------


class PricedLine(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    sku: str = Field(pattern=model.SKU_PATTERN)
    name: str
    quantity: int = Field(ge=1, le=model.MAX_QUANTITY)
    unit_amount: int = Field(ge=1, le=model.MAX_UNIT_AMOUNT, description="Cents, at ordering.")
    amount: int = Field(ge=1, description="quantity times unit_amount, in cents.")


class StepView(BaseModel):
    """One state the workflow went through (`model.order_view`); tasks add details."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    state: str = Field(examples=["ReserveStock"])
    entered_at: str = absent()
    completed_at: str = absent()
    attempts: int = absent(ge=1)
    outcome: str = absent(examples=["approved"])


class OrderView(BaseModel):
    """An order as the API shows it (`model.order_view`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    order_id: str = Field(pattern=f"^{UUID_PATTERN}$")
    owner_id: str = Field(pattern=f"^{UUID_PATTERN}$")
    status: Literal[
        "pending", "validated", "reserved", "paid", "shipping", "shipped", "completed",
        "failed", "cancelling", "cancelled",
    ]  # fmt: skip
    lines: list[PricedLine]
    currency: Literal["EUR"]
    total_amount: int = Field(ge=0, description="Cents.")
    shipping_address: ShippingAddress
    payment_method: str = Field(pattern=model.PAYMENT_METHOD_PATTERN)
    payment: dict[str, Any] = absent(description="The charge: id, status, amount, currency.")
    tracking_number: str = absent()
    failure: dict[str, str] = absent(description="Why it failed: code, message, error.")
    created_at: str
    updated_at: str
    steps: list[StepView] = Field(description="The workflow's states, in the order taken.")


class ProductView(BaseModel):
    """A product as the API shows it (`model.product_view`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    sku: str = Field(pattern=model.SKU_PATTERN)
    name: str
    unit_amount: int = Field(ge=1, le=model.MAX_UNIT_AMOUNT)
    currency: Literal["EUR"] = absent()
    available: int = Field(ge=0)
    reserved: int = absent(ge=0)
    active: bool
    updated_at: str = absent()
