"""The Users API through Chalice's test client, against moto provisioned like the real stack.

`api` is an admin's client (admins may do everything), so these tests are about behaviour;
who may do what is in test_api_auth.py.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest

from tests.unit.api_helpers import PASSWORD, mailed_code

ADA = {"email": "ada@example.com", "name": "Ada Lovelace"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    error = json.loads(response.body)["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Correlation-Id"]
    return error


def register(api: Any, **fields: Any) -> dict[str, Any]:
    """Both steps: POST /register, then the mailed code to POST /register/confirm."""
    assert api.post("/register", {**ADA, **fields}).status_code == 202
    email = fields.get("email", ADA["email"])
    confirmation = {"email": email, "code": mailed_code(email), "password": PASSWORD}
    response = api.post("/register/confirm", confirmation)
    assert response.status_code == 201, response.body
    return response.json_body


def sent_to(address: str) -> list[Any]:
    """What SES (moto) was asked to mail to `address`, oldest first."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    messages = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return [m for m in messages if any(address in to for to in m.destinations.values())]


def cognito_user(aws: dict[str, str], username: str) -> dict[str, Any]:
    idp = boto3.client("cognito-idp")
    user = idp.admin_get_user(UserPoolId=aws["UserPoolId"], Username=username)
    return {a["Name"]: a["Value"] for a in user["UserAttributes"]}


# --- register -----------------------------------------------------------------------------


def test_register_stores_the_profile_and_the_sign_in_once_confirmed(
    api: Any, accounts: Any, aws: dict[str, str]
) -> None:
    anonymous = api.as_(None)
    asked = anonymous.post("/register", {**ADA, "preferences": {"newsletter": False}})
    assert asked.status_code == 202 and "user_id" not in asked.json_body
    idp = boto3.client("cognito-idp")
    with pytest.raises(idp.exceptions.UserNotFoundException):
        cognito_user(aws, ADA["email"])  # no sign-in before the address is proven
    assert api.get("/users").json_body["items"][-1]["email"] != ADA["email"]

    code = mailed_code(ADA["email"])
    confirmation = {"email": ADA["email"], "code": code, "password": PASSWORD}
    response = anonymous.post("/register/confirm", confirmation)
    assert response.status_code == 201
    user = response.json_body
    assert response.headers["Location"] == f"/users/{user['user_id']}"
    assert set(user) == {"user_id", "email", "name", "preferences", "created_at", "updated_at"}
    assert api.get(f"/users/{user['user_id']}").json_body == user

    identity = cognito_user(aws, user["user_id"])
    assert identity["sub"] == user["user_id"]
    assert (identity["email"], identity["email_verified"]) == (ADA["email"], "true")
    assert accounts.sign_in(ADA["email"])
    again = anonymous.post("/register/confirm", confirmation)
    assert_error(again, 400, "validation_failed")  # a code works once


def test_registered_user_can_sign_in_at_once(accounts: Any) -> None:
    user, token = accounts.register()
    assert accounts.sign_in(user["email"], kind="IdToken")
    assert token


def test_register_answers_a_taken_address_like_a_free_one(api: Any) -> None:
    """Attack: a 409 told anyone which addresses have accounts."""
    register(api)
    free = api.as_(None).post("/register", {**ADA, "email": "free@example.com"})
    taken = api.as_(None).post("/register", {**ADA, "email": "ADA@EXAMPLE.com"})
    assert (taken.status_code, free.status_code) == (202, 202)
    assert taken.json_body["message"] == free.json_body["message"]
    assert taken.json_body["status"] == free.json_body["status"]
    notice = sent_to("ADA@EXAMPLE.com")[-1]
    assert "already has one" in notice.body and "code" not in notice.subject.lower()


def test_register_mails_no_text_the_registrant_wrote(api: Any) -> None:
    """Attack: registering a victim's address with a name that is a phishing message."""
    lure = "Your account is locked: visit https://evil.example/login"
    api.as_(None).post("/register", {**ADA, "email": "victim@example.com", "name": lure})
    (mail,) = sent_to("victim@example.com")
    assert "evil.example" not in mail.body and "evil.example" not in mail.subject


def test_register_does_not_wait_for_the_event_topics(api: Any, aws: dict[str, str]) -> None:
    """Events go out from the table's stream (test_user_events.py), so a topic that is down
    cannot fail or undo a registration."""
    boto3.client("sns").delete_topic(TopicArn=aws["UserCreatedTopicArn"])
    assert register(api)["email"] == ADA["email"]


def test_confirmation_rejects_bad_input_and_wrong_codes(api: Any) -> None:
    anonymous = api.as_(None)
    assert_error(anonymous.post("/register/confirm", {"email": "x"}), 400, "validation_failed")
    anonymous.post("/register", ADA)
    wrong = f"{(int(mailed_code(ADA['email'])) + 1) % 10**6:06d}"
    error = assert_error(
        anonymous.post(
            "/register/confirm", {"email": ADA["email"], "code": wrong, "password": PASSWORD}
        ),
        400,
        "validation_failed",
    )
    assert "wrong or has expired" in error["message"]


def test_confirm_refuses_a_weak_password_with_every_reason(api: Any) -> None:
    api.post("/register", ADA)
    confirmation = {"email": ADA["email"], "code": mailed_code(ADA["email"]), "password": "short"}
    error = assert_error(api.post("/register/confirm", confirmation), 400, "validation_failed")
    [problem] = error["details"]
    assert problem["field"] == "password"
    for missing in ("8 to 256 characters", "upper-case", "digit", "symbol"):
        assert missing in problem["issue"]
    assert "short" not in json.dumps(error)


def test_validation_errors_list_each_field(api: Any) -> None:
    error = assert_error(
        api.post("/register", {"email": "bad", "name": "", "role": "admin"}),
        400,
        "validation_failed",
    )
    assert {d["field"] for d in error["details"]} == {"email", "name", "role"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "bad_request"),
        ("", "bad_request"),
        ("[1, 2]", "bad_request"),
        ('"text"', "bad_request"),
        ("null", "bad_request"),
        (b"\xff\xfe\x00", "bad_request"),
        ('{"email": "a@example.com", "name": {"first": "A"}}', "validation_failed"),
        ('{"email": null, "name": null}', "validation_failed"),
        (
            '{"email": "a@example.com", "name": "A", "preferences": {"x": null}}',
            "validation_failed",
        ),
    ],
)
def test_malformed_bodies_are_400(api: Any, body: str | bytes, code: str) -> None:
    assert_error(api.post("/register", body), 400, code)


def test_body_over_64_kib_is_413(api: Any) -> None:
    body = json.dumps({**ADA, "bio": "x" * (64 * 1024)})
    assert_error(api.post("/register", body), 413, "payload_too_large")


def test_non_json_content_type_is_415(api: Any) -> None:
    response = api.post("/register", json.dumps(ADA), headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_json_with_charset_is_accepted(api: Any) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert api.post("/register", json.dumps(ADA), headers=headers).status_code == 202


# --- read, list ---------------------------------------------------------------------------


def test_get_unknown_user_is_404(api: Any) -> None:
    assert_error(api.get("/users/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_error(api.get("/users/not-a-uuid"), 404, "not_found")


def test_list_pages_through_every_user(api: Any, admin: tuple[dict[str, Any], str]) -> None:
    ids = {register(api, email=f"u{i}@example.com")["user_id"] for i in range(7)}
    ids.add(admin[0]["user_id"])
    seen, cursor, pages = [], None, 0
    while True:
        path = "/users?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = api.get(path).json_body
        seen += [u["user_id"] for u in body["items"]]
        cursor, pages = body["next_cursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 8 and set(seen) == ids


def test_list_defaults_to_20(api: Any) -> None:
    for i in range(20):
        register(api, email=f"u{i}@example.com")
    body = api.get("/users").json_body
    assert len(body["items"]) == 20 and body["next_cursor"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=garbage", "cursor="])
def test_bad_list_parameters_are_400(api: Any, query: str) -> None:
    assert_error(api.get(f"/users?{query}"), 400, "bad_request")


# --- update, delete -----------------------------------------------------------------------


def test_update_changes_fields_and_moves_the_sign_in_once_the_new_address_confirms(
    api: Any, accounts: Any, aws: dict[str, str]
) -> None:
    user, token = accounts.register(email="ada@example.com")
    own = api.as_(token)
    response = own.put(f"/users/{user['user_id']}", {"bio": "Analyst", "email": "a@l.org"})
    assert response.status_code == 200
    assert response.json_body["bio"] == "Analyst" and response.json_body["email"] == ADA["email"]
    assert response.json_body["pending_email"] == "a@l.org"
    assert cognito_user(aws, user["user_id"])["email"] == ADA["email"]
    confirm = own.post(f"/users/{user['user_id']}/email/confirm", {"code": mailed_code("a@l.org")})
    assert confirm.status_code == 200 and confirm.json_body["email"] == "a@l.org"
    identity = cognito_user(aws, user["user_id"])
    assert (identity["email"], identity["email_verified"]) == ("a@l.org", "true")
    assert accounts.sign_in("a@l.org")
    register(api)  # the old address is free again


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "validation_failed"),
        ({"user_id": "x"}, 400, "validation_failed"),
        ({"created_at": "2020-01-01"}, 400, "validation_failed"),
        ({"password": "N3w-password!"}, 400, "validation_failed"),
        ({"phone": "555"}, 400, "validation_failed"),
        ("nope", 400, "bad_request"),
    ],
)
def test_bad_updates_are_rejected(api: Any, body: Any, status: int, code: str) -> None:
    user = register(api)
    assert_error(api.put(f"/users/{user['user_id']}", body), status, code)


def test_update_unknown_user_is_404(api: Any) -> None:
    response = api.put("/users/00000000-0000-4000-8000-000000000000", {"name": "X"})
    assert_error(response, 404, "not_found")


def test_update_to_taken_email_is_409_once_confirmed(api: Any) -> None:
    register(api)
    bob = register(api, email="bob@example.com")
    assert api.put(f"/users/{bob['user_id']}", {"email": "Ada@example.com"}).status_code == 200
    code = {"code": mailed_code("Ada@example.com")}
    assert_error(api.post(f"/users/{bob['user_id']}/email/confirm", code), 409, "conflict")


def test_delete_removes_profile_and_sign_in(api: Any, accounts: Any, aws: dict[str, str]) -> None:
    user, _ = accounts.register(email="gone@example.com")
    response = api.delete(f"/users/{user['user_id']}")
    assert response.status_code == 204 and response.body == b""
    assert_error(api.get(f"/users/{user['user_id']}"), 404, "not_found")
    assert_error(api.delete(f"/users/{user['user_id']}"), 404, "not_found")
    with pytest.raises(boto3.client("cognito-idp").exceptions.UserNotFoundException):
        cognito_user(aws, user["user_id"])
    accounts.register(email="gone@example.com")  # the address can be used again


# --- cross-cutting: errors, CORS, correlation, logs, metrics ------------------------------


def test_unsupported_method_is_json_405(api: Any) -> None:
    response = api.request("PATCH", "/users/x", b"{}")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_cors_for_allowed_origin_only(api: Any) -> None:
    allowed = api.get("/users", headers={"Origin": "http://localhost:3000"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert allowed.headers["Vary"] == "Origin"
    other = api.get("/users", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_preflight(api: Any) -> None:
    anonymous = api.as_(None)
    ok = anonymous.request(
        "OPTIONS",
        "/users/00000000-0000-4000-8000-000000000000",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "PUT"},
    )
    assert ok.status_code == 204
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    refused = anonymous.request("OPTIONS", "/register", headers={"Origin": "https://evil.example"})
    assert_error(refused, 403, "forbidden")


def test_correlation_id_is_echoed_and_logged(
    api: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.observability import logger

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    capsys.readouterr()
    response = api.get("/users", headers={"X-Correlation-Id": "abc-123"})
    assert response.headers["X-Correlation-Id"] == "abc-123"

    request_logs = [json.loads(line) for line in log.getvalue().splitlines()]
    [request_log] = [line for line in request_logs if line["message"] == "request"]
    assert request_log["correlation_id"] == "abc-123"
    assert (request_log["status"], request_log["route"]) == (200, "/users")
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf[-1]["route"] == "GET /users"
    assert emf[-1]["Requests"] in (1.0, [1.0])
    namespaces = {m["Namespace"] for m in emf[-1]["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"ServerlessApp"}


def test_malformed_correlation_id_is_replaced(api: Any) -> None:
    response = api.get("/users", headers={"X-Correlation-Id": "bad id\twith spaces"})
    assert response.headers["X-Correlation-Id"] != "bad id\twith spaces"


def test_server_fault_is_a_json_500_logged_with_the_correlation_id(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.observability import logger
    from chalicelib.users import users_service

    def broken(*args: Any) -> None:
        raise RuntimeError("disk on fire")

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    monkeypatch.setattr(users_service(), "get", broken)
    response = api.get(
        "/users/00000000-0000-4000-8000-000000000000", headers={"X-Correlation-Id": "fault-1"}
    )
    error = assert_error(response, 500, "internal_error")
    assert "disk on fire" not in error["message"]
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert all(line["correlation_id"] == "fault-1" for line in lines)
    assert any("disk on fire" in line.get("exception", "") for line in lines)


@pytest.mark.parametrize(
    "failure",
    [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "ReadTimeout",
        "ConnectTimeout",
    ],
)
def test_aws_busy_or_slow_is_a_503_to_retry_never_a_500(
    api: Any, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The API makes one attempt per AWS call (so it answers within its time); a throttled
    or timed-out call is the client's to retry: 503 with Retry-After."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    from chalicelib.users import users_service

    def busy(*args: Any) -> None:
        if failure == "ReadTimeout":
            raise ReadTimeoutError(endpoint_url="http://dynamodb")
        if failure == "ConnectTimeout":
            raise ConnectTimeoutError(endpoint_url="http://dynamodb")
        raise ClientError({"Error": {"Code": failure, "Message": "slow down"}}, "GetItem")

    monkeypatch.setattr(users_service(), "get", busy)
    response = api.get("/users/00000000-0000-4000-8000-000000000000")
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"


def test_health_answers_without_aws(client: Any) -> None:
    response = client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok", "stage": "dev"}


def test_gateway_errors_have_the_api_error_shape(api: Any) -> None:
    """As the packaged API answers them (infra/api-responses.json)."""
    missing = api.get("/no/such/route")
    assert missing.status_code == 404
    assert json.loads(missing.body)["error"]["code"] == "not_found"
    anonymous = api.as_(None).get("/users")
    assert anonymous.status_code == 401
    assert json.loads(anonymous.body)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ADA, "phone": "+14155550123\n"}, "phone"),
        ({**ADA, "name": "Ada \ud800"}, "name"),
        ({**ADA, "bio": "lone \udfff surrogate"}, "bio"),
    ],
)
def test_sneaky_values_are_400(api: Any, body: dict[str, Any], field: str) -> None:
    error = assert_error(api.post("/register", body), 400, "validation_failed")
    assert [d["field"] for d in error["details"]] == [field]


def test_deeply_nested_json_is_400(api: Any) -> None:
    assert_error(api.post("/register", "[" * 50000), 400, "bad_request")


@pytest.mark.parametrize("limit", ["%C2%B2", "%D9%A3", "5%0A"])
def test_non_ascii_or_odd_limits_are_400(api: Any, limit: str) -> None:
    assert_error(api.get(f"/users?limit={limit}"), 400, "bad_request")


def test_correlation_id_with_a_newline_is_replaced_not_a_500(api: Any) -> None:
    response = api.get("/users", headers={"X-Correlation-Id": "abc\n"})
    assert response.status_code == 200
    assert response.headers["X-Correlation-Id"] != "abc\n"


# --- search (the index is kept by the users table's stream) -------------------------------


def index_everyone(client: Any) -> None:
    """What the stream handler would be given for every stored user."""
    from chalicelib.users import users_service
    from tests.unit.streams import stream_record, user_item

    users, after = [], None
    while True:
        page, after = users_service()._users.list_page(100, after)
        users += page
        if after is None:
            break
    records = [stream_record("INSERT", new=user_item(u)) for u in users]
    assert client.lambda_.invoke("index_users_for_search", {"Records": records}).payload is None


def test_search_finds_by_word_prefix_and_typo_newest_first(api: Any, client: Any) -> None:
    ada = register(api, name="Ada Lovelace", bio="Analytical engine")
    grace = register(
        api, email="grace@example.com", name="Grace Hopper", bio="Analytical compilers"
    )
    index_everyone(client)

    def ids(query: str, **params: str) -> list[str]:
        response = api.get("/users/search?" + urlencode({"q": query, **params}))
        assert response.status_code == 200, response.body
        return [u["user_id"] for u in response.json_body["items"]]

    assert ids("lovelace") == [ada["user_id"]]
    assert ids("analytical") == [grace["user_id"], ada["user_id"]]  # newest first
    assert ids("analyt") == [grace["user_id"], ada["user_id"]]
    assert ids("lovelase") == [ada["user_id"]]
    assert ids("hopper analytical") == [grace["user_id"]]
    first = api.get("/users/search?q=analytical&limit=1").json_body
    second = api.get(f"/users/search?q=analytical&limit=1&cursor={first['next_cursor']}").json_body
    assert [u["user_id"] for u in first["items"] + second["items"]] == ids("analytical")
    assert second["next_cursor"] is None
    assert "password" not in json.dumps(first)


@pytest.mark.parametrize(
    "query", ["", "q=", "q=%20%20", "q=a", "q=ada&limit=0", "q=ada&limit=x", "q=ada&cursor=junk"]
)
def test_bad_searches_are_400(api: Any, query: str) -> None:
    assert_error(api.get(f"/users/search?{query}"), 400, "bad_request")


def test_a_registration_flood_is_429_in_the_error_shape(api: Any) -> None:
    """Attack: a script registering address after address from one client. The stage's
    limit is used up first but for two (the admin's registration counted one already)."""
    from chalicelib.core.quotas import DynamoQuotas
    from chalicelib.users.registration import RegistrationLimits
    from infra.paths import PROJECT_DIR

    template = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    limit = int(template["Mappings"]["StageSettings"]["dev"]["RegistrationsPerClientHour"])
    quota = RegistrationLimits(per_client_hour=limit).registrations
    DynamoQuotas("serverless-app-dev-quotas").take("client:127.0.0.1", [(quota, limit - 3)])
    anonymous = api.as_(None)
    for n in range(2):
        assert anonymous.post("/register", {**ADA, "email": f"v{n}@example.com"}).status_code == 202
    refused = anonymous.post("/register", {**ADA, "email": "v3@example.com"})
    error = assert_error(refused, 429, "too_many_requests")
    assert "registrations" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert sent_to("v3@example.com") == []
