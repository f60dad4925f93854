"""The console's invocation rows as rendered: escaped, and a batch that carried the id being
followed shows that id."""

from __future__ import annotations

import jinja2

from infra.paths import PROJECT_DIR
from local.console.recorder import InvocationLog

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROJECT_DIR / "local" / "console" / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def rendered(query: dict[str, str], **row: object) -> str:
    log = InvocationLog()
    fields = {
        "at": "2030-01-01T00:00:00.000+00:00",
        "handler": "h",
        "source": "s",
        "batch_size": 3,
        "duration_ms": 1.0,
        "outcome": "ok",
        "ok": True,
        "correlation_id": "own",
        "correlation_ids": ("a", "b", "own"),
    }
    log.add(**{**fields, **row})
    return TEMPLATES.get_template("_invocations.html").render(
        rows=log.newest(), query=query, total=1
    )


def test_a_batch_that_carried_the_followed_id_shows_it() -> None:
    page = rendered({"correlation_id": "b"})
    assert 'data-correlation="b">b</a>' in page and "one of 3 in the batch" in page
    assert 'title="own: a batch of a, b, own"' in page


def test_without_a_filter_a_row_shows_its_own_id() -> None:
    page = rendered({})
    assert 'data-correlation="own">own</a>' in page and "+ 3 in the batch" in page


def test_what_the_app_logged_is_escaped() -> None:
    page = rendered({}, handler="<img src=x>", outcome="error: <b>", correlation_ids=())
    assert "<img" not in page and "&lt;img src=x&gt;" in page and "&lt;b&gt;" in page
