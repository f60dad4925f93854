"""`core.correlation`: reading the id from every kind of input, binding it per invocation (and
per record, per thread), and the HTTP boundary's access and error lines at prod's log level."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from chalice import Chalice
from chalice.local import LambdaContext

from chalicelib.core import correlation
from chalicelib.core.observability import logger
from tests.unit.conftest import Lines


@pytest.fixture
def prod_level() -> Iterator[None]:
    """Prod's POWERTOOLS_LOG_LEVEL (WARNING). Set on the logger itself: chalice.test.Client
    sets the stage's environment per call, and the level is read once, at import."""
    before = logger.log_level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(before)


def context(name: str = "fixture_fn") -> LambdaContext:
    return LambdaContext(function_name=name, memory_size=128)


# --- reading it back ----------------------------------------------------------------------


def sqs_record(attributes: dict[str, Any] | None = None, body: str = "{}") -> dict[str, Any]:
    return {"eventSource": "aws:sqs", "messageId": "m-1", "body": body,
            "messageAttributes": attributes or {}}  # fmt: skip


def sns_envelope(value: str | None, message: str = "{}") -> str:
    attributes = {"correlation_id": {"Type": "String", "Value": value}} if value else {}
    return json.dumps({"Type": "Notification", "Message": message, "MessageAttributes": attributes})


def test_an_sqs_record_gives_its_attribute_or_its_sns_envelopes() -> None:
    own = {"correlation_id": {"stringValue": "req-1", "dataType": "String"}}
    assert correlation.of_sqs_record(sqs_record(own)) == "req-1"
    assert correlation.of_sqs_record(sqs_record(body=sns_envelope("req-2"))) == "req-2"
    assert correlation.of_sqs_record(sqs_record(body=sns_envelope(None))) is None
    assert correlation.of_sqs_record(sqs_record(body='{"MessageAttributes": ')) is None
    assert correlation.of_sqs_record(sqs_record(body='{"Records": []}')) is None  # S3's
    bad = {"correlation_id": {"stringValue": "two words", "dataType": "String"}}
    assert correlation.of_sqs_record(sqs_record(bad)) is None


def test_an_sns_record_gives_its_attribute_else_its_messages_field() -> None:
    record = {"EventSource": "aws:sns", "Sns": json.loads(sns_envelope("req-3"))}
    assert correlation.of_sns_record(record) == "req-3"
    published_by_a_state_machine = {
        "Sns": {"Message": json.dumps({"order_id": "o", "correlation_id": "req-4"})}
    }
    assert correlation.of_sns_record(published_by_a_state_machine) == "req-4"
    assert correlation.of_sns_record({"Sns": {"Message": "not json correlation_id"}}) is None


def test_stream_images_payloads_and_object_metadata() -> None:
    new = {"dynamodb": {"NewImage": {"correlation_id": {"S": "req-5"}}}}
    removed = {"dynamodb": {"OldImage": {"correlation_id": {"S": "req-6"}}}}
    assert correlation.of_stream_record(new) == "req-5"
    assert correlation.of_stream_record(removed) == "req-6"
    assert correlation.of_stream_record({"dynamodb": {"NewImage": {}}}) is None
    assert correlation.of_payload({"correlation_id": "req-7"}) == "req-7"
    assert correlation.of_payload({"correlation_id": 7}) is None
    assert correlation.of_object_metadata({"correlation-id": "req-8"}) == "req-8"
    assert correlation.of_object_metadata({"Correlation-Id": "req-8"}) == "req-8"
    assert correlation.of_object_metadata(None) is None


def test_message_attributes_and_upload_fields_carry_the_current_id() -> None:
    assert correlation.message_attributes() == {}
    assert correlation.upload_fields() == {}
    with correlation.bound("req-9"):
        assert correlation.message_attributes() == {
            "correlation_id": {"DataType": "String", "StringValue": "req-9"}
        }
        assert correlation.message_attributes("other")["correlation_id"]["StringValue"] == "other"
        assert correlation.upload_fields() == {"x-amz-meta-correlation-id": "req-9"}
    assert correlation.current() is None


# --- binding ------------------------------------------------------------------------------


def test_an_invocation_takes_its_events_single_id_else_makes_one(log_lines: Lines) -> None:
    lambda_context = context("welcome_new_user")
    try:
        assert correlation.start_invocation(lambda_context, ["a", None, "a"]) == "a"
        logger.info("one id")
        made = correlation.start_invocation(lambda_context, [None])
        assert made == lambda_context.aws_request_id
        logger.info("no id")
        several = correlation.start_invocation(lambda_context, ["b", "a", "b"])
        logger.info("two ids")
        with correlation.bound("b"):
            logger.info("record b")
        logger.info("batch again")
    finally:
        correlation.end_invocation()
    logger.info("after")
    one, none, two, record, batch, after = log_lines()
    assert one["correlation_id"] == "a" and one["function_name"] == "welcome_new_user"
    assert one["function_request_id"] == lambda_context.aws_request_id
    assert none["correlation_id"] == made
    assert two["correlation_id"] == several == made and two["correlation_ids"] == ["a", "b"]
    assert record["correlation_id"] == "b" and record["correlation_ids"] == ["a", "b"]
    assert batch["correlation_id"] == several
    assert "correlation_id" not in after and "function_name" not in after


def test_threads_keep_their_own_ids(log_lines: Lines) -> None:
    """`chalice local` and the local event runtime run handlers on threads at once."""
    both_bound = threading.Barrier(2)

    def work(name: str) -> None:
        correlation.start_invocation(context(name), [f"id-of-{name}"])
        both_bound.wait(5)
        logger.info("working")
        correlation.end_invocation()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    lines = log_lines()
    assert len(lines) == 2
    assert all(line["correlation_id"] == f"id-of-{line['function_name']}" for line in lines)


# --- every event handler: the middleware --------------------------------------------------


def fixture_app() -> Chalice:
    app = Chalice(app_name="correlation-fixture")
    correlation.install(app)

    def seen(_event: Any = None, _context: Any = None) -> str | None:
        logger.info("handled")
        return correlation.current()

    app.on_sqs_message(queue="q", name="on_sqs")(seen)
    app.on_sns_message(topic="t", name="on_sns")(seen)
    app.on_dynamodb_record(stream_arn="arn:s", name="on_stream")(seen)
    app.schedule("rate(1 hour)", name="on_schedule")(seen)
    app.lambda_function(name="task")(seen)

    @app.on_sqs_message(queue="q2", name="failing")
    def failing(_event: Any) -> None:
        raise RuntimeError("boom")

    return app


SCHEDULED = {"version": "0", "id": "evt-1", "detail-type": "Scheduled Event", "source":
             "aws.events", "account": "1", "time": "2026-12-07T02:00:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}  # fmt: skip


@pytest.mark.parametrize(
    ("handler", "event", "expected"),
    [
        ("on_sqs", {"Records": [sqs_record(body=sns_envelope("via-sns"))]}, "via-sns"),
        ("on_sns", {"Records": [{"EventSource": "aws:sns",
                                 "Sns": {**json.loads(sns_envelope("sns-1")),
                                         "Subject": None, "Timestamp": "x"}}]}, "sns-1"),
        ("on_stream", {"Records": [{"eventSource": "aws:dynamodb", "dynamodb":
                                    {"NewImage": {"correlation_id": {"S": "write-1"}}}}]},
         "write-1"),
        ("on_schedule", SCHEDULED, "evt-1"),
        ("task", {"order_id": "o", "correlation_id": "order-1"}, "order-1"),
    ],
)  # fmt: skip
def test_every_kind_of_handler_logs_its_events_id(
    log_lines: Lines, handler: str, event: dict[str, Any], expected: str
) -> None:
    app = fixture_app()
    assert app.handler_map[handler](event, context(handler)) == expected
    handled, invocation = log_lines()
    assert handled["message"] == "handled"
    assert (invocation["message"], invocation["outcome"]) == ("invocation", "ok")
    for line in (handled, invocation):
        assert (line["correlation_id"], line["function_name"]) == (expected, handler)
    assert correlation.current() is None, "nothing leaks into the next invocation"


def test_a_handler_without_an_id_makes_one_and_a_failure_is_logged_with_it(
    log_lines: Lines, prod_level: None
) -> None:
    app = fixture_app()
    lambda_context = context("failing")
    with pytest.raises(RuntimeError):
        app.handler_map["failing"]({"Records": [sqs_record()]}, lambda_context)
    line, invocation = log_lines()  # both at prod's level
    assert line["level"] == "ERROR" and line["message"] == "invocation failed"
    assert line["correlation_id"] == lambda_context.aws_request_id
    assert "boom" in line["exception"] and line["function_name"] == "failing"
    assert invocation["message"] == "invocation" and invocation["outcome"] == "error"
    assert invocation["correlation_id"] == lambda_context.aws_request_id


def test_the_app_binds_every_event_type() -> None:
    from app import app

    boundary = correlation._event_boundary
    wrapped = {kind for func, kind in app.middleware_handlers if func is boundary}
    kinds = {"sqs", "sns", "kinesis", "dynamodb", "scheduled", "cloudwatch", "pure_lambda"}
    assert kinds <= wrapped


# --- the HTTP boundary at prod's level ----------------------------------------------------


def test_one_access_line_per_request_at_prods_level(
    client: Any, log_lines: Lines, prod_level: None
) -> None:
    answer = client.http.get("/health", headers={"X-Correlation-Id": "access-1"})
    assert answer.status_code == 200
    logger.info("an info line of a handler is dropped at WARNING")
    [line] = log_lines()
    assert line["message"] == "request" and line["level"] == "INFO"
    assert line["correlation_id"] == "access-1"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/health", 200)
    assert line["duration_ms"] >= 0 and line["function_name"] == "api_handler"


def test_an_unhandled_error_is_logged_once_with_its_id_at_prods_level(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.users import users_service

    def broken(*_args: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(users_service(), "get", broken)
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    before = logger.log_level
    logger.setLevel("WARNING")
    try:
        answer = api.get(
            "/users/00000000-0000-4000-8000-000000000000", headers={"X-Correlation-Id": "fault-2"}
        )
    finally:
        logger.setLevel(before)
    assert answer.status_code == 500
    body = json.loads(answer.body)
    assert body["error"]["request_id"] == "fault-2" and b"fire" not in answer.body
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] == "ERROR"]
    [error] = errors  # Chalice's own "Caught exception" line is not written as well
    assert error["correlation_id"] == "fault-2" and error["route"] == "/users/{user_id}"
    assert error["error_type"] == "RuntimeError" and "disk on fire" in error["exception"]
    [access] = [line for line in lines if line["message"] == "request"]
    assert access["status"] == 500 and access["correlation_id"] == "fault-2"


# --- review fixes: ids not well formed, the request's own context, pool workers -----------


@pytest.mark.parametrize("given", ["x" * 129, "two words", "line\nbreak", "", "é"])
def test_an_id_not_well_formed_is_never_bound(log_lines: Lines, given: str) -> None:
    """A task input's `correlation_id` is whatever StartExecution was given (orders'
    `Step.correlation_id`): `bound` takes one that is not well formed for none."""
    with correlation.bound(given) as made:
        logger.info("no invocation")
    assert made != given and correlation.well_formed(made)
    correlation.start_invocation(context("order_step"), ["order-7"])
    try:
        with correlation.bound(given) as kept:
            logger.info("in an invocation")
    finally:
        correlation.end_invocation()
    assert kept == "order-7"
    alone, inside = log_lines()
    assert alone["correlation_id"] == made and inside["correlation_id"] == "order-7"


def api_event(path: str = "/ping") -> dict[str, Any]:
    return {"resource": path, "path": path, "httpMethod": "GET", "headers": {},
            "multiValueHeaders": {}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": None,
            "stageVariables": None, "body": None, "isBase64Encoded": False,
            "requestContext": {"httpMethod": "GET", "resourcePath": path, "path": path,
                               "requestId": "gw-1"}}  # fmt: skip


def test_concurrent_requests_log_their_own_lambda_request_ids(
    log_lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not `app.lambda_context`: one attribute of the app, which each call sets, so the
    local server's concurrent requests read each other's."""
    from chalicelib.core import http, settings

    monkeypatch.setenv(settings.CORS_ALLOW_ORIGINS.env_name, "http://localhost:3000")
    app = Chalice(app_name="http-fixture")
    both_called = threading.Barrier(2)

    @app.middleware("http")
    def both_requests_in_flight(request: Any, get_response: Any) -> Any:
        both_called.wait(5)  # registered first: runs before `core.http`'s boundary
        return get_response(request)

    http.install(app)

    @app.route("/ping")
    def ping() -> dict[str, str]:
        logger.info("pinged")
        return {}

    contexts = [context("api_handler"), context("api_handler")]
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda c=c: answers.append(app(api_event(), c)["statusCode"]))
        for c in contexts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [200, 200]
    lines = [line for line in log_lines() if line["message"] == "request"]
    seen = sorted(line["function_request_id"] for line in lines)
    assert seen == sorted(c.aws_request_id for c in contexts)


def test_pool_workers_log_their_submitters_id(log_lines: Lines) -> None:
    """Context variables are not copied to a ThreadPoolExecutor's threads: the search
    service's concurrent Queries and the index's concurrent writes go through `carried`."""
    from chalicelib.search.repository import _Batches
    from chalicelib.search.service import SearchService

    all_running = threading.Barrier(3)

    def query() -> str | None:
        all_running.wait(5)  # three workers at once, each in its own copy of the context
        logger.info("queried")
        return correlation.current()

    class Client:
        def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
            logger.info("written")
            return {"UnprocessedItems": {}}

    put = [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}}}} for i in range(60)]
    correlation.start_invocation(context("search_fn"), ["search-1"])
    try:
        [found] = SearchService(index=None, profiles=None, max_workers=4)._gather([query] * 3)  # type: ignore[arg-type]
        _Batches(Client, lambda _s: None, 1, write_workers=3).write("t", put)
        with correlation.bound("record-2"):
            _Batches(Client, lambda _s: None, 1, write_workers=3).write("t", put)
        assert correlation.current() == "search-1", "a worker's binding is its own"
    finally:
        correlation.end_invocation()
    assert found == ["search-1"] * 3
    lines = log_lines()
    assert [line["message"] for line in lines] == ["queried"] * 3 + ["written"] * 6
    assert [line["correlation_id"] for line in lines] == ["search-1"] * 6 + ["record-2"] * 3
    assert {line["function_name"] for line in lines} == {"search_fn"}


def test_carried_work_keeps_its_bindings_to_itself() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def rebinds(n: int) -> tuple[str | None, str | None]:
        before = correlation.current()
        correlation.bind(f"worker-{n}")
        return before, correlation.current()

    with correlation.bound("outer"), ThreadPoolExecutor(2) as pool:
        results = list(pool.map(correlation.carried(rebinds), range(4)))
        assert correlation.current() == "outer"
    assert results == [("outer", f"worker-{n}") for n in range(4)]
