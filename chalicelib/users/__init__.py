"""Users: profiles, registration and their events."""

from __future__ import annotations

from functools import cache

from chalicelib.users.service import UsersService


@cache
def users_service() -> UsersService:
    """The process's service, wired to DynamoDB, SNS and SQS on first use."""
    from chalicelib.auth.config import cognito_config
    from chalicelib.core.settings import get_settings
    from chalicelib.users.events import AwsUserEventPublisher
    from chalicelib.users.identity import CognitoIdentityDirectory
    from chalicelib.users.repository import DynamoUserRepository

    settings = get_settings()
    return UsersService(
        DynamoUserRepository(settings.users_table_name),
        CognitoIdentityDirectory(lambda: cognito_config().user_pool_id),
        AwsUserEventPublisher(settings),
    )
