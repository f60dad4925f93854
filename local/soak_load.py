"""The soak's load (`local.soak`): a seeded mix of operations (`MIX`), each with its
parameters from one generator, sent at a set rate by a few worker threads through the soak's
clients (`soak_clients`), which note what the API accepted.
"""

from __future__ import annotations

import io
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.core import clock
from local.soak_clients import Client, Ledger, User, register

#: Operation -> weight in the mix.
MIX = {
    "register": 3,
    "read": 22,
    "update": 10,
    "list": 5,
    "search": 6,
    "events": 24,
    "image": 10,
    "order": 20,
}
ADDRESS = {
    "name": "Soak Tester",
    "line1": "1 Load Street",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
#: Order variants -> weight: an approved card, a declined one, a carrier that refuses after
#: the charge (the refund is the compensation).
ORDER_VARIANTS = {"ok": 8, "declined": 1, "carrier": 1}


def small_jpeg(seed: int = 1) -> bytes:
    """A 320x240 JPEG (noise, a few KB): cheap to thumbnail on a shared machine."""
    from PIL import Image

    random.seed(seed)
    out = io.BytesIO()
    Image.effect_noise((320, 240), 40).convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


@dataclass
class Workload:
    """The operations, each given its parameters by one seeded generator."""

    state: dict[str, Any]
    client: Client
    admin: str
    skus: list[str]
    tag: str
    photo: bytes
    rng: random.Random

    def plan(self, count: int, users: int) -> list[tuple[str, int, int]]:
        """`count` operations: (kind, user index, its own seed)."""
        kinds, weights = list(MIX), list(MIX.values())
        return [
            (
                self.rng.choices(kinds, weights)[0],
                self.rng.randrange(users),
                self.rng.getrandbits(64),
            )
            for _ in range(count)
        ]

    def run(self, kind: str, user: User, seed: int) -> None:
        rng = random.Random(seed)
        ledger = self.client.ledger
        with ledger.lock:
            ledger.sent[kind] += 1
        if getattr(self, f"_{kind}")(user, rng):
            with ledger.lock:
                ledger.accepted[kind] += 1

    def _register(self, user: User, rng: random.Random) -> bool:
        email = f"soak-{self.tag}-{rng.getrandbits(40):010x}@example.com"
        return register(self.client, self.state["emulator_url"], email, "Soak Joiner") is not None

    def _read(self, user: User, rng: random.Random) -> bool:
        got = self.client.call("read", "GET", f"/users/{user.user_id}", token=user.token)
        return got is not None and got.status_code == 200

    def _update(self, user: User, rng: random.Random) -> bool:
        bio = f"soak bio {rng.getrandbits(48):012x}"
        put = self.client.call(
            "update", "PUT", f"/users/{user.user_id}", token=user.token, json={"bio": bio}
        )
        ok = put is not None and put.status_code == 200
        if ok or put is None or put.status_code >= 500:  # a 5xx or no answer: may have landed
            with self.client.ledger.lock:
                self.client.ledger.bios[user.user_id].append((bio, ok))
        return ok

    def _list(self, user: User, rng: random.Random) -> bool:
        got = self.client.call("list", "GET", "/users?limit=20", token=self.admin)
        return got is not None and got.status_code == 200

    def _search(self, user: User, rng: random.Random) -> bool:
        word = rng.choice([user.name.split()[-1], "soak", user.name.split()[-1][:-1] + "x"])
        got = self.client.call("search", "GET", f"/users/search?q={word}", token=self.admin)
        return got is not None and got.status_code == 200

    def _events(self, user: User, rng: random.Random) -> bool:
        events = [self._event(rng) for _ in range(rng.randint(3, 12))]
        accepted_any = False
        for _ in range(2):  # a second request for the events the stream could not take
            sent = self.client.call(
                "events", "POST", "/events", token=user.token, json={"events": events}
            )
            if sent is None or sent.status_code != 202:
                return accepted_any
            again = []
            for event, result in zip(events, sent.json()["results"], strict=True):
                if result.get("accepted"):
                    accepted_any = True
                    with self.client.ledger.lock:
                        self.client.ledger.events[event["event_id"]] = {
                            "user_id": user.user_id,
                            **event,
                        }
                elif "retry" in str(result.get("reason")):
                    again.append(event)
            if not again:
                break
            events = again
        return accepted_any

    @staticmethod
    def _event(rng: random.Random) -> dict[str, Any]:
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if rng.random() < 0.7:
            return {
                "event_type": "user_activity",
                "event_id": event_id,
                "timestamp": clock.timestamp(),
                "activity_type": rng.choice(["login", "page_view", "search"]),
            }
        return {
            "event_type": "transaction",
            "event_id": event_id,
            "timestamp": clock.timestamp(),
            "transaction_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "amount": round(rng.uniform(5, 200), 2),
            "currency": "EUR",
        }

    def _image(self, user: User, rng: random.Random) -> bool:
        body = {"content_type": "image/jpeg", "size": len(self.photo)}
        asked = self.client.call(
            "image", "POST", "/images", token=user.token, json=body, safe=False
        )
        if asked is None or asked.status_code != 202:
            return False
        form = asked.json()["upload"]
        files = {"file": ("soak.jpg", self.photo, "image/jpeg")}
        sent = self.client.call("upload", "POST", form["url"], data=form["fields"], files=files)
        if sent is None or sent.status_code not in (200, 201, 204):
            return False
        with self.client.ledger.lock:
            self.client.ledger.images[asked.json()["image_id"]] = user.user_id
        return True

    def _order(self, user: User, rng: random.Random) -> bool:
        variant = rng.choices(list(ORDER_VARIANTS), list(ORDER_VARIANTS.values()))[0]
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        sku, quantity = rng.choice(self.skus), rng.randint(1, 2)
        address = {**ADDRESS, **({"postal_code": "00000"} if variant == "carrier" else {})}
        body = {
            "lines": [{"sku": sku, "quantity": quantity}],
            "shipping_address": address,
            "payment_method": "pm_card_declined" if variant == "declined" else "pm_card_visa",
        }
        placed = self.client.call(
            "order",
            "POST",
            "/orders",
            token=user.token,
            json=body,
            headers={"Idempotency-Key": key},
        )
        if placed is None or placed.status_code != 202:
            return False
        order_id = str(placed.json()["order_id"])
        with self.client.ledger.lock:
            self.client.ledger.orders[order_id] = {
                "user_id": user.user_id,
                "key": key,
                "sku": sku,
                "quantity": quantity,
                "variant": variant,
            }
            self.client.ledger.order_ids_by_key[key].add(order_id)
        return True


def drive(
    plan: list[tuple[str, int, int]],
    users: list[User],
    run: Callable[[str, User, int], None],
    rate: float,
    workers: int,
    ledger: Ledger,
    grace_s: float = 15.0,
) -> float:
    """Send the plan at `rate` operations a second: operation i is due at i / rate; each
    user's operations go to one worker (in order), so a user's updates never race. An
    operation not started `grace_s` after the end is skipped. The seconds it took."""
    queues: list[queue.Queue[tuple[float, str, int, int] | None]] = [
        queue.Queue() for _ in range(workers)
    ]
    started = time.monotonic()
    last_due = started + len(plan) / rate + grace_s

    def work(inbox: queue.Queue[tuple[float, str, int, int] | None]) -> None:
        while (item := inbox.get()) is not None:
            _due, kind, user, seed = item
            if time.monotonic() > last_due:
                with ledger.lock:
                    ledger.skipped += 1
                continue
            try:
                run(kind, users[user], seed)
            except Exception as problem:  # a bug of the load itself: counted, never silent
                ledger.note(f"{kind}: {type(problem).__name__}: {problem}"[:160])

    threads = [threading.Thread(target=work, args=(q,), daemon=True) for q in queues]
    for thread in threads:
        thread.start()
    for number, (kind, user, seed) in enumerate(plan):
        due = started + number / rate
        time.sleep(max(0.0, due - time.monotonic()))
        queues[user % workers].put((due, kind, user, seed))
    for inbox in queues:
        inbox.put(None)
    for thread in threads:
        thread.join()
    return time.monotonic() - started
