"""The orders API's use cases: place an order (priced from the catalog, once per
Idempotency-Key), read one, list the caller's, cancel one before it ships; and the catalog
admins keep.

Rules: any signed-in user may order; an order is visible to its owner and to admins (anyone
else gets 404, as if it did not exist); lists show the caller's own orders. The API checks
that a request is well formed and prices it; the business rules (where the shop delivers,
how large an order may be) are the workflow's first step, which fails the order if it breaks
one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.auth.tokens import Principal
from chalicelib.core import clock
from chalicelib.core.aws import retryable
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
    ValidationFailed,
)
from chalicelib.core.ids import is_uuid
from chalicelib.core.pagination import decode_cursor, encode_cursor
from chalicelib.orders import model
from chalicelib.orders.compensation import finish_cancellation
from chalicelib.orders.payments import PaymentProvider
from chalicelib.orders.ports import Catalog, Orders, Workflow
from chalicelib.orders.records import ClaimTaken, StatusConflict


class OrdersService:
    def __init__(
        self,
        orders: Orders,
        inventory: Catalog,
        workflow: Workflow,
        payments: PaymentProvider,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._orders = orders
        self._inventory = inventory
        self._workflow = workflow
        self._payments = payments
        self._new_id = new_id

    def place(
        self,
        principal: Principal,
        body: Mapping[str, Any],
        idempotency_key: str | None,
        correlation_id: str,
    ) -> tuple[dict[str, Any], bool]:
        """The new order (pending, its workflow started) and False; or, for an
        Idempotency-Key already used with the same request, that order and True."""
        request = model.validate_order_request(body)
        key = model.check_idempotency_key(idempotency_key)
        if not is_uuid(principal.user_id):
            raise Forbidden("This identity cannot place orders.")
        if key is not None:
            found = self._orders.find_claim(principal.user_id, key)
            if found is not None:
                return self._replay(found, request, correlation_id), True
        order = self._priced(principal.user_id, request)
        claim = (key, request.fingerprint()) if key is not None else None
        try:
            self._orders.create(order, claim)
        except ClaimTaken as taken:  # the same key, sent twice at once
            return self._replay((taken.order_id, taken.fingerprint), request, correlation_id), True
        self._start(order, correlation_id)
        return model.order_view(order), False

    def get(self, principal: Principal, order_id: str) -> dict[str, Any]:
        return model.order_view(self._visible(principal, order_id))

    def list(self, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        after = decode_cursor(cursor) if cursor else None
        items, last = self._orders.owned_page(principal.user_id, limit, after)
        return {
            "items": [model.order_view(item) for item in items],
            "next_cursor": encode_cursor(last) if last else None,
        }

    def cancel(self, principal: Principal, order_id: str) -> dict[str, Any]:
        """Cancel an order that has not shipped: stop its workflow, refund what was charged
        and release what was held. Safe to repeat; an order left `cancelling` by a failure
        half-way is finished by the next call, or by the nightly sweep."""
        order = self._visible(principal, order_id)
        if order["status"] == model.CANCELLED:  # a retried request: done already
            return model.order_view(order)
        allowed = (*model.CANCELLABLE, model.CANCELLING)
        started = clock.timestamp()
        try:
            order = self._orders.update(
                order_id,
                status=model.CANCELLING,
                from_statuses=allowed,
                fields={"cancel_requested_at": started},
            )
        except StatusConflict as conflict:
            raise Conflict(
                f"The order is {conflict.status} and can no longer be cancelled."
            ) from None
        who = "an admin" if principal.user_id != order["owner_id"] else "its owner"
        self._workflow.stop(order_id, f"cancelled by {who}")
        ended = finish_cancellation(self._orders, self._inventory, self._payments, order, started)
        return model.order_view(ended or self._orders.get(order_id) or order)

    def _visible(self, principal: Principal, order_id: str) -> dict[str, Any]:
        order = self._orders.get(order_id) if model.is_order_id(order_id) else None
        if order is None or (order["owner_id"] != principal.user_id and not principal.is_admin):
            raise NotFound("No order has this id.")
        return order

    def _priced(self, owner_id: str, request: model.OrderRequest) -> dict[str, Any]:
        products = self._inventory.get_many([sku for sku, _ in request.lines])
        problems = [
            {"field": f"lines[{index}].sku", "issue": "is not a product on sale"}
            for index, (sku, _) in enumerate(request.lines)
            if not products.get(sku, {}).get("active", False)
        ]
        if problems:
            raise ValidationFailed("The order is not valid.", problems)
        lines = [
            (sku, products[sku]["name"], quantity, int(products[sku]["unit_amount"]))
            for sku, quantity in request.lines
        ]
        return model.new_order(
            self._new_id(),
            owner_id,
            lines,
            request.shipping_address,
            request.payment_method,
            clock.timestamp(),
        )

    def _replay(
        self, found: tuple[str, str], request: model.OrderRequest, correlation_id: str
    ) -> dict[str, Any]:
        order_id, fingerprint = found
        if fingerprint != request.fingerprint():
            raise UnprocessableEntity(
                "This Idempotency-Key was used for a different order; use a new key."
            )
        order = self._orders.get(order_id)
        if order is None:  # stored in the same transaction as its claim
            raise ServiceUnavailable("The order could not be read; retry.")
        if order["status"] == model.PENDING:
            self._start(order, correlation_id)  # its first request may have failed to
        return model.order_view(order)

    def _start(self, order: Mapping[str, Any], correlation_id: str) -> None:
        execution_input = {
            "order_id": order["order_id"],
            "owner_id": order["owner_id"],
            "correlation_id": correlation_id,
        }
        try:
            self._workflow.start(order["order_id"], execution_input)
        except Exception as exc:
            if not retryable(exc):
                raise
            raise ServiceUnavailable(
                "The order is stored but its processing could not start; retry the request "
                "with the same Idempotency-Key."
            ) from exc


class CatalogService:
    """Products and their stock: any signed-in user may look, admins set them."""

    def __init__(self, inventory: Catalog) -> None:
        self._inventory = inventory

    def get(self, sku: str) -> dict[str, Any]:
        product = self._inventory.get(model.check_sku(sku))
        if product is None:
            raise NotFound("No product has this sku.")
        return model.product_view(product)

    def put(self, principal: Principal, sku: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if not principal.is_admin:
            raise Forbidden("Only admins may change the catalog.")
        product = model.validate_product(body)
        return model.product_view(self._inventory.put_product(model.check_sku(sku), product))
