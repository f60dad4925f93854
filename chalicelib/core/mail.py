"""Email through SES, for every domain that mails people (welcome, order updates).

The SES client makes one attempt per call (`core.aws`): a retried SendEmail whose answer was
lost would mail twice, so the caller's retry, guarded by an idempotency record, decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.core import aws


def user_text(text: str, limit: int) -> str:
    """What a user wrote, fit for one line of a mail: control characters and line breaks
    gone, spaces collapsed, at most `limit` characters (an ellipsis marks a cut). Escape it
    too in HTML."""
    import unicodedata

    printable = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    line = " ".join(printable.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


class SesMailer:
    def __init__(self, sender: str, client: Callable[[str], Any] = aws.client) -> None:
        self._sender = sender
        self._client = client

    def send(self, to: str, subject: str, text: str, html: str) -> None:
        """One message with a text and an HTML body (escape what users wrote in `html`)."""
        self._client("ses").send_email(
            Source=self._sender,
            Destination={"ToAddresses": [to]},
            Message={
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": text, "Charset": "UTF-8"},
                    "Html": {"Data": html, "Charset": "UTF-8"},
                },
            },
        )
