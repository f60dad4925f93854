"""What the system sent, read straight from the emulator's memory: the mails SES sent and
the messages published to SNS topics. For the local console (`local.console.activity`).

moto keeps both (SES's sent messages, each topic's sent notifications) but offers them only
in its whole-state dump (`/moto-api/data.json`), which walks every table's items too: a page
polling it every few seconds would cost the emulator more than the app's own calls once the
tables fill. This answers just those, newest last, as JSON:

    GET /_local/outbox?limit=100     {"mails": [...], "published": {"<topic name>": [...]}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

PATH = "/_local/outbox"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000_000


def outbox(limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The newest `limit` mails, and the newest `limit` messages of each topic."""
    from moto.ses.models import ses_backends
    from moto.sns.models import sns_backends

    mails: list[dict[str, Any]] = []
    for backend in _backends(ses_backends):
        mails += [_mail(message) for message in list(backend.sent_messages)[-limit:]]
    published: dict[str, list[dict[str, Any]]] = {}
    for backend in _backends(sns_backends):
        for topic in list(backend.topics.values()):
            sent = list(topic.sent_notifications)[-limit:]
            published.setdefault(topic.name, []).extend(_notification(n) for n in sent)
    return {"mails": mails[-limit:], "published": published}


def _backends(backends: Any) -> Iterable[Any]:
    for regions in list(backends.values()):
        yield from list(regions.values())


def _mail(message: Any) -> dict[str, Any]:
    raw = getattr(message, "raw_data", None)
    return {
        "id": getattr(message, "id", ""),
        "source": getattr(message, "source", ""),
        "destinations": getattr(message, "destinations", {}) or {},
        "subject": getattr(message, "subject", "") or "",
        "body": getattr(message, "body", None) or (raw if isinstance(raw, str) else ""),
    }


def _notification(sent: Any) -> dict[str, Any]:
    message_id, message, subject = [*list(sent), None, None, None][:3]
    return {"message_id": message_id, "message": message, "subject": subject}


class OutboxEndpoint:
    """WSGI: answers GET /_local/outbox, hands every other request to `app`."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return _answer(start_response, "405 Method Not Allowed", {"error": "GET only"})
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            limit = int(query.get("limit", [DEFAULT_LIMIT])[-1])
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            return _answer(start_response, "400 Bad Request",
                           {"error": f"limit is a whole number from 1 to {MAX_LIMIT}"})  # fmt: skip
        return _answer(start_response, "200 OK", outbox(limit))


def _answer(start_response: Callable[..., Any], status: str, body: Any) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])  # fmt: skip
    return [data]
