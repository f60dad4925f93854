"""The Users API over real HTTP on the running local stack, and the stack's own behaviour."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from local.events.invoke import function_settings
from local.inbox import drain, subscribe_inbox
from local.stack import free_port, free_ports, spawn
from tests.integration.conftest import start_stack, stop, wait_until_ready

pytestmark = pytest.mark.integration


def new_email() -> str:
    return f"it-{uuid.uuid4().hex[:12]}@example.com"


PASSWORD = "Corr3ct-Horse!"


def register(api: str, session: requests.Session | None = None, **fields: Any) -> dict[str, Any]:
    """Both steps: POST /register, then the code the emulator's SES kept for the address
    and the password (`password` among `fields`, else PASSWORD)."""
    from local.mailbox import wait_for_code
    from tests.integration.conftest import EMULATOR_OF_API

    password = fields.pop("password", PASSWORD)
    body = {"email": new_email(), "name": "Integration", **fields}
    asked = (session or requests).post(f"{api}/register", json=body, timeout=10)
    assert asked.status_code == 202, asked.text
    confirmation = {
        "email": body["email"],
        "code": wait_for_code(EMULATOR_OF_API[api], body["email"]),
        "password": password,
    }
    response = (session or requests).post(f"{api}/register/confirm", json=confirmation, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def test_stack_file_says_what_a_client_needs(stack: dict[str, Any]) -> None:
    assert stack["api_url"].startswith("http://127.0.0.1:")
    assert stack["emulator_url"].startswith("http://127.0.0.1:")
    assert stack["resources"]["UsersTableName"] == "serverless-app-dev-users"
    assert stack["resources"]["OnboardingQueueUrl"].endswith("serverless-app-dev-onboarding")


def sign_in(stack: dict[str, Any], email: str) -> dict[str, str]:
    from local.provision import emulator_client

    result = emulator_client(stack, "cognito-idp").initiate_auth(
        ClientId=stack["resources"]["UserPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]
    return {"Authorization": f"Bearer {result['AccessToken']}"}


def test_user_lifecycle_over_http(api: str, stack: dict[str, Any]) -> None:
    with requests.Session() as http:
        user = register(api, http, phone="+14155550123")
        http.headers.update(sign_in(stack, user["email"]))
        url = f"{api}/users/{user['user_id']}"
        # The onboarding handlers change a new user in the background (preferences, set-up).
        background = {"preferences", "updated_at", "onboarded_at"}
        fetched = http.get(url, timeout=10).json()
        assert {k: v for k, v in fetched.items() if k not in background} == {
            k: v for k, v in user.items() if k not in background
        }
        updated = http.put(url, json={"bio": "Hello", "phone": None}, timeout=10)
        assert updated.status_code == 200
        assert updated.json()["bio"] == "Hello" and "phone" not in updated.json()
        assert http.delete(url, timeout=10).status_code == 204
        gone = http.get(url, timeout=10)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def eventually(check: Any, timeout: float = 30.0, every: float = 0.25) -> Any:
    """The first truthy result of `check()`, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"not true within {timeout} s"
            return result
        time.sleep(every)


def welcome_mail_to(stack: dict[str, Any], email: str) -> list[dict[str, Any]]:
    """The emulator keeps what SES sent: /moto-api/data.json."""
    data = requests.get(f"{stack['emulator_url']}/moto-api/data.json", timeout=10).json()
    return [
        m
        for m in data["ses"]["Message"]
        if m["destinations"]["ToAddresses"] == [email] and m["subject"].startswith("Welcome")
    ]


def test_register_then_email_profile_set_up_and_search(
    api: str, stack: dict[str, Any], emulator: Any, admin_headers: dict[str, str]
) -> None:
    """End to end: stream -> user-created (SNS) -> welcome email (SES) and preferences;
    -> onboarding queue (SQS) -> profile set up; stream -> search index -> GET /users/search."""
    sqs = emulator("sqs")
    topic = stack["resources"]["UserCreatedTopicArn"]
    inbox = subscribe_inbox(sqs, emulator("sns"), topic, prefix="it-inbox")
    word = f"zq{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    user = register(api, name=f"Grace {word.capitalize()}", bio="Compilers and navy ships")
    own = sign_in(stack, user["email"])

    def set_up() -> dict[str, Any] | None:
        profile = requests.get(f"{api}/users/{user['user_id']}", headers=own, timeout=10).json()
        ready = profile.get("onboarded_at") and profile.get("preferences")
        return profile if ready else None

    def found(query: str) -> list[str]:
        answer = requests.get(
            f"{api}/users/search", params={"q": query}, headers=admin_headers, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return [u["user_id"] for u in answer.json()["items"]]

    profile = eventually(set_up)
    assert profile["preferences"] == {"newsletter": True, "notifications": True}
    [mail] = eventually(lambda: welcome_mail_to(stack, user["email"]))
    assert "Welcome" in json.dumps(mail)
    assert eventually(lambda: found(word)) == [user["user_id"]]
    assert found(word[:-1] + "x") == [user["user_id"]]  # one typo
    assert user["user_id"] in found(word[:6])  # a prefix
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed

    events = drain(sqs, inbox)
    # Earlier tests' users may be announced meanwhile: the stream publishes asynchronously.
    mine = [e for e in events if e["user"]["user_id"] == user["user_id"]]
    assert [e["event_type"] for e in mine if e["event_type"] == "user-created"] == ["user-created"]
    # A duplicate would come from a retried delivery: past the function's timeout, locally.
    time.sleep(function_settings(stack["stage"], "welcome_new_user")[0] + 2)
    assert len(welcome_mail_to(stack, user["email"])) == 1


def test_list_pages_over_http(api: str, admin_headers: dict[str, str]) -> None:
    for _ in range(5):
        register(api)
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = requests.get(f"{api}/users", params=params, headers=admin_headers, timeout=10).json()
        seen += [u["user_id"] for u in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 5


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Content-Type": "application/json"}, b"{broken", 400, "bad_request"),
        ({"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
        (
            {"Content-Type": "application/json"},
            b'{"bio": "' + b"x" * 70000 + b'"}',
            413,
            "payload_too_large",
        ),
        ({"Content-Type": "application/json"}, b'{"email": "x"}', 400, "validation_failed"),
    ],
)
def test_client_mistakes_are_json_4xx(
    api: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    response = requests.post(f"{api}/register", headers=headers, data=body, timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_cors_preflight_over_http(api: str) -> None:
    response = requests.options(
        f"{api}/users",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_keep_alive_clients_are_not_stalled(api: str, admin_headers: dict[str, str]) -> None:
    """A functional check of TCP_NODELAY: 50 keep-alive requests must not each wait for a
    delayed ACK (about 40 ms each with Nagle). Throughput itself is measured by `make bench`."""
    user = register(api)
    with requests.Session() as http:
        http.headers.update(admin_headers)
        http.get(f"{api}/users/{user['user_id']}", timeout=10)
        started = time.perf_counter()
        for _ in range(50):
            assert http.get(f"{api}/users/{user['user_id']}", timeout=10).status_code == 200
        assert time.perf_counter() - started < 50 * 0.040


def test_second_stack_on_the_same_state_dir_says_so(stack: dict[str, Any]) -> None:
    second = start_stack(stack["state_dir"], *free_ports(2))
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "already running" in output


def test_busy_port_is_reported_plainly(stack: dict[str, Any], tmp_path: Any) -> None:
    api_port = int(stack["api_url"].rsplit(":", 1)[1])
    second = start_stack(tmp_path, api_port, free_port())
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert f"Port {api_port}" in output and "in use" in output


def test_ctrl_c_stops_everything(tmp_path: Any) -> None:
    api_port, emulator_port = free_ports(2)
    process = spawn(
        tmp_path, api_port, emulator_port, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        state = wait_until_ready(process, tmp_path)
        assert state is not None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert not (tmp_path / "stack.json").exists()
        for port in (api_port, emulator_port):
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        emulator_pid = state["emulator_pid"]
        assert subprocess.run(["kill", "-0", str(emulator_pid)], capture_output=True).returncode
    finally:
        stop(process)


def test_the_emulator_dies_with_a_killed_stack(tmp_path: Any) -> None:
    """SIGKILL runs no clean-up: the emulator must still not outlive the stack."""
    process = spawn(tmp_path, *free_ports(2), stdout=subprocess.DEVNULL)
    try:
        state = wait_until_ready(process, tmp_path)
        assert state is not None
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{state['emulator_pid']}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{state['emulator_pid']}").exists()
    finally:
        stop(process)


# --- authentication with real tokens from the emulator's user pool -----------------------


def test_real_tokens_and_the_rules(api: str, stack: dict[str, Any], token_for: Any) -> None:
    owner = register(api)
    other = register(api)
    url = f"{api}/users/{owner['user_id']}"
    owner_headers = sign_in(stack, owner["email"])
    other_headers = sign_in(stack, other["email"])
    assert requests.get(url, headers=owner_headers, timeout=10).status_code == 200
    assert requests.get(url, headers=other_headers, timeout=10).status_code == 403
    assert requests.get(f"{api}/users", headers=owner_headers, timeout=10).status_code == 403
    assert requests.get(url, timeout=10).status_code == 401
    assert (
        requests.get(url, headers={"Authorization": "Bearer x.y.z"}, timeout=10).status_code == 401
    )
    forged = owner_headers["Authorization"][:-6] + "AAAAAA"
    assert requests.get(url, headers={"Authorization": forged}, timeout=10).status_code == 401


def test_make_token_creates_the_user_and_signs_in(api: str, stack: dict[str, Any]) -> None:
    import subprocess
    import sys

    from infra.paths import PROJECT_DIR

    email = new_email()
    command = [sys.executable, "-m", "local.token", email, "--admin"]
    command += ["--state-dir", str(stack["state_dir"])]
    token = subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    listed = requests.get(f"{api}/users?limit=100", headers=headers, timeout=10)
    assert listed.status_code == 200
    assert email in {u["email"] for u in listed.json()["items"]}
    again = subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert requests.get(f"{api}/users", headers={"Authorization": f"Bearer {again}"}, timeout=10)


def test_make_token_signs_in_with_the_users_own_password_and_never_changes_it(
    api: str, stack: dict[str, Any]
) -> None:
    import sys

    from infra.paths import PROJECT_DIR

    email, password = new_email(), "Own-Passw0rd!"
    register(api, email=email, name="Own", password=password)
    command = [sys.executable, "-m", "local.token", email, "--state-dir", str(stack["state_dir"])]

    def make_token(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60
        )

    refused = make_token()  # no PASSWORD: it is not a user `make token` registered
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"{email} is registered with its own password: make token EMAIL={email} PASSWORD=..."
    )
    wrong = make_token("--password", "Wrong-Passw0rd!")
    assert wrong.returncode == 1 and "wrong email or password" in wrong.stderr
    signed_in = make_token("--password", password)
    assert signed_in.returncode == 0
    headers = {"Authorization": f"Bearer {signed_in.stdout.strip()}"}
    me = requests.get(f"{api}/users?limit=1", headers=headers, timeout=10)
    assert me.status_code == 403  # a real token of an ordinary user
    assert make_token("--password", password).returncode == 0  # the password still works


def test_sigterm_to_the_process_group_stops_quietly(tmp_path: Any) -> None:
    """What a process manager or a terminal closing does: every process gets SIGTERM."""
    import os

    process = spawn(
        tmp_path, *free_ports(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        state = wait_until_ready(process, tmp_path)
        assert state is not None
        time.sleep(1.5)  # the pollers are running
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "Traceback" not in output, output[-3000:]
        assert "Stopping the local stack." in output
        assert not Path(f"/proc/{state['emulator_pid']}").exists()
    finally:
        stop(process)


def test_registration_proves_the_address_before_the_account_exists(
    api: str, stack: dict[str, Any]
) -> None:
    """Over HTTP: the code arrives in the emulator's SES; before it is confirmed, nothing can
    sign in and nobody learns whether the address was taken."""
    from local.mailbox import mails_to, wait_for_code
    from local.provision import emulator_client

    email = new_email()
    body = {"email": email, "name": "Proof"}
    asked = requests.post(f"{api}/register", json=body, timeout=10)
    assert asked.status_code == 202 and "user_id" not in asked.json()
    idp = emulator_client(stack, "cognito-idp")
    with pytest.raises(idp.exceptions.UserNotFoundException):
        sign_in(stack, email)  # no sign-in exists before the proof
    code = wait_for_code(stack["emulator_url"], email)
    confirmation = {"email": email, "code": code, "password": PASSWORD}
    confirmed = requests.post(f"{api}/register/confirm", json=confirmation, timeout=10)
    assert confirmed.status_code == 201
    assert sign_in(stack, email)["Authorization"].startswith("Bearer ")

    again = requests.post(f"{api}/register", json={**body, "name": "Mallory"}, timeout=10)
    assert (again.status_code, again.json()["message"]) == (202, asked.json()["message"])
    notice = eventually(lambda: [m for m in mails_to(stack["emulator_url"], email)
                                 if "already has one" in m["body"]])  # fmt: skip
    assert "Mallory" not in notice[0]["body"]
