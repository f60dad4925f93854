"""serverless-app: every entry point, each a few lines handing off to chalicelib."""

import sys
from typing import Any

from chalice import Chalice, Response
from chalice.app import (
    AuthRequest,
    AuthResponse,
    CloudWatchEvent,
    DynamoDBEvent,
    KinesisEvent,
    SNSEvent,
    SQSEvent,
)

from chalicelib.auth.authorizer import AUTHORIZER_CACHE_SECONDS, authorize, principal_of
from chalicelib.contract import operation as api
from chalicelib.core import correlation, http
from chalicelib.core.pagination import parse_limit
from chalicelib.core.resources import source_name, source_setting, source_stream_arn
from chalicelib.core.sqs_batch import process_sqs_batch, process_sqs_messages
from chalicelib.users import (
    profile_set_up,
    registration_service,
    user_events_publisher,
    user_welcome,
    users_service,
)
from chalicelib.users.events import events_from_stream

app = Chalice(app_name="serverless-app")
http.install(app)
correlation.install(app)  # every event handler logs its correlation id (core/correlation.py)

if "chalice.cli" in sys.modules:  # loaded by the chalice CLI, never in Lambda
    from infra.chalice_commands import check_command

    check_command()

# Each route's contract (`@api`, metadata only) makes GET /openapi.json (chalicelib/contract/).
USERS, EVENTS = "chalicelib.users.schemas:", "chalicelib.telemetry.batch:"
IMAGES, ORDERS = "chalicelib.images.schemas:", "chalicelib.orders.schemas:"
OUT = "chalicelib.contract.responses:"  # answers no domain declares (pages, errors, reports)
USER_LINKS = ("get_user", "update_user", "delete_user")

# Event sources are named by their logical ids in infra/resources.json (`core.resources`).
USERS_TABLE_STREAM_ARN = source_stream_arn("UsersTable")


@app.authorizer(ttl_seconds=AUTHORIZER_CACHE_SECONDS)
def cognito_jwt(auth_request: AuthRequest) -> AuthResponse:
    """Verifies Cognito ID and access tokens (RS256, the pool's JWKS)."""
    return authorize(auth_request)


@app.route("/health", methods=["GET"])
@api("Liveness", responses={200: OUT + "Health"}, auth="public", aws=False)
def health() -> dict:
    """Liveness for load balancers and monitors: answers without calling AWS."""
    return http.health()


@app.route("/openapi.json", methods=["GET"])
@api("This API's OpenAPI 3.1 document", responses={200: OUT + "OpenApiDocument"}, auth="public",
     aws=False)  # fmt: skip
def openapi_document() -> Response:
    """Generated from these routes and their models, once per process, on first request."""
    from chalicelib.contract.openapi import served_document

    document = served_document(app, app.current_request.context)
    return Response(body=document, headers={"Content-Type": "application/json"})


# --- Users API --------------------------------------------------------------------------


@app.route("/register", methods=["POST"])
@api("Register: mail a code", request=USERS + "Signup", responses={202: OUT + "SignupAccepted"},
     auth="public", errors=(429,))  # fmt: skip
def register() -> Response:
    """Mails a code to the address (202, the same answer whether or not it is taken)."""
    request = app.current_request
    answer = registration_service().register(http.json_object(request), http.client_ip(request))
    return Response(body=answer, status_code=202)


@app.route("/register/confirm", methods=["POST"])
@api("Confirm a registration", request=USERS + "SignupConfirmation",
     responses={201: USERS + "PublicUser"}, auth="public", errors=(409, 429),
     headers=("Location",), links=USER_LINKS)  # fmt: skip
def confirm_registration() -> Response:
    """The mailed code proves the address: the account is made (and usable) now."""
    request = app.current_request
    user = registration_service().confirm(http.json_object(request), http.client_ip(request))
    return Response(body=user, status_code=201, headers={"Location": f"/users/{user['user_id']}"})


@app.route("/users", methods=["GET"], authorizer=cognito_jwt)
@api("List users", responses={200: OUT + "UserPage"}, auth="admin", paginated=True)
def list_users() -> dict:
    params = app.current_request.query_params or {}
    caller = principal_of(app.current_request)
    return users_service().list(caller, parse_limit(params.get("limit")), params.get("cursor"))


@app.route("/users/search", methods=["GET"], authorizer=cognito_jwt)
@api("Search users", responses={200: OUT + "UserPage"}, auth="admin", paginated=True, query=("q",))
def search_users() -> dict:
    params = app.current_request.query_params or {}
    caller = principal_of(app.current_request)
    from chalicelib.search import search_service  # on first use: every function imports app.py

    return search_service().search(
        caller, params.get("q"), params.get("limit"), params.get("cursor")
    )


@app.route("/users/{user_id}", methods=["GET"], authorizer=cognito_jwt)
@api("Get a user", responses={200: USERS + "PublicUser"}, auth="owner")
def get_user(user_id: str) -> dict:
    return users_service().get(principal_of(app.current_request), user_id)


@app.route("/users/{user_id}", methods=["PUT"], authorizer=cognito_jwt)
@api("Update a user", request=USERS + "ProfileChanges", responses={200: USERS + "UpdatedUser"},
     auth="owner", errors=(409, 429))  # fmt: skip
def update_user(user_id: str) -> dict:
    body = http.json_object(app.current_request)
    return users_service().update(principal_of(app.current_request), user_id, body)


@app.route("/users/{user_id}/email/confirm", methods=["POST"], authorizer=cognito_jwt)
@api("Confirm an email change", request=USERS + "EmailChangeConfirmation",
     responses={200: USERS + "PublicUser"}, auth="owner", errors=(409, 429))  # fmt: skip
def confirm_email_change(user_id: str) -> dict:
    """The code mailed to the new address (PUT /users/{id}) makes it the sign-in email."""
    body = http.json_object(app.current_request)
    return users_service().confirm_email(principal_of(app.current_request), user_id, body)


@app.route("/users/{user_id}", methods=["DELETE"], authorizer=cognito_jwt)
@api("Delete a user", responses={204: None}, auth="owner", errors=(409,))
def delete_user(user_id: str) -> Response:
    users_service().delete(principal_of(app.current_request), user_id)
    return Response(body="", status_code=204)


@app.route("/users/{user_id}/export", methods=["GET"], authorizer=cognito_jwt)
@api("Export a user's data", responses={200: OUT + "UserExport"}, auth="owner",
     headers=("Content-Disposition",))  # fmt: skip
def export_user(user_id: str) -> Response:
    """Everything stored about the user, as one JSON document (`users/export.py`)."""
    from chalicelib.images import image_owner_export
    from chalicelib.orders import order_owner_export
    from chalicelib.telemetry import telemetry_owner_export
    from chalicelib.users.export import attachment_name
    from chalicelib.users.privacy import user_export

    exporter = user_export(telemetry_owner_export(), image_owner_export(), order_owner_export())
    document = exporter.export(principal_of(app.current_request), user_id)
    headers = {
        "Content-Type": "application/json",
        "Content-Disposition": f'attachment; filename="{attachment_name(user_id)}"',
    }
    return Response(body=document, headers=headers)


# --- Telemetry ---------------------------------------------------------------------------


@app.route("/events", methods=["POST"], authorizer=cognito_jwt)
@api("Send telemetry events", request=EVENTS + "EventBatch",
     responses={202: EVENTS + "EventsAccepted"}, auth="machine", errors=(429,))  # fmt: skip
def ingest_events() -> Response:
    """1 to 500 events onto the telemetry stream; the answer says, per event, if it was taken.
    The caller's own events; system metrics from machine identities (or admins) only."""
    from chalicelib.telemetry import telemetry_ingest

    caller = principal_of(app.current_request, allow_machine=True)
    result = telemetry_ingest().ingest(http.json_object(app.current_request), caller)
    return Response(body=result, status_code=202)


@app.on_kinesis_record(
    stream=source_name("TelemetryStream"),
    batch_size=source_setting("TelemetryBatchSize"),
    maximum_batching_window_in_seconds=source_setting("TelemetryBatchWindowSeconds"),
    starting_position="TRIM_HORIZON",
)
def process_telemetry(event: KinesisEvent) -> dict:
    """Store, check and archive a batch; report the records whose writes failed, so only
    they come back (the mapping has ReportBatchItemFailures: infra/functions.json)."""
    from chalicelib.telemetry import telemetry_processor

    # The time left, so the batch stops (and reports) before the function's timeout.
    remaining_ms = getattr(event.context, "get_remaining_time_in_millis", None)
    return telemetry_processor().process(event.to_dict()["Records"], remaining_ms=remaining_ms)


# --- Images ------------------------------------------------------------------------------


@app.route("/images", methods=["POST"], authorizer=cognito_jwt)
@api("Start an image upload", request=IMAGES + "UploadRequest",
     responses={202: OUT + "ImageUpload"}, errors=(429,))  # fmt: skip
def create_image_upload() -> Response:
    """A presigned POST for one JPEG or PNG of its declared size (20 MB at most), within the
    caller's daily quotas (429): an upload intent (202, no Location), as the image exists only
    once the pipeline has taken the file from S3 and recorded it."""
    from chalicelib.images import images_service

    body = http.json_object(app.current_request)
    upload = images_service().create_upload(principal_of(app.current_request), body)
    return Response(body=upload, status_code=202)


@app.route("/images", methods=["GET"], authorizer=cognito_jwt)
@api("List my images", responses={200: OUT + "ImagePage"}, paginated=True, query=("label",))
def list_images() -> dict:
    """The caller's images, newest first; `?label=Dog` only those with that label."""
    from chalicelib.images import images_service

    params = app.current_request.query_params or {}
    return images_service().list(
        principal_of(app.current_request),
        params.get("label"),
        parse_limit(params.get("limit")),
        params.get("cursor"),
    )


@app.route("/images/{image_id}", methods=["GET"], authorizer=cognito_jwt)
@api("Get an image", responses={200: OUT + "Image"}, auth="owner")
def get_image(image_id: str) -> dict:
    from chalicelib.images import images_service

    return images_service().get(principal_of(app.current_request), image_id)


@app.route("/images/{image_id}", methods=["DELETE"], authorizer=cognito_jwt)
@api("Delete an image", responses={204: None}, auth="owner", errors=(409,))
def delete_image(image_id: str) -> Response:
    """The image, its thumbnails, record and labels (owner or admin); 404 once gone."""
    from chalicelib.images import images_service

    images_service().delete(principal_of(app.current_request), image_id)
    return Response(body="", status_code=204)


@app.on_sqs_message(queue=source_name("ImageUploadsQueue"), batch_size=1)
def analyze_image(event: SQSEvent) -> None:
    """uploads/ notifications (S3 -> SQS) -> labels, image record, thumbnail task."""
    from chalicelib.images import image_analysis

    process_sqs_messages(event.to_dict(), image_analysis().handle)


@app.on_sqs_message(queue=source_name("ThumbnailsQueue"), batch_size=1)
def make_thumbnails(event: SQSEvent) -> None:
    """Thumbnail tasks -> 128 and 512 px thumbnails; the DLQ takes what fails 5 times.
    One image per invocation: a timeout or out-of-memory costs only its own message."""
    from chalicelib.images import thumbnail_maker

    process_sqs_messages(event.to_dict(), thumbnail_maker().handle)


# --- User events -----------------------------------------------------------------------


@app.on_dynamodb_record(stream_arn=USERS_TABLE_STREAM_ARN, starting_position="TRIM_HORIZON")
def publish_user_events(event: DynamoDBEvent) -> None:
    """users table stream -> user-created / user-updated (SNS). Raises to retry the batch."""
    user_events_publisher().publish(events_from_stream(event.to_dict()["Records"]))


@app.on_dynamodb_record(stream_arn=USERS_TABLE_STREAM_ARN, starting_position="TRIM_HORIZON")
def index_users_for_search(event: DynamoDBEvent) -> None:
    """users table stream -> search index. Idempotent, so a retried batch is harmless."""
    from chalicelib.search import search_index_keeper

    search_index_keeper().apply_stream_records(event.to_dict()["Records"])


@app.on_sns_message(topic=source_name("UserCreatedTopic"))
def welcome_new_user(event: SNSEvent) -> None:
    """Default preferences and one welcome email (SES) per new user."""
    user_welcome().welcome(event.message, event.context)


@app.on_sqs_message(
    queue=source_name("OnboardingQueue"), batch_size=10, maximum_batching_window_in_seconds=5
)
def onboard_users(event: SQSEvent) -> None:
    """Profile set-up per new user; failed messages stay queued (DLQ after 3 receives)."""
    process_sqs_batch(event.to_dict(), profile_set_up().set_up_profile)


@app.on_sqs_message(queue=source_name("UserErasureQueue"), batch_size=1)
def erase_users(event: SQSEvent) -> None:
    """user-deleted -> everything of the user erased, in idempotent passes (users/erasure.py);
    a failing message comes back, and after 5 receives goes to the DLQ."""
    from chalicelib.images import image_owner_data
    from chalicelib.orders import order_owner_data
    from chalicelib.telemetry import telemetry_owner_data
    from chalicelib.users.privacy import user_erasure

    eraser = user_erasure(telemetry_owner_data(), image_owner_data(), order_owner_data())
    process_sqs_batch(event.to_dict(), eraser.handle)


# --- Orders ------------------------------------------------------------------------------


@app.route("/orders", methods=["POST"], authorizer=cognito_jwt)
@api("Place an order", request=ORDERS + "PlaceOrder", responses={202: ORDERS + "OrderView"},
     errors=(422,), headers=("Idempotency-Key", "Location", "Idempotent-Replayed"),
     links=("get_order", "cancel_order"))  # fmt: skip
def place_order() -> Response:
    """Price the order from the catalog and start its workflow (202: it runs on). The same
    `Idempotency-Key` again answers with the same order and starts nothing."""
    from chalicelib.orders import orders_service

    request = app.current_request
    order, replayed = orders_service().place(
        principal_of(request),
        http.json_object(request),
        request.headers.get("idempotency-key"),
        http.correlation_id(request),
    )
    headers = {"Location": f"/orders/{order['order_id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=order, status_code=202, headers=headers)


@app.route("/orders", methods=["GET"], authorizer=cognito_jwt)
@api("List my orders", responses={200: OUT + "OrderPage"}, paginated=True)
def list_orders() -> dict:
    """The caller's orders, newest first."""
    from chalicelib.orders import orders_service

    params = app.current_request.query_params or {}
    return orders_service().list(
        principal_of(app.current_request), parse_limit(params.get("limit")), params.get("cursor")
    )


@app.route("/orders/{order_id}", methods=["GET"], authorizer=cognito_jwt)
@api("Get an order", responses={200: ORDERS + "OrderView"}, auth="owner")
def get_order(order_id: str) -> dict:
    from chalicelib.orders import orders_service

    return orders_service().get(principal_of(app.current_request), order_id)


@app.route("/orders/{order_id}/cancel", methods=["POST"], authorizer=cognito_jwt)
@api("Cancel an order", responses={200: ORDERS + "OrderView"}, auth="owner", errors=(409,))
def cancel_order(order_id: str) -> dict:
    """Before it ships: stop the workflow, refund, release the stock."""
    from chalicelib.orders import orders_service

    return orders_service().cancel(principal_of(app.current_request), order_id)


@app.route("/inventory/{sku}", methods=["GET"], authorizer=cognito_jwt)
@api("Get a product", responses={200: ORDERS + "ProductView"}, errors=(400,))
def get_product(sku: str) -> dict:
    from chalicelib.orders import catalog_service

    return catalog_service().get(sku)


@app.route("/inventory/{sku}", methods=["PUT"], authorizer=cognito_jwt)
@api("Set a product", request=ORDERS + "ProductUpdate",
     responses={200: ORDERS + "ProductView"}, auth="admin")  # fmt: skip
def put_product(sku: str) -> dict:
    """Admins set a product's name, price, stock and whether it is sold."""
    from chalicelib.orders import catalog_service

    body = http.json_object(app.current_request)
    return catalog_service().put(principal_of(app.current_request), sku, body)


# The order workflow's tasks (state machine `OrderWorkflow` in infra/resources.json). Their
# exceptions' class names are the errors its Retry and Catch match (chalicelib/orders/outcomes.py).


@app.lambda_function(name="validate_order")
def validate_order(event: dict, context: Any) -> dict:
    from chalicelib.orders import validate_step

    return validate_step().validate(event)


@app.lambda_function(name="reserve_inventory")
def reserve_inventory(event: dict, context: Any) -> dict:
    from chalicelib.orders import reserve_step

    return reserve_step().reserve(event)


@app.lambda_function(name="charge_payment")
def charge_payment(event: dict, context: Any) -> dict:
    from chalicelib.orders import payment_step

    return payment_step().charge(event)


@app.lambda_function(name="ship_order")
def ship_order(event: dict, context: Any) -> dict:
    from chalicelib.orders import ship_step

    return ship_step().ship(event)


@app.lambda_function(name="complete_order")
def complete_order(event: dict, context: Any) -> dict:
    from chalicelib.orders import outcome_step

    return outcome_step().complete(event)


@app.lambda_function(name="refund_payment")
def refund_payment(event: dict, context: Any) -> dict:
    from chalicelib.orders import payment_step

    return payment_step().refund(event)


@app.lambda_function(name="release_inventory")
def release_inventory(event: dict, context: Any) -> dict:
    from chalicelib.orders import release_step

    return release_step().release(event)


@app.lambda_function(name="fail_order")
def fail_order(event: dict, context: Any) -> dict:
    from chalicelib.orders import outcome_step

    return outcome_step().fail(event)


@app.on_sns_message(topic=source_name("OrderUpdatesTopic"))
def email_order_update(event: SNSEvent) -> None:
    """order-shipped / order-failed -> one email to the order's owner (SES)."""
    from chalicelib.orders import order_update_mailer

    order_update_mailer().handle(event.message, event.context)


@app.schedule("cron(0 2 * * ? *)")
def sweep_stuck_orders(event: CloudWatchEvent) -> None:
    """Nightly: orders whose workflow ended without finishing them are settled."""
    from chalicelib.core import clock
    from chalicelib.orders import stuck_order_sweep

    remaining_ms = getattr(event.context, "get_remaining_time_in_millis", None)
    stuck_order_sweep().run(clock.parse(event.time), remaining_ms)


# --- Analytics (admins) ------------------------------------------------------------------


@app.schedule("cron(30 0 * * ? *)")
def run_daily_analytics(event: CloudWatchEvent) -> None:
    """00:30 UTC: yesterday's report queries start (their ends arrive as events, below)."""
    from chalicelib.analytics import analytics_service
    from chalicelib.core import clock

    analytics_service().run_scheduled(clock.parse(event.time), event.to_dict()["id"])


@app.on_cw_event({
    "source": ["aws.athena"],
    "detail-type": ["Athena Query State Change"],
    "detail": {"currentState": ["SUCCEEDED", "FAILED", "CANCELLED"],
               "workgroupName": [source_name("AnalyticsWorkGroup")]},
})  # fmt: skip
def complete_analytics_query(event: CloudWatchEvent) -> None:
    """A report query ended: its rows into its job, and the report once all have ended."""
    from chalicelib.analytics import report_completion

    report_completion().query_changed(event.detail["queryExecutionId"])


@app.route("/analytics/daily", methods=["GET"], authorizer=cognito_jwt)
@api("List daily reports", responses={200: OUT + "DailyReportPage"}, auth="admin",
     paginated=(7, 90))  # fmt: skip
def list_daily_reports() -> dict:
    from chalicelib.analytics import analytics_service

    params = app.current_request.query_params or {}
    return analytics_service().recent(
        principal_of(app.current_request), parse_limit(params.get("limit"), 7, 90),
        params.get("cursor"),
    )  # fmt: skip


@app.route("/analytics/daily/{day}", methods=["GET"], authorizer=cognito_jwt)
@api("Get a daily report", responses={200: OUT + "DailyReport"}, auth="admin", errors=(400,))
def get_daily_report(day: str) -> dict:
    """One day's report; while it runs, its jobs' states."""
    from chalicelib.analytics import analytics_service

    return analytics_service().get(principal_of(app.current_request), day)


@app.route("/analytics/daily/{day}/run", methods=["POST"], authorizer=cognito_jwt)
@api("Run a daily report", responses={202: OUT + "DailyReport"}, auth="admin", errors=(400, 409),
     headers=("Location",))  # fmt: skip
def run_daily_report(day: str) -> Response:
    """Compute (again) one day's report (202: it runs on; 409 while it already runs)."""
    from chalicelib.analytics import analytics_service

    request = app.current_request
    report = analytics_service().rerun(
        principal_of(request), day, request.context.get("requestId") or http.correlation_id(request)
    )
    return Response(body=report, status_code=202, headers={"Location": f"/analytics/daily/{day}"})


# --- CORS preflight (origins per stage: CORS_ALLOW_ORIGINS) -------------------------------

# Last, once every route is declared: a throttled or timed-out AWS call is a 503 to retry,
# and each route gets an OPTIONS route naming exactly its methods.
http.complete_routes(app, not_for_browsers={"/health"})
