"""The Users API through Chalice's test client, against moto provisioned like the real stack."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest

JSON = {"Content-Type": "application/json"}
ADA = {"email": "ada@example.com", "name": "Ada Lovelace"}


def post(client: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.http.post(path, headers={**JSON, **(headers or {})}, body=raw)


def put(client: Any, path: str, body: Any) -> Any:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.http.put(path, headers=JSON, body=raw)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    error = json.loads(response.body)["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Correlation-Id"]
    return error


@pytest.fixture
def inbox(aws: dict[str, str]) -> dict[str, str]:
    """SQS queues subscribed to both user topics, so tests read what was published."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    urls = {}
    for topic in ("UserCreatedTopicArn", "UserUpdatedTopicArn"):
        url = sqs.create_queue(QueueName=f"test-{topic}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        sns.subscribe(
            TopicArn=aws[topic],
            Protocol="sqs",
            Endpoint=arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        urls[topic] = url
    urls["onboarding"] = aws["OnboardingQueueUrl"]
    return urls


def drain(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def register(client: Any, **fields: Any) -> dict[str, Any]:
    response = post(client, "/register", {**ADA, **fields})
    assert response.status_code == 201, response.body
    return response.json_body


# --- register -----------------------------------------------------------------------------


def test_register_stores_publishes_and_queues(client: Any, inbox: dict[str, str]) -> None:
    response = post(client, "/register", {**ADA, "preferences": {"newsletter": True}})
    assert response.status_code == 201
    user = response.json_body
    assert response.headers["Location"] == f"/users/{user['user_id']}"
    assert set(user) == {"user_id", "email", "name", "preferences", "created_at", "updated_at"}
    assert client.http.get(f"/users/{user['user_id']}").json_body == user

    [created] = drain(inbox["UserCreatedTopicArn"])
    assert created["event_type"] == "user-created" and created["user"] == user
    [task] = drain(inbox["onboarding"])
    assert task["task"] == "setup_user_profile" and task["user_id"] == user["user_id"]
    assert created["event_id"] != task["event_id"]


def test_register_same_email_any_case_is_conflict(client: Any) -> None:
    register(client)
    assert_error(post(client, "/register", {**ADA, "email": "ADA@EXAMPLE.com"}), 409, "conflict")


def test_register_is_undone_when_the_topic_is_gone(client: Any, aws: dict[str, str]) -> None:
    boto3.client("sns").delete_topic(TopicArn=aws["UserCreatedTopicArn"])
    assert_error(post(client, "/register", ADA), 503, "service_unavailable")
    assert client.http.get("/users").json_body["items"] == []
    boto3.client("sns").create_topic(Name=aws["UserCreatedTopicArn"].rsplit(":", 1)[1])
    assert post(client, "/register", ADA).status_code == 201  # the retry succeeds


def test_validation_errors_list_each_field(client: Any) -> None:
    error = assert_error(
        post(client, "/register", {"email": "bad", "name": "", "role": "admin"}),
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
def test_malformed_bodies_are_400(client: Any, body: str | bytes, code: str) -> None:
    assert_error(post(client, "/register", body), 400, code)


def test_body_over_64_kib_is_413(client: Any) -> None:
    body = json.dumps({**ADA, "bio": "x" * (64 * 1024)})
    assert_error(post(client, "/register", body), 413, "payload_too_large")


def test_non_json_content_type_is_415(client: Any) -> None:
    response = client.http.post(
        "/register", headers={"Content-Type": "text/plain"}, body=json.dumps(ADA)
    )
    assert_error(response, 415, "unsupported_media_type")


# --- read, list ---------------------------------------------------------------------------


def test_get_unknown_user_is_404(client: Any) -> None:
    assert_error(client.http.get("/users/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_error(client.http.get("/users/not-a-uuid"), 404, "not_found")


def test_list_pages_through_every_user(client: Any) -> None:
    ids = {register(client, email=f"u{i}@example.com")["user_id"] for i in range(7)}
    seen, cursor, pages = [], None, 0
    while True:
        path = "/users?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.http.get(path).json_body
        seen += [u["user_id"] for u in body["items"]]
        cursor, pages = body["next_cursor"], pages + 1
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and set(seen) == ids


def test_list_defaults_to_20(client: Any) -> None:
    for i in range(21):
        register(client, email=f"u{i}@example.com")
    body = client.http.get("/users").json_body
    assert len(body["items"]) == 20 and body["next_cursor"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=garbage", "cursor="])
def test_bad_list_parameters_are_400(client: Any, query: str) -> None:
    assert_error(client.http.get(f"/users?{query}"), 400, "bad_request")


# --- update, delete -----------------------------------------------------------------------


def test_update_changes_fields_and_publishes(client: Any, inbox: dict[str, str]) -> None:
    user = register(client)
    response = put(client, f"/users/{user['user_id']}", {"bio": "Analyst", "email": "a@l.org"})
    assert response.status_code == 200
    assert response.json_body["bio"] == "Analyst" and response.json_body["email"] == "a@l.org"
    [event] = drain(inbox["UserUpdatedTopicArn"])
    assert event["event_type"] == "user-updated"
    assert event["changed_fields"] == ["bio", "email"]
    register(client)  # the old address is free again


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "validation_failed"),
        ({"user_id": "x"}, 400, "validation_failed"),
        ({"created_at": "2020-01-01"}, 400, "validation_failed"),
        ({"phone": "555"}, 400, "validation_failed"),
        ("nope", 400, "bad_request"),
    ],
)
def test_bad_updates_are_rejected(client: Any, body: Any, status: int, code: str) -> None:
    user = register(client)
    assert_error(put(client, f"/users/{user['user_id']}", body), status, code)


def test_update_unknown_user_is_404(client: Any) -> None:
    response = put(client, "/users/00000000-0000-4000-8000-000000000000", {"name": "X"})
    assert_error(response, 404, "not_found")


def test_update_to_taken_email_is_409(client: Any) -> None:
    register(client)
    bob = register(client, email="bob@example.com")
    assert_error(
        put(client, f"/users/{bob['user_id']}", {"email": "Ada@example.com"}), 409, "conflict"
    )


def test_delete_then_get_is_404(client: Any) -> None:
    user = register(client)
    response = client.http.delete(f"/users/{user['user_id']}")
    assert response.status_code == 204 and response.body == b""
    assert_error(client.http.get(f"/users/{user['user_id']}"), 404, "not_found")
    assert_error(client.http.delete(f"/users/{user['user_id']}"), 404, "not_found")


# --- cross-cutting: errors, CORS, correlation, logs, metrics ------------------------------


def test_unsupported_method_is_json_405(client: Any) -> None:
    response = client.http.request("PATCH", "/users/x", headers=JSON, body=b"{}")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_cors_for_allowed_origin_only(client: Any) -> None:
    allowed = client.http.get("/users", headers={"Origin": "http://localhost:3000"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert allowed.headers["Vary"] == "Origin"
    other = client.http.get("/users", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_preflight(client: Any) -> None:
    ok = client.http.request(
        "OPTIONS",
        "/users/00000000-0000-4000-8000-000000000000",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "PUT"},
    )
    assert ok.status_code == 204
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert ok.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    refused = client.http.request(
        "OPTIONS", "/register", headers={"Origin": "https://evil.example"}
    )
    assert_error(refused, 403, "forbidden")


def test_correlation_id_is_echoed_and_logged(
    client: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.observability import logger

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    capsys.readouterr()
    response = client.http.get("/users", headers={"X-Correlation-Id": "abc-123"})
    assert response.headers["X-Correlation-Id"] == "abc-123"

    [request_log] = [json.loads(line) for line in log.getvalue().splitlines()]
    assert request_log["message"] == "request"
    assert request_log["correlation_id"] == "abc-123"
    assert (request_log["status"], request_log["route"]) == (200, "/users")
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf[-1]["route"] == "GET /users"
    assert emf[-1]["Requests"] in (1.0, [1.0])
    namespaces = {m["Namespace"] for m in emf[-1]["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {"ServerlessApp"}


def test_malformed_correlation_id_is_replaced(client: Any) -> None:
    response = client.http.get("/users", headers={"X-Correlation-Id": "bad id\twith spaces"})
    assert response.headers["X-Correlation-Id"] != "bad id\twith spaces"


def test_json_with_charset_is_accepted(client: Any) -> None:
    response = client.http.post(
        "/register",
        headers={"Content-Type": "application/json; charset=utf-8"},
        body=json.dumps(ADA),
    )
    assert response.status_code == 201


def test_server_fault_is_a_json_500_logged_with_the_correlation_id(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.observability import logger
    from chalicelib.users import users_service

    def broken(user_id: str) -> None:
        raise RuntimeError("disk on fire")

    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    monkeypatch.setattr(users_service(), "get", broken)
    response = client.http.get(
        "/users/00000000-0000-4000-8000-000000000000", headers={"X-Correlation-Id": "fault-1"}
    )
    error = assert_error(response, 500, "internal_error")
    assert "disk on fire" not in error["message"]
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert all(line["correlation_id"] == "fault-1" for line in lines)
    assert any("disk on fire" in line.get("exception", "") for line in lines)


def test_health_answers_without_aws(client: Any) -> None:
    response = client.http.get("/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok", "stage": "dev"}
