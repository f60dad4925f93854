"""A short `make fuzz` on the test session's stack: a few generated cases per operation of
the API's own OpenAPI document, and a few stateful scenarios along its links. Any 5xx or any
answer the document does not describe fails the test, with the summary `local/fuzz.py` prints
(each failure with a curl command that repeats it)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from local.fuzz import run, summary

pytestmark = pytest.mark.integration

#: About 200 cases in all: enough to meet each operation's common failures in ~1 minute.
EXAMPLES_PER_OPERATION = 6
STATEFUL_SCENARIOS = 10


def test_generated_requests_get_documented_answers(stack: dict[str, Any]) -> None:
    document = requests.get(f"{stack['api_url']}/openapi.json", timeout=30).json()
    operations = sum(
        method in ("get", "put", "post", "delete", "patch")
        for item in document["paths"].values()
        for method in item
    )

    report = run(stack, max_examples=EXAMPLES_PER_OPERATION, stateful_examples=STATEFUL_SCENARIOS)

    print(summary(report))
    assert not report.findings, summary(report)
    assert not report.skipped, report.skipped
    assert len(report.cases) == operations, sorted(report.cases)
    assert report.total >= 150
    assert report.stateful_steps > 0
    # Real ids reached real resources: some of the user's own reads succeeded.
    assert report.statuses["GET /users/{user_id}"][200] > 0
    assert report.statuses["GET /orders/{order_id}"][200] > 0
