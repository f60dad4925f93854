"""The users' emails (verification codes, notices, welcome) and SES to send them.

Codes and notices hold no text a user wrote: they go to an address nobody has proven yet,
and must not carry a stranger's words into someone's inbox. The welcome mail goes to a
proven address and names the user: that name is cut to one short line (`mail.user_text`)
and escaped in HTML.
"""

from __future__ import annotations

import html

from chalicelib.core import mail
from chalicelib.core.aws import APP_NAME

PURPOSES = {
    "registration": "finish creating your account",
    "email-change": "confirm this address as your new sign-in email",
}


def code_message(code: str, purpose: str, minutes: int) -> tuple[str, str, str]:
    """Subject, text and HTML of a verification code's mail: nothing a user wrote in it."""
    why = PURPOSES[purpose]
    subject = f"Your {APP_NAME} code: {code}"
    text = (
        f"Your {APP_NAME} verification code is {code}.\n\n"
        f"Enter it to {why}. It expires in {minutes} minutes and works once.\n"
        "If you did not ask for it, ignore this mail: nothing happens without the code.\n"
    )
    body = (
        f"<html><body><p>Your {APP_NAME} verification code is <b>{code}</b>.</p>"
        f"<p>Enter it to {why}. It expires in {minutes} minutes and works once.</p>"
        "<p>If you did not ask for it, ignore this mail: nothing happens without the code.</p>"
        "</body></html>"
    )
    return subject, text, body


def already_registered_message() -> tuple[str, str, str]:
    """The notice to an address that has an account, instead of a code."""
    subject = f"Someone tried to register with your {APP_NAME} address"
    words = (
        f"Someone asked to register a new {APP_NAME} account with this address, which "
        "already has one. Nothing was changed.",
        "If that was you, sign in with your password instead. If not, ignore this mail.",
    )
    text = "\n\n".join(words) + "\n"
    body = "<html><body>" + "".join(f"<p>{w}</p>" for w in words) + "</body></html>"
    return subject, text, body


def welcome_message(name: str) -> tuple[str, str, str]:
    """Subject, text body and HTML body of the welcome email (the name bounded to a line,
    escaped in HTML)."""
    name = mail.user_text(name, 40)
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

    def send_code(self, email: str, code: str, purpose: str) -> None:
        from chalicelib.users.verification import CODE_LIFETIME

        minutes = int(CODE_LIFETIME.total_seconds() // 60)
        self.send(email, *code_message(code, purpose, minutes))

    def send_already_registered(self, email: str) -> None:
        self.send(email, *already_registered_message())
