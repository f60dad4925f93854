"""`make token EMAIL=ada@example.com [PASSWORD=...] [ADMIN=1]`: sign in to the local stack.
`make token MACHINE=1`: a trusted producer's token (client credentials) instead.

Signs in the way any client of the API does: Cognito's InitiateAuth (USER_PASSWORD_AUTH)
against the emulator's user pool, with the user's own password, and prints the access token,
ready for `curl -H "Authorization: Bearer $(make -s token EMAIL=... PASSWORD=...)" ...`.

For quick local tests, without PASSWORD: a user that does not exist yet is registered
through `POST /register` with a generated password (and `POST /register/confirm` with the
code the emulator's SES kept for the address), which is kept in the stack's state
folder (`.local/`, gone when the stack stops) so the next `make token` for the same address
signs in again. An existing user's password is never changed: a user registered some other
way needs its password. ADMIN=1 adds the user to the `admins` group first.

MACHINE=1 signs in as the telemetry producers' app client (`TelemetryMachineClient`), the way
a producer does it: the client-credentials grant at the pool's OAuth 2.0 token endpoint (the
emulator's `/oauth2/token`, `local/oauth2.py`), with the client's id and secret (read with
DescribeUserPoolClient, as an operator reads it in AWS), and prints the access token (scope
`telemetry/metrics.write`: system metrics on `POST /events`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from local.provision import STATE_DIR, emulator_client

PASSWORDS_FILE = "generated-passwords.json"


class SignInFailed(Exception):
    """Why no token could be had, in one line for the user."""


def random_password() -> str:
    """One that meets the pool's policy: upper, lower, digit, symbol, 20 characters."""
    alphabet = string.ascii_letters + string.digits
    core = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"{core}aZ9!"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email", nargs="?")
    parser.add_argument(
        "--machine", action="store_true", help="a trusted producer's client-credentials token"
    )
    parser.add_argument("--password", default=os.environ.get("PASSWORD") or None)
    parser.add_argument("--admin", action="store_true", help="add the user to the admins group")
    parser.add_argument("--id-token", action="store_true", help="print the ID token instead")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    from local.stack import running_state

    if not args.machine and not args.email:
        parser.error("an EMAIL is needed (or --machine)")
    state = running_state(args.state_dir)
    if state is None:
        return 1
    if args.machine:
        try:
            print(machine_token(state))
        except SignInFailed as problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    try:
        tokens = sign_in(state, args.state_dir, args.email, args.password, admin=args.admin)
    except SignInFailed as problem:
        print(problem, file=sys.stderr)
        return 1
    print(tokens["IdToken" if args.id_token else "AccessToken"])
    return 0


def issue_token(
    state: dict[str, Any], email: str, admin: bool = False, id_token: bool = False
) -> str:
    """A token for a local test user (registered on first use), for tools and tests."""
    state_dir = Path(state.get("state_dir") or STATE_DIR)
    tokens = sign_in(state, state_dir, email, None, admin=admin)
    return str(tokens["IdToken" if id_token else "AccessToken"])


def sign_in(
    state: dict[str, Any], state_dir: Path, email: str, password: str | None, admin: bool
) -> dict[str, Any]:
    """Cognito's AuthenticationResult for `email` (IdToken, AccessToken, RefreshToken)."""
    idp = emulator_client(state, "cognito-idp")
    pool = state["resources"]["UserPoolId"]
    if password is None:
        password = _test_user_password(state, state_dir, idp, pool, email)
    if admin:
        try:
            idp.admin_add_user_to_group(UserPoolId=pool, Username=email, GroupName="admins")
        except idp.exceptions.UserNotFoundException:
            raise SignInFailed(f"No user {email} is registered.") from None
    try:
        answer = idp.initiate_auth(
            ClientId=state["resources"]["UserPoolClientId"],
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": email, "PASSWORD": password},
        )
    except (idp.exceptions.NotAuthorizedException, idp.exceptions.UserNotFoundException):
        raise SignInFailed(f"Sign-in refused for {email}: wrong email or password.") from None
    return dict(answer["AuthenticationResult"])


def _test_user_password(
    state: dict[str, Any], state_dir: Path, idp: Any, pool: str, email: str
) -> str:
    """The generated password of a test user `make token` registered, registering it now if
    the address is free. A user registered otherwise keeps its password, which we lack."""
    stored_path = state_dir / PASSWORDS_FILE
    stored: dict[str, str] = json.loads(stored_path.read_text()) if stored_path.exists() else {}
    if email in stored:
        return stored[email]
    try:
        idp.admin_get_user(UserPoolId=pool, Username=email)
    except idp.exceptions.UserNotFoundException:
        password = random_password()
        _register(state, email, password)
        stored[email] = password
        stored_path.touch(mode=0o600)
        stored_path.write_text(json.dumps(stored, indent=2) + "\n")
        return password
    raise SignInFailed(
        f"{email} is registered with its own password: make token EMAIL={email} PASSWORD=..."
    )


def machine_token(state: dict[str, Any], scope: str | None = None) -> str:
    """A client-credentials access token of the telemetry producers' app client, from the
    emulator's token endpoint (`scope`: the client's allowed scopes when None)."""
    import base64
    import urllib.parse

    idp = emulator_client(state, "cognito-idp")
    client_id = state["resources"]["TelemetryMachineClientId"]
    client = idp.describe_user_pool_client(
        UserPoolId=state["resources"]["UserPoolId"], ClientId=client_id
    )["UserPoolClient"]
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    basic = base64.b64encode(f"{client_id}:{client['ClientSecret']}".encode()).decode()
    request = urllib.request.Request(
        f"{state['emulator_url'].rstrip('/')}/oauth2/token",
        data=urllib.parse.urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Basic {basic}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["access_token"])
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SignInFailed(f"The token endpoint refused: {exc.code} {detail}") from None


def _register(state: dict[str, Any], email: str, password: str) -> str:
    """Both steps of a registration, the code read from the emulator's mail (`mailbox`)."""
    from local.mailbox import mails_to, wait_for_code

    before = len(mails_to(state["emulator_url"], email))
    _post(state["api_url"], "/register", {"email": email, "name": email.split("@")[0]})
    code = wait_for_code(state["emulator_url"], email, after=before)
    confirmation = {"email": email, "code": code, "password": password}
    user = _post(state["api_url"], "/register/confirm", confirmation)
    return str(user["user_id"])


def _post(api_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SignInFailed(f"POST {path} failed: {exc.code} {detail}") from None


if __name__ == "__main__":
    sys.exit(main())
