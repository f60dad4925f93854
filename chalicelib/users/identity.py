"""Cognito users behind the narrow interface the users domain needs.

Users sign in with their email; the profile's `user_id` is the Cognito `sub`. Accounts are
made by the API (`AllowAdminCreateUserOnly`), only once the address is proven
(`registration`): so the user is created with the email marked verified and the password,
given with the code, set permanent; it can sign in at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from chalicelib.core import aws


class IdentityExists(Exception):
    """Cognito already has a user with this email."""


class WeakPassword(Exception):
    """Cognito refused the password; the message says why."""


class CognitoIdentityDirectory:
    def __init__(
        self, user_pool_id: Callable[[], str], client: Callable[[], Any] | None = None
    ) -> None:
        self._pool = user_pool_id
        self._client = client or (lambda: aws.client("cognito-idp"))

    def create(self, email: str, name: str, password: str) -> str:
        """Create the sign-in identity of a proven address; returns its `sub`."""
        idp = self._client()
        try:
            user = idp.admin_create_user(
                UserPoolId=self._pool(),
                Username=email,
                UserAttributes=[
                    {"Name": "email", "Value": email},
                    {"Name": "email_verified", "Value": "true"},
                    {"Name": "name", "Value": name},
                ],
                MessageAction="SUPPRESS",
            )["User"]
        except idp.exceptions.UsernameExistsException:
            raise IdentityExists() from None
        sub = next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub")
        try:
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
        """Move the sign-in to a proven address (`users.service.confirm_email`)."""
        self._client().admin_update_user_attributes(
            UserPoolId=self._pool(),
            Username=user_id,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
