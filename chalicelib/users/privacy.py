"""A user's data as a whole: its erasure once the user is deleted (`erasure`) and its export
on request (`export`), wired to AWS on first use.

Each factory takes the other domains' owner-data objects (`telemetry_owner_data()`,
`image_owner_data()`, and `order_owner_data()` for the erasure or `order_owner_export()`
for the export) from its caller, the entry point in app.py, which names those factories
itself: so the function's policy gets each domain's own grants (`infra.wiring` follows the
factories an entry point calls), and this module holds none of them.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.auth.config import COGNITO_CONFIG_READ
from chalicelib.core.resources import Resource, StageSetting, needs
from chalicelib.users import USER_POOL, USERS_TABLE

if TYPE_CHECKING:
    from chalicelib.users.erasure import OwnerData, PseudonymisedOwnerData, UserErasure
    from chalicelib.users.export import UserExport

USER_ERASURE_QUEUE = Resource("UserErasureQueue")
#: How long after a deletion the erasure keeps repeating (`erasure`: tokens still valid).
USER_ERASURE_WINDOW_MINUTES = StageSetting("UserErasureWindowMinutes")


@cache
@needs(
    USER_POOL.allow_by_tags("cognito-idp:AdminDeleteUser"),
    COGNITO_CONFIG_READ,
    # The next pass: a delayed message to its own queue.
    USER_ERASURE_QUEUE.allow("sqs:GetQueueUrl", "sqs:SendMessage"),
    USER_ERASURE_WINDOW_MINUTES.used(),
)
def user_erasure(
    telemetry: OwnerData, images: OwnerData, orders: PseudonymisedOwnerData
) -> UserErasure:
    """The `user-deleted` consumer, erasing through the domains given (the orders kept under
    the erasure's random pseudonym for the user)."""
    from datetime import timedelta

    from chalicelib.auth.config import cognito_config
    from chalicelib.core import aws
    from chalicelib.users.erasure import SqsFollowUps, UserErasure
    from chalicelib.users.identity import CognitoIdentityDirectory

    queue = USER_ERASURE_QUEUE.name
    return UserErasure(
        CognitoIdentityDirectory(lambda: cognito_config().user_pool_id),
        {"images": images, "telemetry": telemetry},
        SqsFollowUps(lambda: aws.queue_url(queue)),
        timedelta(minutes=int(USER_ERASURE_WINDOW_MINUTES.value)),
        pseudonymised={"orders": orders},
    )


@cache
@needs(USERS_TABLE.allow("dynamodb:GetItem"))
def user_export(telemetry: OwnerData, images: OwnerData, orders: OwnerData) -> UserExport:
    """`GET /users/{id}/export`, reading through the domains given."""
    from chalicelib.users.export import UserExport
    from chalicelib.users.pending import DynamoPendingRecords
    from chalicelib.users.repository import DynamoUserRepository

    return UserExport(
        DynamoUserRepository(USERS_TABLE.name),
        DynamoPendingRecords(USERS_TABLE.name),
        {"images": images, "telemetry": telemetry, "orders": orders},
    )
