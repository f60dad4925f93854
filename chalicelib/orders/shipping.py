"""Shipping: the carrier port the workflow hands an order's parcel to, and the adapter shipped
with the app, a ledger of shipments in DynamoDB that behaves like a carrier's test mode.

One shipment per order (the table's key is the order id): a step run again finds the parcel
it created and its tracking number instead of sending a second one.

Test mode: the carrier refuses the postal code `00000` (an address it cannot deliver to),
which drives the workflow's "failure after the charge" branch; every other address gets a
tracking number.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.core import aws, clock
from chalicelib.core.dynamo import from_item, to_item

CARRIER = "test-carrier"
UNDELIVERABLE_POSTAL_CODE = "00000"


class ShippingError(Exception):
    """The carrier refused the parcel; trying again will not change its mind."""


@dataclass(frozen=True)
class Shipment:
    tracking_number: str
    carrier: str


class Carrier(Protocol):
    def create_shipment(
        self, order_id: str, address: Mapping[str, str], lines: Sequence[tuple[str, int]]
    ) -> Shipment: ...


class DynamoTestCarrier:
    def __init__(self, table_name: str, client: Callable[[], Any] | None = None) -> None:
        self.table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))

    def create_shipment(
        self, order_id: str, address: Mapping[str, str], lines: Sequence[tuple[str, int]]
    ) -> Shipment:
        if address.get("postal_code") == UNDELIVERABLE_POSTAL_CODE:
            raise ShippingError(
                f"{CARRIER} cannot deliver to postal code {UNDELIVERABLE_POSTAL_CODE}"
            )
        shipment = Shipment(f"TT{uuid.uuid4().hex[:16].upper()}", CARRIER)
        client = self._client()
        record = {
            "tracking_number": shipment.tracking_number,
            "carrier": shipment.carrier,
            "address": dict(address),
            "parcel": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
            "created_at": clock.timestamp(),
        }
        try:
            client.put_item(
                TableName=self.table,
                Item={"order_id": {"S": order_id}, **to_item(record)},
                ConditionExpression="attribute_not_exists(order_id)",
            )
        except client.exceptions.ConditionalCheckFailedException:
            item = client.get_item(
                TableName=self.table, Key={"order_id": {"S": order_id}}, ConsistentRead=True
            )["Item"]
            found = from_item(item)
            return Shipment(found["tracking_number"], found["carrier"])
        return shipment
