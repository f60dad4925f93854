"""Who may do what with user profiles: pure rules, tested without AWS."""

from __future__ import annotations

from chalicelib.auth.tokens import Principal
from chalicelib.core.errors import Forbidden


def require_self_or_admin(principal: Principal, user_id: str) -> None:
    # A machine identity's id is its app client's: never a user's, whatever it matches.
    if principal.is_machine or (principal.user_id != user_id and not principal.is_admin):
        raise Forbidden("You may only access your own profile.")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only members of the admins group may do this.")
