"""What the tests of the orders domain's AWS adapters share (`test_orders_adapters.py`,
`test_orders_inventory.py`, `test_orders_ledgers.py`): the provisioned names, an order as the
API builds it, and moto's DynamoDB made atomic the way the emulator makes it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from chalicelib.core import clock
from chalicelib.orders import model

ORDERS = "serverless-app-dev-orders"
INVENTORY = "serverless-app-dev-inventory"
PAYMENTS = "serverless-app-dev-payments"
SHIPMENTS = "serverless-app-dev-shipments"
STATE_MACHINE = "serverless-app-dev-order-workflow"
ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())
#: sku -> (name, unit amount in cents)
CATALOG = {"MUG": ("Mug", 1250), "PEN": ("Pen", 300), "LAMP": ("Lamp", 4999)}
ADDRESS = {"name": "A", "line1": "Main St 1", "city": "Berlin", "postal_code": "10115",
           "country": "DE"}  # fmt: skip


def new_order(
    owner_id: str = ALICE, lines: Sequence[tuple[str, int]] = (("MUG", 2),), shard: str = ""
) -> dict[str, Any]:
    """An order as `OrdersService._priced` builds it, pending (in `shard` of the sweep's
    index, if given). Skus outside CATALOG cost 1.00 each."""
    order_id = str(uuid.uuid4())
    while shard and model.open_shard(order_id) != shard:
        order_id = str(uuid.uuid4())
    priced = [(sku, *CATALOG.get(sku, (sku.title(), 100))) for sku, _ in lines]
    quantities = dict(lines)
    return model.new_order(
        order_id,
        owner_id,
        [(sku, name, quantities[sku], unit) for sku, name, unit in priced],
        ADDRESS,
        "pm_card_visa",
        clock.timestamp(),
    )


@pytest.fixture
def atomic_writes() -> Iterator[None]:
    """moto's DynamoDB with the emulator's write lock (`local.fidelity`) for one test. Stock
    moto 5.2.5 in process is not atomic under threads: a conditional write checks, then
    writes, unlocked, and a cancelled transaction restores deep copies of whole tables,
    erasing what other threads wrote meanwhile. The patch is global, so every class of moto's
    DynamoDB it may touch is put back as it was afterwards (other tests race stock moto)."""
    import moto.dynamodb.models.table
    import moto.dynamodb.responses  # noqa: F401 - what the patch may change must be loaded

    from local import fidelity

    classes = [
        value
        for name, module in list(sys.modules.items())
        if name.startswith("moto.dynamodb") and module is not None
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__.startswith("moto.dynamodb")
    ]
    saved = {cls: dict(vars(cls)) for cls in classes}
    fidelity.atomic_dynamodb_writes()
    try:
        yield
    finally:
        for cls, before in saved.items():
            for name in set(vars(cls)) - set(before):
                delattr(cls, name)
            for name, value in before.items():
                if vars(cls).get(name) is not value:
                    setattr(cls, name, value)
