"""The welcome email, and SES to send it."""

from __future__ import annotations

import html

from chalicelib.core import mail
from chalicelib.core.mail import APP_NAME


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


class SesMailer(mail.SesMailer):
    def send_welcome(self, email: str, name: str) -> None:
        self.send(email, *welcome_message(name))
