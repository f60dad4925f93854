"""`make code EMAIL=ada@example.com`: the newest verification code mailed to an address.

The emulator keeps every mail SES was asked to send (its outbox, `local/outbox.py`); this reads the
newest code-bearing one to the address, as its owner would read their inbox. It waits up to
a few seconds for one to arrive, and exits with 1 if none does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from typing import Any

#: Mails read at most (all a local stack sends in practice).
ALL_MAILS = 1_000_000
_CODE = re.compile(r"code: ([0-9]{6})")


def code_in(subject: str | None) -> str | None:
    """The verification code a mail's subject carries (`users.mailer.code_message`)."""
    found = _CODE.search(subject or "")
    return found.group(1) if found else None


def mails_to(emulator_url: str, email: str) -> list[dict[str, Any]]:
    """Every mail the emulator's SES sent to `email` (case aside), oldest first."""
    url = f"{emulator_url}/_local/outbox?limit={ALL_MAILS}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        data = json.load(answer)
    wanted = email.casefold()
    return [
        message
        for message in data.get("mails", [])
        if any(wanted == a.casefold() for to in message["destinations"].values() for a in to)
    ]


def newest_code(emulator_url: str, email: str, after: int = 0) -> str | None:
    """The code of the newest code mail to `email` beyond the first `after` mails to it."""
    for message in reversed(mails_to(emulator_url, email)[after:]):
        code = code_in(message.get("subject"))
        if code is not None:
            return code
    return None


def wait_for_code(emulator_url: str, email: str, after: int = 0, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code = newest_code(emulator_url, email, after)
        if code is not None:
            return code
        if time.monotonic() > deadline:
            raise LookupError(f"no code was mailed to {email}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("email")
    args = parser.parse_args(argv)
    from local.provision import STATE_DIR
    from local.stack import running_state

    state = running_state(STATE_DIR)
    if state is None:
        return 1
    try:
        print(wait_for_code(state["emulator_url"], args.email))
    except LookupError as missing:
        print(missing, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
