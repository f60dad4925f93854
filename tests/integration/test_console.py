"""The local console in a real headless Chromium, against the running local stack: what a
person sees after a registration, a failed order, and the console's own actions.

Needs the system's Chromium and ChromeDriver (`make test` installs them as root). Without
them these tests are skipped with the reason, unless REQUIRE_BROWSER=1 (CI sets it), which
makes a missing browser a failure.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from local.console import browser
from local.mailbox import wait_for_code
from tests.integration.test_orders import Shop

pytestmark = pytest.mark.integration

WAIT_S = 60  # the whole suite runs at once on 2 cores: stream batches wait their turn


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    reason = browser.missing()
    if reason:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but no browser: {reason}")
        pytest.skip(reason)
    driver = browser.chromium()
    yield driver
    driver.quit()


@pytest.fixture
def console(stack: dict[str, Any]) -> str:
    return str(stack["console_url"])


@pytest.fixture
def shop(
    stack: dict[str, Any], emulator: Any, token_for: Any, admin_headers: dict[str, str]
) -> Shop:
    """A new customer of the stack, with a product of their own to order."""
    return Shop(stack, emulator, token_for, admin_headers)


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """`check()`'s first truthy answer, tried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)


def visible_rows(driver: Any) -> list[dict[str, str]]:
    """The invocations table as it is on the screen, read in one step (the page replaces
    the table every two seconds: elements found one by one may be gone by the next)."""
    cells = driver.execute_script(
        "return [...document.querySelectorAll('#invocations tr.invocation')]"
        ".map(row => [...row.querySelectorAll('td')].map(cell => cell.innerText));"
    )
    return [
        {"handler": row[1], "source": row[2], "outcome": row[5],
         "correlation_id": row[6].split()[0] if row[6].split() else ""}
        for row in cells
    ]  # fmt: skip


def click(driver: Any, selector: str, what: str) -> None:
    """Click the first element `selector` finds, once there, again if the page replaced it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            if found:
                found[0].click()
                return True
        except StaleElementReferenceException:
            pass
        return False

    eventually(clicked, what)


def test_a_registration_shows_its_invocations_filtered_by_its_correlation_id(
    chrome: Any, console: str, stack: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    api, email = stack["api_url"], f"it-console-{uuid.uuid4().hex[:10]}@example.com"
    asked = requests.post(
        f"{api}/register", json={"email": email, "name": "Grace Hopper"}, timeout=10
    )
    assert asked.status_code == 202, asked.text
    code = wait_for_code(stack["emulator_url"], email)
    confirmed = requests.post(
        f"{api}/register/confirm",
        timeout=10,
        json={"email": email, "code": code, "password": "Corr3ct-Horse!"},
    )
    assert confirmed.status_code == 201, confirmed.text
    correlation_id = confirmed.headers["X-Correlation-Id"]

    chrome.get(console + "/")
    field = chrome.find_element(By.ID, "filter-correlation")
    field.clear()
    field.send_keys(correlation_id)
    chrome.find_element(By.CSS_SELECTOR, "#invocation-filter button[type=submit]").click()
    assert f"correlation_id={correlation_id}" in chrome.current_url

    # The request, then what its user's creation set off: the table's stream feeds search
    # and the events topic, whose subscribers welcome and onboard the user.
    expected = {
        "api_handler",
        "index_users_for_search",
        "publish_user_events",
        "welcome_new_user",
        "onboard_users",
    }

    def seen() -> set[str] | None:
        rows = visible_rows(chrome)  # the filtered table, once the page has fetched it
        if any(row["correlation_id"] != correlation_id for row in rows):
            return None
        handlers = {row["handler"] for row in rows}
        return handlers if expected <= handlers else None

    handlers = eventually(seen, f"the invocations of {correlation_id}")
    rows = visible_rows(chrome)
    assert {row["correlation_id"] for row in rows} == {correlation_id}, rows
    handled = [row for row in rows if not row["source"].startswith("local runtime")]
    assert all(row["outcome"] in ("ok", "201") for row in handled), rows
    assert handlers == expected | {r["handler"] for r in rows}
    confirm = [row for row in rows if row["handler"] == "api_handler"]
    assert [row["source"] for row in confirm] == ["POST /register/confirm"]
    streamed = [row for row in rows if row["handler"] == "index_users_for_search"]
    assert streamed[0]["source"] == "dynamodb stream: users"

    # The mails that registration sent, as its owner received them: the code, the welcome.
    def mailed() -> str | None:
        panel = chrome.execute_script("return document.querySelector('#mail').innerText")
        return panel if "Welcome" in panel and panel.count(email) >= 2 else None

    eventually(mailed, "the code and welcome mails in the mail panel")

    # A handler's own rows, by clicking it.
    click(chrome, "#invocations a.handler", "a handler's link")
    eventually(lambda: "handler=" in chrome.current_url, "the handler filter")


def test_a_failed_order_shows_its_compensation_path(chrome: Any, console: str, shop: Shop) -> None:
    from selenium.webdriver.common.by import By

    sku = shop.product(available=3)
    # Charged, then the carrier refuses the address: the charge is refunded, the stock
    # released, the customer told.
    order_id = shop.order(sku, postal_code="00000")
    shop.wait_until_terminal(order_id)
    shop.execution(order_id)

    chrome.get(console + "/")
    click(chrome, f'a.execution-link[data-name="{order_id}"]', "the execution's link")
    eventually(lambda: chrome.find_elements(By.CSS_SELECTOR, "svg.workflow"), "the drawing")
    assert order_id in chrome.find_element(By.TAG_NAME, "h2").text

    def state(name: str) -> set[str]:
        node = chrome.find_element(By.CSS_SELECTOR, f'svg.workflow g.state[data-state="{name}"]')
        return set(str(node.get_attribute("class")).split())

    for name in ("ShipOrder", "CheckShipment"):
        assert {"visited", "main"} <= state(name), name
    for name in ("CarrierRefused", "RefundPayment", "ReleaseInventory", "NotifyFailure"):
        assert {"visited", "branch"} <= state(name), name
    for name in ("NotifyCustomer", "OrderCompleted", "CompensationFailed"):
        assert "visited" not in state(name), name
    taken = chrome.find_elements(By.CSS_SELECTOR, "svg.workflow path.edge.taken")
    steps = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in taken}
    assert {
        ("CheckShipment", "CarrierRefused"),
        ("CarrierRefused", "RefundPayment"),
        ("RefundPayment", "ReleaseInventory"),
    } <= steps
    assert ("CheckShipment", "NotifyCustomer") not in steps

    table = [
        r.get_attribute("data-state") for r in chrome.find_elements(By.CSS_SELECTOR, "tr.step")
    ]
    assert table[-4:] == ["NotifyFailure", "FailOrder", "CheckFailure", "OrderRefused"], table
    assert "RefundPayment" in table and "ShipOrder" in table

    # Its invocations are one click away: the same correlation id, every task's.
    chrome.find_element(By.PARTIAL_LINK_TEXT, "its invocations").click()
    handlers = eventually(
        lambda: (
            {r["handler"] for r in visible_rows(chrome)} >= {"refund_payment", "ship_order"}
            and {r["handler"] for r in visible_rows(chrome)}
        ),
        "the order's task invocations",
    )
    assert {"api_handler", "charge_payment", "release_inventory"} <= handlers


def test_a_retried_payment_shows_its_attempts_on_the_drawing(
    chrome: Any, console: str, shop: Shop
) -> None:
    from selenium.webdriver.common.by import By

    order_id = shop.order(shop.product(available=2), payment_method="pm_card_unavailable_1")
    shop.wait_until_terminal(order_id)
    shop.execution(order_id)  # ended: the page is not reloaded while it runs
    arn = shop.execution_arn(order_id)
    chrome.get(f"{console}/executions?arn={quote(arn, safe='')}")
    node = chrome.find_element(By.CSS_SELECTOR, 'svg.workflow g.state[data-state="ChargePayment"]')
    assert {"visited", "retried"} <= set(str(node.get_attribute("class")).split())
    assert node.find_element(By.CSS_SELECTOR, "text.badge").text == "\u00d72"
    row = chrome.find_element(By.ID, "state-ChargePayment")
    assert "PaymentProviderUnavailable" in row.text or "unavailable" in row.text.lower(), row.text


def test_actions_fire_a_schedule_and_send_a_test_event_that_can_be_followed(
    chrome: Any, console: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    chrome.get(console + "/#actions")
    Select(chrome.find_element(By.ID, "fire-job")).select_by_visible_text("sweep_stuck_orders")
    chrome.find_element(By.CSS_SELECTOR, 'form[data-action="fire"] button').click()
    result = chrome.find_element(By.ID, "action-result")
    eventually(lambda: '"outcome": "ok"' in result.text, f"the fired job: {result.text}")

    # (moving messages is tests/unit/test_console_actions.py's: here, the button's whole way)
    Select(chrome.find_element(By.ID, "redrive-queue")).select_by_visible_text("thumbnails-dlq")
    chrome.find_element(By.CSS_SELECTOR, 'form[data-action="redrive"] button').click()
    eventually(lambda: "thumbnails-dlq: 0 moved back to" in result.text, f"redrive: {result.text}")

    Select(chrome.find_element(By.ID, "test-handler")).select_by_value("onboard_users")
    body = chrome.find_element(By.ID, "test-body")
    body.clear()
    body.send_keys('{"event_type": "user-created", "user": {"user_id": "nobody"}}')
    chrome.find_element(By.CSS_SELECTOR, 'form[data-action="test-event"] button').click()
    eventually(lambda: "console-" in result.text, f"the sent event: {result.text}")
    sent_id = chrome.find_element(By.ID, "filter-correlation").get_attribute("value")
    assert sent_id and sent_id.startswith("console-")

    def followed() -> list[dict[str, str]]:
        rows = visible_rows(chrome)  # the filtered table, once the page has fetched it
        return rows if rows and all(r["correlation_id"] == sent_id for r in rows) else []

    rows = eventually(followed, "the test event's invocation")
    assert {r["handler"] for r in rows} == {"onboard_users"}, rows
    assert rows[0]["source"] == "sqs: onboarding"


def test_bad_actions_get_a_clear_4xx_and_the_page_escapes_what_it_shows(console: str) -> None:
    sent = requests.post(
        f"{console}/actions/test-event",
        timeout=10,
        json={"handler": "onboard_users", "body": "{not json"},
    )
    assert sent.status_code == 400 and "not JSON" in sent.json()["error"]["message"]
    form = requests.post(f"{console}/actions/fire", data={"job": "x"}, timeout=10)
    assert form.status_code == 415
    foreign = requests.post(
        f"{console}/actions/fire",
        json={"job": "sweep_stuck_orders"},
        headers={"Origin": "https://evil.example"},
        timeout=10,
    )
    assert foreign.status_code == 403
    unknown = requests.post(f"{console}/actions/fire", json={"job": "nope"}, timeout=10)
    assert unknown.status_code == 400 and "sweep_stuck_orders" in unknown.text
    assert requests.get(f"{console}/panels/nope", timeout=10).status_code == 404
    marked = requests.get(
        f"{console}/", params={"correlation_id": "<script>x</script>"}, timeout=10
    )
    assert marked.status_code == 200
    assert "<script>x</script>" not in marked.text and "&lt;script&gt;x" in marked.text


def test_the_stack_panel_reads_every_kind_of_resource(console: str) -> None:
    panel = requests.get(f"{console}/panels/stack", timeout=30)
    assert panel.status_code == 200
    assert "Could not read" not in panel.text, panel.text
    for resource in ("users", "onboarding-dlq", "uploads", "telemetry", "order-workflow"):
        assert f'data-resource="{resource}"' in panel.text, resource
