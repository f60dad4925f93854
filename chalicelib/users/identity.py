"""Cognito users behind the narrow interface registration needs.

Users sign in with their email; the profile's `user_id` is the Cognito `sub`. Accounts are
made by the API (`AllowAdminCreateUserOnly`) with the password set permanent, disabled and
unverified until the address is proven (`registration`): then `activate` enables the
identity and marks the email verified. `disabled_before` lists the disabled ones page by page
for the nightly sweep of abandoned sign-ups (`signup_sweep`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.core import aws

#: ListUsers' largest page.
MAX_LIST_PAGE = 60


class IdentityExists(Exception):
    """Cognito already has a user with this email."""


class IdentityGone(Exception):
    """The identity no longer exists (deleted meanwhile)."""


class WeakPassword(Exception):
    """Cognito refused the password; the message says why."""


@dataclass(frozen=True)
class DisabledIdentity:
    """A disabled sign-in identity as listed: its `sub`, its email (if it has one) and
    when Cognito created it."""

    user_id: str
    email: str | None
    created_at: datetime


class CognitoIdentityDirectory:
    def __init__(
        self, user_pool_id: Callable[[], str], client: Callable[[], Any] | None = None
    ) -> None:
        self._pool = user_pool_id
        self._client = client or (lambda: aws.client("cognito-idp"))

    def create(self, email: str, name: str, password: str, enabled: bool = True) -> str:
        """Create the sign-in identity (disabled, its email unverified, unless `enabled`);
        returns its `sub`."""
        idp = self._client()
        try:
            user = idp.admin_create_user(
                UserPoolId=self._pool(),
                Username=email,
                UserAttributes=[
                    {"Name": "email", "Value": email},
                    {"Name": "email_verified", "Value": "true" if enabled else "false"},
                    {"Name": "name", "Value": name},
                ],
                MessageAction="SUPPRESS",
            )["User"]
        except idp.exceptions.UsernameExistsException:
            raise IdentityExists() from None
        sub = next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub")
        try:
            if not enabled:
                idp.admin_disable_user(UserPoolId=self._pool(), Username=sub)
            idp.admin_set_user_password(
                UserPoolId=self._pool(), Username=sub, Password=password, Permanent=True
            )
        except idp.exceptions.InvalidPasswordException as exc:
            self.delete(sub)
            raise WeakPassword(exc.response["Error"].get("Message", "password refused")) from None
        except Exception:
            self.delete(sub)
            raise
        return str(sub)

    def activate(self, user_id: str) -> None:
        """The address is proven: mark it verified and let the identity sign in;
        IdentityGone if it was deleted meanwhile."""
        idp = self._client()
        try:
            idp.admin_update_user_attributes(
                UserPoolId=self._pool(),
                Username=user_id,
                UserAttributes=[{"Name": "email_verified", "Value": "true"}],
            )
            idp.admin_enable_user(UserPoolId=self._pool(), Username=user_id)
        except idp.exceptions.UserNotFoundException:
            raise IdentityGone(user_id) from None

    def deactivate(self, user_id: str) -> None:
        """Undo `activate`: the identity cannot sign in again (one already gone is fine)."""
        idp = self._client()
        with contextlib.suppress(idp.exceptions.UserNotFoundException):
            idp.admin_disable_user(UserPoolId=self._pool(), Username=user_id)

    def sign_out_everywhere(self, user_id: str) -> None:
        """Revoke the identity's refresh tokens (AdminUserGlobalSignOut), so no new access
        or ID token can be had from them; one already gone is fine."""
        idp = self._client()
        with contextlib.suppress(idp.exceptions.UserNotFoundException):
            idp.admin_user_global_sign_out(UserPoolId=self._pool(), Username=user_id)

    def delete(self, user_id: str) -> None:
        """Remove the identity; one that is already gone is fine."""
        idp = self._client()
        with contextlib.suppress(idp.exceptions.UserNotFoundException):
            idp.admin_delete_user(UserPoolId=self._pool(), Username=user_id)

    def find(self, email: str) -> str | None:
        """The `sub` of the identity signing in with `email`, if there is one."""
        idp = self._client()
        try:
            user = idp.admin_get_user(UserPoolId=self._pool(), Username=email)
        except idp.exceptions.UserNotFoundException:
            return None
        return str(next(a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub"))

    def change_email(self, user_id: str, email: str) -> None:
        self._client().admin_update_user_attributes(
            UserPoolId=self._pool(),
            Username=user_id,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
            ],
        )

    def disabled_before(
        self, moment: datetime, limit: int = MAX_LIST_PAGE, token: str | None = None
    ) -> tuple[list[DisabledIdentity], str | None]:
        """One page of the disabled identities (ListUsers, Filter `status = "Disabled"`,
        at most `limit` of them), keeping those created before `moment`; and the token of
        the next page, None after the last. Cognito filters on one attribute and never on
        dates, so the date is compared here: a page may be empty and still have a next."""
        request: dict[str, Any] = {
            "UserPoolId": self._pool(),
            "Filter": 'status = "Disabled"',
            "Limit": max(1, min(limit, MAX_LIST_PAGE)),
        }
        if token:
            request["PaginationToken"] = token
        answer = self._client().list_users(**request)
        found = []
        for user in answer.get("Users", []):
            if user.get("Enabled", True) or user["UserCreateDate"] >= moment:
                continue  # the filter holds anyway; never trusted to delete
            attributes = {a["Name"]: a["Value"] for a in user.get("Attributes", [])}
            sub = attributes.get("sub")
            if sub:
                found.append(DisabledIdentity(sub, attributes.get("email"), user["UserCreateDate"]))
        return found, answer.get("PaginationToken") or None
