"""Users: profiles, registration and their events.

The factories below wire the domain to AWS on first use, and say with `@needs` what each
does with which resource of infra/resources.json (see `core.resources`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from chalicelib.auth.config import COGNITO_CONFIG_READ
from chalicelib.core.resources import Resource, StageSetting, needs, on_arn
from chalicelib.users.service import UsersService

if TYPE_CHECKING:
    from chalicelib.users.events import SnsUserEventPublisher
    from chalicelib.users.onboarding import ProfileSetUp, UserWelcome
    from chalicelib.users.public import DynamoPublicProfiles
    from chalicelib.users.registration import RegistrationLimits, RegistrationService

USERS_TABLE = Resource("UsersTable")
USER_CREATED_TOPIC = Resource("UserCreatedTopic")
USER_UPDATED_TOPIC = Resource("UserUpdatedTopic")
USER_DELETED_TOPIC = Resource("UserDeletedTopic")
IDEMPOTENCY_TABLE = Resource("IdempotencyTable")
QUOTAS_TABLE = Resource("QuotasTable")
USER_POOL = Resource("UserPool")
WELCOME_EMAIL_SENDER = StageSetting("WelcomeEmailSender")
REGISTRATION_LIMITS = (
    StageSetting("RegistrationsPerClientHour"),
    StageSetting("ConfirmationsPerClientHour"),
    StageSetting("VerificationMailsPerAddressDay"),
    StageSetting("EmailChangesPerUserDay"),
    StageSetting("EmailConfirmationsPerUserHour"),
)
#: Sending a code or a notice: only from the stage's own sender address.
SEND_USER_MAIL = (
    WELCOME_EMAIL_SENDER.used(),
    on_arn(
        "arn:aws:ses:*:*:identity/*",
        "ses:SendEmail",
        condition=(("ses:FromAddress", WELCOME_EMAIL_SENDER.key),),
    ),
)
#: The index `GET /users` pages through (users.repository.LIST_INDEX).
USERS_BY_CREATED = "/index/by-created"

#: What another domain's factory declares when it reads `public_profiles()`.
PUBLIC_PROFILES_READ = USERS_TABLE.allow("dynamodb:BatchGetItem")

#: How long a sent welcome is remembered: longer than any redelivery (a stream record lives
#: 24 h; SNS and Lambda retry within hours).
WELCOME_DEDUPE_SECONDS = 7 * 24 * 3600


def registration_limits() -> RegistrationLimits:
    from chalicelib.users.registration import RegistrationLimits

    return RegistrationLimits(*(int(setting.value) for setting in REGISTRATION_LIMITS))


@cache
@needs(
    USERS_TABLE.allow(
        "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"
    ),
    USERS_TABLE.allow("dynamodb:Query", within=USERS_BY_CREATED),
    # The pool's id is made at deploy time: the grant names the pool by its tags.
    USER_POOL.allow_by_tags(
        "cognito-idp:AdminDeleteUser",
        "cognito-idp:AdminUpdateUserAttributes",
        "cognito-idp:AdminUserGlobalSignOut",
    ),
    COGNITO_CONFIG_READ,
    QUOTAS_TABLE.allow("dynamodb:UpdateItem"),
    *(setting.used() for setting in REGISTRATION_LIMITS),
    *SEND_USER_MAIL,
)
def users_service() -> UsersService:
    """The process's service, wired to DynamoDB, Cognito and SES on first use."""
    from chalicelib.auth.config import cognito_config
    from chalicelib.core.quotas import DynamoQuotas
    from chalicelib.users.identity import CognitoIdentityDirectory
    from chalicelib.users.mailer import SesMailer
    from chalicelib.users.pending import DynamoPendingRecords
    from chalicelib.users.repository import DynamoUserRepository

    return UsersService(
        DynamoUserRepository(USERS_TABLE.name),
        CognitoIdentityDirectory(lambda: cognito_config().user_pool_id),
        DynamoPendingRecords(USERS_TABLE.name),
        SesMailer(WELCOME_EMAIL_SENDER.value),
        DynamoQuotas(QUOTAS_TABLE.name),
        registration_limits(),
    )


@cache
@needs(
    USERS_TABLE.allow(
        "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"
    ),
    USER_POOL.allow_by_tags(
        "cognito-idp:AdminCreateUser",
        "cognito-idp:AdminDeleteUser",
        "cognito-idp:AdminGetUser",
        "cognito-idp:AdminSetUserPassword",
    ),
    COGNITO_CONFIG_READ,
    QUOTAS_TABLE.allow("dynamodb:UpdateItem"),
    *(setting.used() for setting in REGISTRATION_LIMITS),
    *SEND_USER_MAIL,
)
def registration_service() -> RegistrationService:
    """`POST /register` and `/register/confirm`, wired to DynamoDB, Cognito and SES."""
    from chalicelib.auth.config import cognito_config
    from chalicelib.core.quotas import DynamoQuotas
    from chalicelib.users.identity import CognitoIdentityDirectory
    from chalicelib.users.mailer import SesMailer
    from chalicelib.users.pending import DynamoPendingRecords
    from chalicelib.users.registration import RegistrationService
    from chalicelib.users.repository import DynamoUserRepository

    return RegistrationService(
        DynamoUserRepository(USERS_TABLE.name),
        DynamoPendingRecords(USERS_TABLE.name),
        CognitoIdentityDirectory(lambda: cognito_config().user_pool_id),
        SesMailer(WELCOME_EMAIL_SENDER.value),
        DynamoQuotas(QUOTAS_TABLE.name),
        registration_limits(),
    )


@cache
@needs(
    USER_CREATED_TOPIC.allow("sns:Publish"),
    USER_UPDATED_TOPIC.allow("sns:Publish"),
    USER_DELETED_TOPIC.allow("sns:Publish"),
)
def user_events_publisher() -> SnsUserEventPublisher:
    """Publishes the users table's stream as domain events (SNS)."""
    from chalicelib.users.events import (
        USER_CREATED,
        USER_DELETED,
        USER_UPDATED,
        SnsUserEventPublisher,
    )

    return SnsUserEventPublisher(
        {
            USER_CREATED: USER_CREATED_TOPIC.name,
            USER_UPDATED: USER_UPDATED_TOPIC.name,
            USER_DELETED: USER_DELETED_TOPIC.name,
        }
    )


@cache
@needs(
    USERS_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"),
    # Powertools' idempotency records (`core.idempotency`).
    IDEMPOTENCY_TABLE.allow(
        "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"
    ),
    # SES authorises the sender's identity; the condition holds the function to the stage's
    # own From address.
    *SEND_USER_MAIL,
)
def user_welcome() -> UserWelcome:
    """Default preferences and the welcome email, wired to AWS on first use."""
    from chalicelib.core import clock
    from chalicelib.core.idempotency import OnceOnly
    from chalicelib.users.mailer import SesMailer
    from chalicelib.users.onboarding import UserWelcome
    from chalicelib.users.repository import DynamoUserRepository

    return UserWelcome(
        DynamoUserRepository(USERS_TABLE.name),
        SesMailer(WELCOME_EMAIL_SENDER.value),
        OnceOnly(IDEMPOTENCY_TABLE.name, "welcome", WELCOME_DEDUPE_SECONDS),
        clock=clock.timestamp,
    )


@cache
@needs(USERS_TABLE.allow("dynamodb:GetItem", "dynamodb:UpdateItem"))
def profile_set_up() -> ProfileSetUp:
    """Marks new users' profiles set up (the onboarding queue)."""
    from chalicelib.core import clock
    from chalicelib.users.onboarding import ProfileSetUp
    from chalicelib.users.repository import DynamoUserRepository

    return ProfileSetUp(DynamoUserRepository(USERS_TABLE.name), clock=clock.timestamp)


def public_profiles() -> DynamoPublicProfiles:
    """Users' public fields by id, for other domains (search): they never see the table's
    key layout. Whoever calls this declares `PUBLIC_PROFILES_READ`."""
    from chalicelib.users.public import DynamoPublicProfiles

    return DynamoPublicProfiles(USERS_TABLE.name)
