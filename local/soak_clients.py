"""The soak's clients (`local.soak`): HTTP with a good client's retry policy, real
registrations and sign-ins, and the ledger of every request (status, latency) and of every
write the API accepted, for `soak_checks` to look for afterwards.

A 503 or 429 is sent again after its `Retry-After` (a bounded number of times, and only
for waits up to `RETRY_CAP_S`), with the same idempotency key where the API has one
(orders) and the same event ids (telemetry); an answer that never came is tried again only
where that is safe.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_RETRIES = 4
RETRY_CAP_S = 5.0
TIMEOUT_S = 30.0
PASSWORD = "Soak-Test-Passw0rd!"


@dataclass
class Attempt:
    kind: str
    status: int  # 0: no answer (connection error or timeout)
    latency_s: float


@dataclass
class User:
    email: str
    user_id: str = ""
    token: str = ""
    name: str = ""


@dataclass
class Ledger:
    """What was sent and what the API accepted (thread-safe through `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: list[Attempt] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    #: user_id -> email, every user whose confirmation was answered 201
    users: dict[str, str] = field(default_factory=dict)
    #: user_id -> [(bio, certain)] in the order sent (uncertain: no answer came)
    bios: dict[str, list[tuple[str, bool]]] = field(default_factory=lambda: defaultdict(list))
    #: event_id -> (user_id, table key fields)
    events: dict[str, dict[str, str]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # image_id -> owner
    #: order_id -> {user_id, key, sku, quantity, variant}
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_ids_by_key: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    notes: Counter[str] = field(default_factory=Counter)

    #: note -> the request ids of its first few occurrences
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, what: str, request_id: str = "") -> None:
        with self.lock:
            self.notes[what] += 1
            if request_id and len(self.examples[what]) < 3:
                self.examples[what].append(request_id)


class Client:
    """HTTP with the soak's retry policy; every attempt goes into the ledger."""

    def __init__(self, api: str, ledger: Ledger, rng: random.Random) -> None:
        self.api, self.ledger, self._rng = api.rstrip("/"), ledger, rng
        self._local = threading.local()

    def _session(self) -> Any:
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def call(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        token: str = "",
        safe: bool = True,
        **options: Any,
    ) -> Any:
        """The last answer (None if none came). `safe`: an attempt that got no answer may be
        made again (GET, PUT, a request with an idempotency key or stable ids)."""
        import requests

        headers = dict(options.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if not url.startswith("http"):
            url = self.api + url
        for attempt in range(MAX_RETRIES + 1):
            started = time.perf_counter()
            try:
                response = self._session().request(
                    method, url, headers=headers, timeout=TIMEOUT_S, **options
                )
                status = response.status_code
            except requests.RequestException:
                response, status = None, 0
            with self.ledger.lock:
                self.ledger.attempts.append(Attempt(kind, status, time.perf_counter() - started))
            if attempt == MAX_RETRIES:
                return self._final(kind, method, response)
            if status in (429, 503):
                wait = float(response.headers.get("Retry-After") or 1)
                if wait > RETRY_CAP_S:
                    return self._final(kind, method, response)
                time.sleep(wait + 0.2 * self._rng.random())
            elif status == 0 and safe:
                time.sleep(0.5)
            else:
                return self._final(kind, method, response)
        return None

    def _final(self, kind: str, method: str, response: Any) -> Any:
        """The answer the operation gets; a refusal or a failure is noted with its id."""
        if response is None or response.status_code >= 400:
            request_id = "" if response is None else response.headers.get("x-amzn-RequestId", "")
            self.ledger.note(f"{kind} {method}: {answer_of(response, with_id=False)}", request_id)
        return response


def answer_of(response: Any, with_id: bool = True) -> str:
    """A final answer in a few words, for the notes: status, error code, request id."""
    if response is None:
        return "no answer"
    try:
        code = response.json().get("error", {}).get("code", "")
    except ValueError:
        code = response.text[:60]
    request_id = response.headers.get("x-amzn-RequestId", "") if with_id else ""
    return f"{response.status_code} {code} {request_id}".strip()


def register(client: Client, emulator_url: str, email: str, name: str) -> str | None:
    """Both steps of a registration, the code read from the emulator's mail; the user id
    once the confirmation was answered 201 (None otherwise)."""
    asked = client.call("register", "POST", "/register", json={"email": email, "name": name})
    if asked is None or asked.status_code != 202:
        return None
    code = _mailed_code(client.ledger, emulator_url, email, timeout=20)
    if code is None:
        return None
    body = {"email": email, "code": code, "password": PASSWORD}
    confirmed = client.call("register", "POST", "/register/confirm", json=body, safe=False)
    if confirmed is None or confirmed.status_code != 201:
        client.ledger.note("register: not confirmed")
        return None
    user_id = str(confirmed.json()["user_id"])
    with client.ledger.lock:
        client.ledger.users[user_id] = email
    return user_id


def _mailed_code(ledger: Ledger, emulator_url: str, email: str, timeout: float) -> str | None:
    """The code mailed to `email` (`local.mailbox`), reading the emulator's state again when
    that read fails: its dump of every service's state is a 500 now and then while handlers
    change that state at the same time (counted in the notes)."""
    import urllib.error

    from local.mailbox import newest_code

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code = newest_code(emulator_url, email)
        except (urllib.error.URLError, OSError, ValueError) as problem:
            ledger.note(f"mailbox read failed: {problem}"[:80])
            code = None
        if code is not None:
            return code
        time.sleep(0.3)
    ledger.note("register: no code mailed")
    return None


def sign_in(state: dict[str, Any], email: str, password: str = PASSWORD) -> str:
    """An access token from the emulator's user pool (USER_PASSWORD_AUTH), as clients do."""
    from local.soak_checks import aws

    answer = aws(state, "cognito-idp").initiate_auth(
        ClientId=state["resources"]["UserPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )
    return str(answer["AuthenticationResult"]["AccessToken"])
