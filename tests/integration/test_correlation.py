"""One correlation id end to end on the running local stack: a registration, an upload, a
batch of events and an order, each sent with its own `X-Correlation-Id`, are followed through
every handler they reach by grepping the stack's log (the API's and every handler's JSON
lines, in state_dir/stack.log) for that id alone."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from tests.integration.test_images import jpeg, settled, upload
from tests.integration.test_local_stack import eventually, register, sign_in
from tests.integration.test_orders import ADDRESS

pytestmark = pytest.mark.integration

#: Which handlers must have logged each flow's id (the API's lines say `api_handler`).
REGISTRATION = {"api_handler", "publish_user_events", "index_users_for_search",
                "welcome_new_user", "onboard_users"}  # fmt: skip
UPLOAD = {"api_handler", "analyze_image", "make_thumbnails"}
EVENTS = {"api_handler", "process_telemetry"}
ORDER = {"api_handler", "validate_order", "reserve_inventory", "charge_payment", "ship_order",
         "complete_order", "email_order_update"}  # fmt: skip


def new_id(flow: str) -> str:
    return f"it-{flow}-{uuid.uuid4().hex[:12]}"


def lines_with(log: Path, correlation_id: str) -> list[dict[str, Any]]:
    """The stack's JSON log lines that carry `correlation_id`: as the line's id, or among a
    batch's ids (`correlation_ids`)."""
    found = []
    for text in log.read_text(errors="replace").splitlines():
        if correlation_id not in text or not text.startswith("{"):
            continue
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if line.get("correlation_id") == correlation_id or correlation_id in (
            line.get("correlation_ids") or []
        ):
            found.append(line)
    return found


def handlers_that_logged(log: Path, correlation_id: str) -> set[str]:
    return {str(line.get("function_name")) for line in lines_with(log, correlation_id)}


def wait_for_handlers(log: Path, correlation_id: str, expected: set[str]) -> set[str]:
    """The handlers that logged the id, once all of `expected` have (or 60 s went by)."""
    deadline = time.monotonic() + 60
    while not expected <= (seen := handlers_that_logged(log, correlation_id)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return seen


def test_one_id_per_flow_through_every_handler_it_reaches(
    api: str, stack: dict[str, Any], token_for: Any, admin_headers: dict[str, str]
) -> None:
    log = Path(stack["state_dir"]) / "stack.log"
    ids = {flow: new_id(flow) for flow in ("registration", "upload", "events", "order")}

    # A registration: both steps with the same id.
    with requests.Session() as http:
        http.headers["X-Correlation-Id"] = ids["registration"]
        user = register(api, http)
    own = sign_in(stack, user["email"])

    # An upload: the link's request id travels in the object's metadata.
    image_id = upload(api, {**own, "X-Correlation-Id": ids["upload"]}, jpeg(640, 480), "image/jpeg")

    # A batch of events.
    login = {"event_type": "user_activity", "activity_type": "login"}
    events = [{**login, "timestamp": clock.timestamp()} for _ in range(3)]
    sent = requests.post(f"{api}/events", json={"events": events}, timeout=10,
                         headers={**own, "X-Correlation-Id": ids["events"]})  # fmt: skip
    assert sent.status_code == 202 and sent.json()["accepted"] == 3, sent.text

    # An order, of a product of its own.
    sku = f"IT-{uuid.uuid4().hex[:8].upper()}"
    product = {"name": f"Product {sku}", "unit_amount": 1000, "available": 3}
    put = requests.put(f"{api}/inventory/{sku}", json=product, headers=admin_headers, timeout=10)
    assert put.status_code == 200, put.text
    body = {"lines": [{"sku": sku, "quantity": 1}], "payment_method": "pm_card_visa",
            "shipping_address": ADDRESS}  # fmt: skip
    placed = requests.post(f"{api}/orders", json=body, timeout=30,
                           headers={**own, "X-Correlation-Id": ids["order"]})  # fmt: skip
    assert placed.status_code == 202, placed.text
    assert placed.headers["X-Correlation-Id"] == ids["order"]

    image = eventually(lambda: settled(api, own, image_id))
    assert image["status"] == "ready", image

    expected = {"registration": REGISTRATION, "upload": UPLOAD, "events": EVENTS, "order": ORDER}
    for flow, handlers in expected.items():
        seen = wait_for_handlers(log, ids[flow], handlers)
        assert handlers <= seen, f"{flow}: no line with its id from {sorted(handlers - seen)}"

    # The API's lines of each flow: its requests, under their routes.
    routes = {line.get("route") for line in lines_with(log, ids["registration"])
              if line.get("message") == "request"}  # fmt: skip
    assert routes == {"/register", "/register/confirm"}
