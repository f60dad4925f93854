"""`make token EMAIL=ada@example.com [ADMIN=1]`: a valid token for a user of the local stack.

Creates the user (profile and sign-in, through `POST /register`) if it does not exist yet,
gives it a fresh password, adds it to the `admins` group when asked, signs in against the
emulator's user pool and prints the access token, ready for
`curl -H "Authorization: Bearer $(make -s token EMAIL=...)" ...`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from local.provision import PROJECT_DIR, emulator_client


def random_password() -> str:
    """One that meets the pool's policy: upper, lower, digit, symbol, 20 characters."""
    alphabet = string.ascii_letters + string.digits
    core = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"{core}aZ9!"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email")
    parser.add_argument("--admin", action="store_true", help="add the user to the admins group")
    parser.add_argument("--id-token", action="store_true", help="print the ID token instead")
    parser.add_argument("--state-dir", type=Path, default=PROJECT_DIR / ".local")
    args = parser.parse_args(argv)
    from local.stack import running_state

    state = running_state(args.state_dir)
    if state is None:
        return 1
    print(issue_token(state, args.email, args.admin, args.id_token))
    return 0


def issue_token(state: dict[str, Any], email: str, admin: bool, id_token: bool) -> str:
    idp = emulator_client(state, "cognito-idp")
    pool = state["resources"]["UserPoolId"]
    client_id = state["resources"]["UserPoolClientId"]
    password = random_password()
    try:
        username = idp.admin_get_user(UserPoolId=pool, Username=email)["Username"]
        idp.admin_set_user_password(
            UserPoolId=pool, Username=username, Password=password, Permanent=True
        )
    except idp.exceptions.UserNotFoundException:
        username = _register(state["api_url"], email, password)
    if admin:
        idp.admin_add_user_to_group(UserPoolId=pool, Username=username, GroupName="admins")
    result = idp.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )["AuthenticationResult"]
    return str(result["IdToken" if id_token else "AccessToken"])


def _register(api_url: str, email: str, password: str) -> str:
    body = json.dumps({"email": email, "name": email.split("@")[0], "password": password})
    request = urllib.request.Request(
        f"{api_url}/register",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["user_id"])
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"POST /register failed: {exc.code} {exc.read().decode()}") from None


if __name__ == "__main__":
    sys.exit(main())
