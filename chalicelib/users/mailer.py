"""The welcome email, and SES to send it."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from chalicelib.core import aws

APP_NAME = "serverless-app"


def welcome_message(name: str) -> tuple[str, str, str]:
    """Subject, text body and HTML body of the welcome email (the name is escaped in HTML)."""
    subject = f"Welcome to {APP_NAME}, {name}"
    text = (
        f"Hello {name},\n\n"
        f"Your {APP_NAME} account is ready. Sign in with this email address.\n\n"
        f"The {APP_NAME} team\n"
    )
    safe = html.escape(name)
    body = (
        f"<html><body><p>Hello {safe},</p>"
        f"<p>Your {APP_NAME} account is ready. Sign in with this email address.</p>"
        f"<p>The {APP_NAME} team</p></body></html>"
    )
    return subject, text, body


class SesMailer:
    def __init__(self, sender: str, client: Callable[[str], Any] = aws.client) -> None:
        self._sender = sender
        self._client = client

    def send_welcome(self, email: str, name: str) -> None:
        subject, text, body = welcome_message(name)
        self._client("ses").send_email(
            Source=self._sender,
            Destination={"ToAddresses": [email]},
            Message={
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": text, "Charset": "UTF-8"},
                    "Html": {"Data": body, "Charset": "UTF-8"},
                },
            },
        )
