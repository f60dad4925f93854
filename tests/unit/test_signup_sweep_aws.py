"""The sweep of abandoned sign-ups against moto: the directory's listing (ListUsers filtered
on status, paged, dated by UserCreateDate) and the whole job run through the app as the
schedule runs it, with its IAM policy checked on every call (the `client` fixture).

Cognito stamps identities with the machine's time, so these tests run the app's clock from
the machine's time too (not from a fixed date), and move an identity's creation back in
moto's store where a test needs an old one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.core import clock
from chalicelib.users.identity import CognitoIdentityDirectory
from tests.clock import RunningClock
from tests.unit.api_helpers import JSON, PASSWORD, register_user

USERS = "serverless-app-dev-users"


@pytest.fixture
def machine_clock() -> Iterator[RunningClock]:
    """The app's clock at the machine's time, the one moto stamps identities with."""
    running = RunningClock(clock.system_time())
    with clock.use(running):
        yield running


def age(pool_id: str, user_id: str, by: timedelta) -> None:
    """Move an identity's creation back in moto's store (Cognito's own stamp)."""
    from moto.cognitoidp.models import cognitoidp_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    pool = cognitoidp_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].user_pools[pool_id]
    (user,) = [u for u in pool.users.values() if u.id == user_id]
    user.create_date -= by


def test_the_listing_keeps_disabled_identities_made_before_the_moment(
    aws: dict[str, str], machine_clock: RunningClock
) -> None:
    pool = aws["UserPoolId"]
    directory = CognitoIdentityDirectory(lambda: pool)
    enabled = [directory.create(f"on{i}@example.com", "On", PASSWORD) for i in range(3)]
    old = directory.create("Old@Example.com", "Old", PASSWORD, enabled=False)
    young = directory.create("young@example.com", "Young", PASSWORD, enabled=False)
    age(pool, old, timedelta(hours=5))
    now = clock.system_time()

    # A page of 2 holds both disabled identities: Cognito (and moto) filter on status before
    # they page; the enabled ones, made first, would otherwise fill it.
    found, token = directory.disabled_before(now + timedelta(minutes=1), limit=2)
    assert {i.user_id for i in found} == {old, young} and token is None
    assert not {i.user_id for i in found} & set(enabled)

    found, token = directory.disabled_before(now - timedelta(hours=3), limit=60)
    assert [(i.user_id, i.email) for i in found] == [(old, "Old@Example.com")]
    assert found[0].created_at.tzinfo is not None
    assert timedelta(hours=4) < now - found[0].created_at < timedelta(hours=6)


def test_the_listing_pages_with_its_token(aws: dict[str, str], machine_clock: Any) -> None:
    pool = aws["UserPoolId"]
    directory = CognitoIdentityDirectory(lambda: pool)
    made = {directory.create(f"d{i}@example.com", "D", PASSWORD, enabled=False) for i in range(5)}
    seen, token, pages = [], None, 0
    while True:
        found, token = directory.disabled_before(
            clock.system_time() + timedelta(minutes=1), limit=2, token=token
        )
        seen += [i.user_id for i in found]
        pages += 1
        if token is None:
            break
    assert pages == 3 and sorted(seen) == sorted(made)


def test_deleting_an_identity_already_gone_is_fine(aws: dict[str, str]) -> None:
    pool = aws["UserPoolId"]
    directory = CognitoIdentityDirectory(lambda: pool)
    user_id = directory.create("gone@example.com", "Gone", PASSWORD, enabled=False)
    directory.delete(user_id)
    directory.delete(user_id)
    assert directory.find("gone@example.com") is None


def invoke_sweep(client: Any, at: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    import chalice.test
    from chalice.local import LambdaContext

    # Chalice's test client gives every function 3 s; Lambda gives the sweep its 300 s.
    monkeypatch.setattr(
        chalice.test,
        "LambdaContext",
        lambda name, memory_size: LambdaContext(name, memory_size, max_runtime_ms=300_000),
    )
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    event["time"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.lambda_.invoke("sweep_abandoned_signups", event)


def test_the_nightly_job_deletes_only_abandoned_sign_ups(
    client: Any,
    aws: dict[str, str],
    machine_clock: RunningClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = aws["UserPoolId"]
    idp, db = boto3.client("cognito-idp"), boto3.client("dynamodb")

    def sign_up(email: str, name: str) -> str:
        body = {"email": email, "name": name, "password": PASSWORD}
        asked = client.http.post("/register", headers=JSON, body=json.dumps(body))
        assert asked.status_code == 202
        return str(idp.admin_get_user(UserPoolId=pool, Username=email)["Username"])

    def sub_of(username: str) -> str:
        attributes = idp.admin_get_user(UserPoolId=pool, Username=username)["UserAttributes"]
        return next(a["Value"] for a in attributes if a["Name"] == "sub")

    def signup_item(email: str) -> Any:
        return db.get_item(TableName=USERS, Key={"pk": {"S": f"SIGNUP#{email}"}}).get("Item")

    # Mallory typed the victim's address (and a name of his) and never confirmed.
    victim = sub_of(sign_up("victim@example.com", "Mallory was here"))
    fresh = sub_of(sign_up("fresh@example.com", "Fresh"))  # still within its code's life
    ada = register_user(client, {"email": "ada@example.com", "name": "Ada", "password": PASSWORD})
    bob = register_user(client, {"email": "bob@example.com", "name": "Bob", "password": PASSWORD})
    idp.admin_disable_user(UserPoolId=pool, Username=bob["user_id"])  # an undo's leftover
    for user_id in (victim, bob["user_id"]):
        age(pool, user_id, timedelta(hours=5))

    # 90 minutes on: the victim's code is dead and its identity 6.5 h old; fresh is 1.5 h.
    at = clock.system_time() + timedelta(minutes=90)
    invoke_sweep(client, at, monkeypatch)
    invoke_sweep(client, at, monkeypatch)  # delivered again, to the same warm process

    with pytest.raises(idp.exceptions.UserNotFoundException):
        idp.admin_get_user(UserPoolId=pool, Username="victim@example.com")
    assert signup_item("victim@example.com") is None
    assert sub_of("fresh@example.com") == fresh and signup_item("fresh@example.com")
    assert sub_of("ada@example.com") == ada["user_id"]
    assert sub_of("bob@example.com") == bob["user_id"]  # disabled, with a profile: kept

    # The victim can register the address for herself.
    mine = register_user(
        client, {"email": "victim@example.com", "name": "Vic", "password": PASSWORD}
    )
    assert mine["name"] == "Vic"


def test_the_job_is_scheduled_nightly_and_fire_can_run_it() -> None:
    from app import app
    from local.events.schedule_expressions import parse
    from local.events.schedules import scheduled_jobs

    job = scheduled_jobs(app)["sweep_abandoned_signups"]  # `make fire` lists what this finds
    assert job.schedule_expression == "cron(15 3 * * ? *)"
    moment = parse(job.schedule_expression).next_after(datetime(2026, 11, 26, 12, tzinfo=UTC))
    assert moment == datetime(2026, 11, 27, 3, 15, tzinfo=UTC)
