"""The products `make run` puts in the catalog, through the same code as `PUT /inventory/{sku}`,
so that orders can be tried at once. Each is there to show something:

- BOOK-001, MUG-001, TEE-001: ordinary stock;
- PRINT-001: one unit, for two orders that want the last one (out of stock);
- CAMERA-001: a price that takes an order of five past the 10,000 EUR limit (invalid order).
"""

from __future__ import annotations

from typing import Any

PRODUCTS: dict[str, dict[str, Any]] = {
    "BOOK-001": {"name": "Serverless Patterns, the book", "unit_amount": 2999, "available": 100},
    "MUG-001": {"name": "Lambda mug", "unit_amount": 1299, "available": 25},
    "TEE-001": {"name": "Step Functions T-shirt", "unit_amount": 1999, "available": 40},
    "PRINT-001": {"name": "Signed print (the last one)", "unit_amount": 4999, "available": 1},
    "CAMERA-001": {"name": "Camera", "unit_amount": 249900, "available": 10},
}


def seed_catalog() -> list[dict[str, Any]]:
    """Put PRODUCTS in the stage's inventory table (the process's AWS clients point at the
    emulator); returns them as the API shows them."""
    from chalicelib.auth.tokens import ADMIN_GROUP, Principal
    from chalicelib.orders import catalog_service

    admin = Principal("local-seed", frozenset({ADMIN_GROUP}))
    return [catalog_service().put(admin, sku, product) for sku, product in PRODUCTS.items()]
