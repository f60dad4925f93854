"""Orders: a saga run by Step Functions, over the app's own functions.

    POST /orders ─► orders table (pending) ─► order workflow (Step Functions, standard):
      ValidateOrder ─► ReserveInventory ─► ChargePayment (retried) ─► ShipOrder
      ─► NotifyCustomer (SNS order-updates) ─► CompleteOrder
      on a failure: RefundPayment ─► ReleaseInventory ─► NotifyFailure ─► FailOrder
    order-updates ─► `email_order_update`: the owner's email
    nightly: `sweep_stuck_orders` settles orders whose workflow ended without finishing them

- `orders_service()` and `catalog_service()`: the API (`service`);
- one factory per step of the state machine (`steps`), each with only the grants its step
  uses: a step that reserves stock cannot take money;
- `stuck_order_sweep()` (`sweep`) and `order_update_mailer()` (`notifications`).

The state machine is declared with the resources (`OrderWorkflow` in infra/resources.json);
the payment provider and the carrier are ports whose shipped adapters are DynamoDB ledgers
with a test mode (`payments`, `shipping`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from chalicelib.core.resources import Resource, StageSetting, needs, on_arn
from chalicelib.users import PUBLIC_PROFILES_READ

if TYPE_CHECKING:
    from chalicelib.orders.executions import StepFunctionsWorkflow
    from chalicelib.orders.inventory import DynamoInventory
    from chalicelib.orders.notifications import OrderUpdateMailer
    from chalicelib.orders.owner_data import DynamoOrderOwnerData
    from chalicelib.orders.payments import DynamoPaymentLedger
    from chalicelib.orders.records import DynamoOrders
    from chalicelib.orders.service import CatalogService, OrdersService
    from chalicelib.orders.steps import OrderSteps
    from chalicelib.orders.sweep import StuckOrderSweep

ORDERS_TABLE = Resource("OrdersTable")
INVENTORY_TABLE = Resource("InventoryTable")
PAYMENTS_TABLE = Resource("PaymentsTable")
SHIPMENTS_TABLE = Resource("ShipmentsTable")
ORDER_WORKFLOW = Resource("OrderWorkflow")
IDEMPOTENCY_TABLE = Resource("IdempotencyTable")
ORDER_EMAIL_SENDER = StageSetting("OrderEmailSender")
STUCK_ORDER_MINUTES = StageSetting("StuckOrderMinutes")
#: The executions of a state machine, in a grant (`ORDER_WORKFLOW.allow(..., within=...)`).
EXECUTIONS = "/executions"
ORDERS_BY_OWNER = "/index/by-owner"
OPEN_ORDERS = "/index/by-open"
#: How long a mailed order update is remembered: longer than any redelivery.
UPDATE_DEDUPE_SECONDS = 7 * 24 * 3600

READ_AND_UPDATE_ORDERS = ORDERS_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem")
#: A compensation refunds through the payment ledger (its idempotent refund).
REFUND = PAYMENTS_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
#: Stock moves are transactions of Updates on the products (and the order).
MOVE_STOCK = INVENTORY_TABLE.allow("dynamodb:UpdateItem")


def _orders() -> DynamoOrders:
    from chalicelib.orders.records import DynamoOrders

    return DynamoOrders(ORDERS_TABLE.name)


def _inventory() -> DynamoInventory:
    from chalicelib.orders.inventory import DynamoInventory

    return DynamoInventory(INVENTORY_TABLE.name, ORDERS_TABLE.name)


def _payments() -> DynamoPaymentLedger:
    from chalicelib.orders.payments import DynamoPaymentLedger

    return DynamoPaymentLedger(PAYMENTS_TABLE.name)


def _workflow() -> StepFunctionsWorkflow:
    from chalicelib.orders.executions import StepFunctionsWorkflow

    return StepFunctionsWorkflow(ORDER_WORKFLOW.name)


@cache
@needs(
    ORDERS_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    ORDERS_TABLE.allow("dynamodb:Query", within=ORDERS_BY_OWNER),
    INVENTORY_TABLE.allow("dynamodb:BatchGetItem"),
    ORDER_WORKFLOW.allow("states:StartExecution"),
    ORDER_WORKFLOW.allow("states:StopExecution", within=EXECUTIONS),
    # A cancellation compensates at once: refund, release.
    REFUND,
    MOVE_STOCK,
)
def orders_service() -> OrdersService:
    from chalicelib.orders.service import OrdersService

    return OrdersService(_orders(), _inventory(), _workflow(), _payments())


@cache
@needs(INVENTORY_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"))
def catalog_service() -> CatalogService:
    from chalicelib.orders.service import CatalogService

    return CatalogService(_inventory())


def _steps(**ports: Any) -> OrderSteps:
    from chalicelib.orders.steps import OrderSteps

    return OrderSteps(_orders(), **ports)


@cache
@needs(READ_AND_UPDATE_ORDERS, INVENTORY_TABLE.allow("dynamodb:BatchGetItem"))
def validate_step() -> OrderSteps:
    return _steps(inventory=_inventory())


@cache
@needs(READ_AND_UPDATE_ORDERS, MOVE_STOCK)
def reserve_step() -> OrderSteps:
    return _steps(inventory=_inventory())


@cache
@needs(READ_AND_UPDATE_ORDERS, REFUND)
def payment_step() -> OrderSteps:
    """The charge (and, for an order cancelled while it charged, its refund)."""
    return _steps(payments=_payments())


@cache
@needs(
    READ_AND_UPDATE_ORDERS,
    MOVE_STOCK,
    SHIPMENTS_TABLE.allow("dynamodb:GetItem", "dynamodb:PutItem"),
)
def ship_step() -> OrderSteps:
    from chalicelib.orders.shipping import DynamoTestCarrier

    return _steps(inventory=_inventory(), carrier=DynamoTestCarrier(SHIPMENTS_TABLE.name))


@cache
@needs(READ_AND_UPDATE_ORDERS)
def outcome_step() -> OrderSteps:
    """CompleteOrder and FailOrder: they only write the order."""
    return _steps()


@cache
@needs(READ_AND_UPDATE_ORDERS, MOVE_STOCK)
def release_step() -> OrderSteps:
    return _steps(inventory=_inventory())


@cache
@needs(
    ORDERS_TABLE.allow("dynamodb:Query", within=OPEN_ORDERS),
    READ_AND_UPDATE_ORDERS,
    MOVE_STOCK,
    REFUND,
    ORDER_WORKFLOW.allow("states:DescribeExecution", within=EXECUTIONS),
    STUCK_ORDER_MINUTES.used(),
)
def stuck_order_sweep() -> StuckOrderSweep:
    from datetime import timedelta

    from chalicelib.orders.sweep import StuckOrderSweep

    minutes = int(STUCK_ORDER_MINUTES.value)
    threshold = timedelta(minutes=minutes)
    return StuckOrderSweep(_orders(), _inventory(), _payments(), _workflow(), threshold)


@cache
@needs(
    IDEMPOTENCY_TABLE.allow(
        "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"
    ),
    PUBLIC_PROFILES_READ,
    ORDER_EMAIL_SENDER.used(),
    on_arn(
        "arn:aws:ses:*:*:identity/*",
        "ses:SendEmail",
        condition=(("ses:FromAddress", ORDER_EMAIL_SENDER.key),),
    ),
)
def order_update_mailer() -> OrderUpdateMailer:
    from chalicelib.core.idempotency import OnceOnly
    from chalicelib.core.mail import SesMailer
    from chalicelib.orders.notifications import OrderUpdateMailer
    from chalicelib.users import public_profiles

    return OrderUpdateMailer(
        public_profiles(),
        SesMailer(ORDER_EMAIL_SENDER.value),
        OnceOnly(IDEMPOTENCY_TABLE.name, "order-update", UPDATE_DEDUPE_SECONDS),
    )


@cache
@needs(
    ORDERS_TABLE.allow("dynamodb:Query", within=ORDERS_BY_OWNER),
    # Pseudonymise an ended order; delete its Idempotency-Key claim.
    ORDERS_TABLE.allow("dynamodb:DeleteItem", "dynamodb:UpdateItem"),
    SHIPMENTS_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"),
)
def order_owner_data() -> DynamoOrderOwnerData:
    """A user's orders: `export(user_id)` and `erase(user_id)` (`owner_data`)."""
    from chalicelib.orders.owner_data import DynamoOrderOwnerData

    return DynamoOrderOwnerData(ORDERS_TABLE.name, SHIPMENTS_TABLE.name)


@cache
@needs(ORDERS_TABLE.allow("dynamodb:Query", within=ORDERS_BY_OWNER))
def order_owner_export() -> DynamoOrderOwnerData:
    """A user's orders for `export(user_id)` only: the API's role may read them, not erase."""
    from chalicelib.orders.owner_data import DynamoOrderOwnerData

    return DynamoOrderOwnerData(ORDERS_TABLE.name, SHIPMENTS_TABLE.name)
