"""Payments: the provider port the order workflow charges and refunds through, and the adapter
shipped with the app, a ledger in DynamoDB that behaves like a payment provider's test mode.

A provider is called with an idempotency key (the order's id): a charge retried after a lost
answer finds the first one instead of taking the money twice, and a refund happens once.

Test mode: the payment method decides what happens, so every branch of the workflow can be
driven on purpose.

- `pm_card_visa`, `pm_card_mastercard`: approved;
- `pm_card_declined`, `pm_card_insufficient_funds`: declined (`card_declined`,
  `insufficient_funds`);
- `pm_card_unavailable_<n>`: the provider is unavailable for the first n attempts (nothing
  is charged), then approves;
- `pm_card_timeout_<n>`: the charge is taken at the first attempt, but the answers of the
  first n attempts are lost (timeouts); a later attempt finds the charge and approves;
- any other `pm_...`: declined (`unknown_payment_method`).

The ledger's items (`pk`): `CHARGE#<key>` (approved or declined, with its amount), `REFUND#<key>`,
and `ATTEMPTS#<key>` (how often a charge with a failing test method was tried: what those
failures count).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.core import aws, clock
from chalicelib.core.dynamo import from_item, to_item

APPROVE = {"pm_card_visa", "pm_card_mastercard"}
DECLINE = {"pm_card_declined": "card_declined", "pm_card_insufficient_funds": "insufficient_funds"}
_UNAVAILABLE = re.compile(r"^pm_card_unavailable_([0-9])$")
_TIMEOUT = re.compile(r"^pm_card_timeout_([0-9])$")
APPROVED, DECLINED = "approved", "declined"


class ProviderUnavailable(Exception):
    """The provider could not take the charge now (nothing was charged): retry."""


class ProviderTimeout(Exception):
    """No answer came in time: the charge may or may not have been taken. Retrying with the
    same idempotency key is safe and tells which."""


@dataclass(frozen=True)
class Charge:
    payment_id: str
    status: str  # approved | declined
    amount: int
    currency: str
    decline_code: str = ""
    refund_id: str = ""

    @property
    def approved(self) -> bool:
        return self.status == APPROVED


class PaymentProvider(Protocol):
    def charge(self, key: str, amount: int, currency: str, method: str) -> Charge: ...
    def find_charge(self, key: str) -> Charge | None: ...
    def refund(self, key: str) -> Charge | None: ...


class DynamoPaymentLedger:
    """The test-mode provider, on a DynamoDB table (see the module's docstring)."""

    def __init__(self, table_name: str, client: Callable[[], Any] | None = None) -> None:
        self.table = table_name
        self._client = client or (lambda: aws.client("dynamodb"))

    def charge(self, key: str, amount: int, currency: str, method: str) -> Charge:
        """Charge `amount` once per `key`: a charge already made under the key (approved or
        declined) is answered again, whatever the method says now."""
        unavailable, lost = _UNAVAILABLE.fullmatch(method), _TIMEOUT.fullmatch(method)
        # Only the failing test methods depend on how often they were tried.
        attempt = self._count_attempt(key) if unavailable or lost else 1
        answer_lost = bool(lost) and attempt <= int(lost.group(1))  # type: ignore[union-attr]
        existing = self.find_charge(key)
        if existing is not None:
            if answer_lost:
                raise ProviderTimeout(f"the payment provider did not answer (attempt {attempt})")
            return existing
        if unavailable and attempt <= int(unavailable.group(1)):
            raise ProviderUnavailable(f"the payment provider is unavailable (attempt {attempt})")
        decline = (
            ""
            if method in APPROVE or unavailable or lost
            else DECLINE.get(method, "unknown_payment_method")
        )
        charge = Charge(
            payment_id=f"pay_{uuid.uuid4().hex[:24]}",
            status=DECLINED if decline else APPROVED,
            amount=amount,
            currency=currency,
            decline_code=decline,
        )
        client = self._client()
        try:
            client.put_item(
                TableName=self.table,
                Item={"pk": {"S": f"CHARGE#{key}"}, **to_item(_fields(charge))},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except client.exceptions.ConditionalCheckFailedException:
            found = self.find_charge(key)  # a concurrent attempt charged first
            assert found is not None
            return found
        if answer_lost:
            raise ProviderTimeout(f"the payment provider did not answer (attempt {attempt})")
        return charge

    def find_charge(self, key: str) -> Charge | None:
        item = (
            self._client()
            .get_item(TableName=self.table, Key={"pk": {"S": f"CHARGE#{key}"}}, ConsistentRead=True)
            .get("Item")
        )
        if not item:
            return None
        found = from_item(item)
        return Charge(
            payment_id=found["payment_id"],
            status=found["status"],
            amount=int(found["amount"]),
            currency=found["currency"],
            decline_code=found.get("decline_code", ""),
            refund_id=found.get("refund_id", ""),
        )

    def refund(self, key: str) -> Charge | None:
        """Give back an approved charge in full, once; None if there is nothing to refund
        (no charge, or a declined one). The charge returned carries its `refund_id`."""
        charge = self.find_charge(key)
        if charge is None or not charge.approved:
            return None
        if charge.refund_id:
            return charge
        refund_id = f"re_{uuid.uuid4().hex[:24]}"
        client = self._client()
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"pk": {"S": f"CHARGE#{key}"}},
                            "UpdateExpression": "SET refund_id = :refund",
                            "ConditionExpression": "attribute_not_exists(refund_id)",
                            "ExpressionAttributeValues": {":refund": {"S": refund_id}},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": {
                                "pk": {"S": f"REFUND#{key}"},
                                **to_item(
                                    {
                                        "refund_id": refund_id,
                                        "payment_id": charge.payment_id,
                                        "amount": charge.amount,
                                        "currency": charge.currency,
                                        "created_at": clock.timestamp(),
                                    }
                                ),
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except client.exceptions.TransactionCanceledException:
            found = self.find_charge(key)  # refunded meanwhile by another caller
            if found is None or not found.refund_id:
                raise
            return found
        return Charge(**{**_fields(charge, with_time=False), "refund_id": refund_id})

    def _count_attempt(self, key: str) -> int:
        answer = self._client().update_item(
            TableName=self.table,
            Key={"pk": {"S": f"ATTEMPTS#{key}"}},
            UpdateExpression="ADD attempts :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["attempts"]["N"])


def _fields(charge: Charge, with_time: bool = True) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "payment_id": charge.payment_id,
        "status": charge.status,
        "amount": charge.amount,
        "currency": charge.currency,
    }
    if charge.decline_code:
        fields["decline_code"] = charge.decline_code
    if charge.refund_id:
        fields["refund_id"] = charge.refund_id
    if with_time:
        fields["created_at"] = clock.timestamp()
    return fields
