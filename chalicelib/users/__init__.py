"""Users: profiles, registration and their events."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.users.service import UsersService

if TYPE_CHECKING:
    from chalicelib.users.events import SnsUserEventPublisher
    from chalicelib.users.onboarding import UserOnboarding

#: How long a sent welcome is remembered: longer than any redelivery (a stream record lives
#: 24 h; SNS and Lambda retry within hours).
WELCOME_DEDUPE_SECONDS = 7 * 24 * 3600


@cache
def users_service() -> UsersService:
    """The process's service, wired to DynamoDB and Cognito on first use."""
    from chalicelib.auth.config import cognito_config
    from chalicelib.core.settings import get_settings
    from chalicelib.users.identity import CognitoIdentityDirectory
    from chalicelib.users.repository import DynamoUserRepository

    settings = get_settings()
    return UsersService(
        DynamoUserRepository(settings.users_table_name),
        CognitoIdentityDirectory(lambda: cognito_config().user_pool_id),
    )


@cache
def user_events_publisher() -> SnsUserEventPublisher:
    """Publishes the users table's stream as domain events (SNS)."""
    from chalicelib.core.settings import get_settings
    from chalicelib.users.events import SnsUserEventPublisher

    return SnsUserEventPublisher(get_settings())


@cache
def user_onboarding() -> UserOnboarding:
    """Welcome email, default preferences and profile set-up, wired to AWS on first use."""
    from chalicelib.core import clock
    from chalicelib.core.idempotency import OnceOnly
    from chalicelib.core.settings import get_settings
    from chalicelib.users.mailer import SesMailer
    from chalicelib.users.onboarding import UserOnboarding
    from chalicelib.users.repository import DynamoUserRepository

    settings = get_settings()
    return UserOnboarding(
        DynamoUserRepository(settings.users_table_name),
        SesMailer(settings.welcome_email_sender),
        OnceOnly(settings.idempotency_table_name, "welcome", WELCOME_DEDUPE_SECONDS),
        clock=clock.timestamp,
    )
