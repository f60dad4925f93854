"""Deleting a user on the running local stack, over real HTTP: the account is closed at
once, and once the erasure has run (users-table stream -> user-deleted -> erasure queue),
nothing of the user is left in any table or bucket of the emulator, not even the id, but
the pseudonymised financial records (the order, the transaction), which name nobody. (What
is kept for a while names the user by a digest, or not at all: the images domain's
tombstones and erased-owner marker, the data lake's pseudonym tombstone, rate-limit
counters.)"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from chalicelib.core import clock
from chalicelib.telemetry.pseudonyms import user_digest
from tests.integration.test_images import jpeg, settled
from tests.integration.test_local_stack import PASSWORD, eventually, register, sign_in

pytestmark = pytest.mark.integration


#: Where the telemetry processor archives events: never rewritten, it holds the user's events
#: under a pseudonym (chalicelib/telemetry/pseudonyms.py), never the id or personal data.
DATA_LAKE_PREFIX = "telemetry/"


def table_items(dynamodb: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every item of every table the emulator has, as (table, item)."""
    for page in dynamodb.get_paginator("list_tables").paginate():
        for table in page["TableNames"]:
            for scanned in dynamodb.get_paginator("scan").paginate(TableName=table):
                for item in scanned["Items"]:
                    yield table, item


def bucket_objects(s3: Any) -> Iterator[tuple[str, str, bytes]]:
    """Every object of every bucket, as (bucket, key, content), gzip decompressed."""
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for listed in page.get("Contents", []):
                try:
                    body = s3.get_object(Bucket=name, Key=listed["Key"])["Body"].read()
                except s3.exceptions.NoSuchKey:
                    continue  # deleted since the listing (the erasure runs meanwhile)
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                yield name, listed["Key"], body


@dataclass
class Found:
    """Where the user's id, email, name or phone still are, by kind."""

    leftovers: list[str] = field(default_factory=list)
    lake: list[str] = field(default_factory=list)


def search(emulator: Any, stage: str, user_id: str, personal: list[str]) -> Found:
    """Every table item, bucket key and object holding the user's id or personal data (case
    aside), whatever its TTL; an object of the data lake's archive is `lake`."""
    needles = [user_id.casefold(), *(p.casefold() for p in personal)]
    found = Found()
    for table, item in table_items(emulator("dynamodb")):
        # Binary attributes (a pseudonym's secret) as their repr: ASCII in them still shows.
        text = json.dumps(item, ensure_ascii=False, default=repr)
        if any(n in text.casefold() for n in needles):
            found.leftovers.append(f"{table} {text[:300]}")
    for bucket, key, body in bucket_objects(emulator("s3")):
        text = (key + "\n" + body.decode("utf-8", errors="replace")).casefold()
        if any(n in text for n in needles):
            lake = bucket.endswith("-data-lake") and key.startswith(DATA_LAKE_PREFIX)
            (found.lake if lake else found.leftovers).append(f"{bucket}/{key}")
    return found


def place_order(api: str, own: dict[str, str], admin: dict[str, str], name: str) -> str:
    sku = f"IT-{uuid.uuid4().hex[:8].upper()}"
    product = {"name": f"Product {sku}", "unit_amount": 1500, "available": 5}
    put = requests.put(f"{api}/inventory/{sku}", json=product, headers=admin, timeout=10)
    assert put.status_code == 200, put.text
    body = {
        "lines": [{"sku": sku, "quantity": 1}],
        "payment_method": "pm_card_visa",
        "shipping_address": {"name": name, "line1": "12 Erasure Street", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"},
    }  # fmt: skip
    headers = {**own, "Idempotency-Key": uuid.uuid4().hex}
    placed = requests.post(f"{api}/orders", json=body, headers=headers, timeout=30)
    assert placed.status_code == 202, placed.text
    return str(placed.json()["order_id"])


def upload(api: str, headers: dict[str, str], data: bytes) -> str:
    """POST /images (with the size, which upload quotas count), then the presigned POST."""
    body = {"content_type": "image/jpeg", "size": len(data)}
    created = requests.post(f"{api}/images", json=body, headers=headers, timeout=10)
    assert created.status_code == 202, created.text
    form = created.json()["upload"]
    files = {"file": ("f", data, "image/jpeg")}
    sent = requests.post(form["url"], data=form["fields"], files=files, timeout=30)
    assert sent.status_code in (200, 201, 204), sent.text
    return str(created.json()["image_id"])


def exported(api: str, headers: dict[str, str], user_id: str) -> requests.Response:
    return requests.get(f"{api}/users/{user_id}/export", headers=headers, timeout=30)


@dataclass
class Erased:
    user_id: str
    order_id: str
    transaction_id: str
    transaction_at: str  # when it occurred: how the kept (pseudonymised) one is found
    pseudonym: str  # the user's in the data lake, read before the deletion
    found: Found


def lake_pseudonym(emulator: Any, stack: dict[str, Any], user_id: str) -> str | None:
    """The user's pseudonym in the data lake, once the processor has made it."""
    item = (
        emulator("dynamodb")
        .get_item(
            TableName=stack["environment"]["TELEMETRY_PSEUDONYMS_TABLE_NAME"],
            Key={"user_digest": {"S": user_digest(user_id)}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    return item.get("pseudonym", {}).get("S")


def lake_holds(emulator: Any, stack: dict[str, Any], text: str) -> bool:
    """Whether an object of the data lake's archive holds `text`."""
    s3, bucket = emulator("s3"), stack["resources"]["DataLakeBucketName"]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="telemetry/"):
        for listed in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
            if text.encode() in gzip.decompress(body):
                return True
    return False


@pytest.fixture(scope="module")
def erased(api: str, stack: dict[str, Any], emulator: Any, admin_headers: dict[str, str]) -> Erased:
    """A user with a profile, an image, telemetry (a transaction too) and an order, deleted;
    then what is left once the erasure has run."""
    word = f"zq{uuid.uuid4().hex[:10]}"
    name = f"Erasmus {word.capitalize()}"
    phone = f"+4915{random.randrange(10**8, 10**9)}"
    user = register(api, name=name, phone=phone, bio=f"Collects {word} stamps")
    user_id, email = user["user_id"], user["email"]
    own = sign_in(stack, email)
    idp = emulator("cognito-idp")
    refresh = idp.initiate_auth(
        ClientId=stack["resources"]["UserPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]["RefreshToken"]

    # Something of everything: an image through the pipeline, activity and a transaction
    # through the telemetry stream, an order through its workflow.
    image_id = upload(api, own, jpeg(640, 480))
    assert eventually(lambda: settled(api, own, image_id))["status"] == "ready"
    # Its bytes kept under originals/ (the upload removed): a key shape the erasure must
    # remove too (the search below looks at every key of every bucket).
    uploads = emulator("s3").list_objects_v2(Bucket=f"serverless-app-{stack['stage']}-uploads")
    assert f"originals/{user_id}/{image_id}.jpg" in [o["Key"] for o in uploads["Contents"]]
    transaction_id, transaction_at = f"pay-{word}", clock.timestamp()
    events = [
        {"event_type": "user_activity", "user_id": user_id, "activity_type": "login",
         "session_id": f"s-{word}", "timestamp": clock.timestamp()},
        {"event_type": "transaction", "transaction_id": transaction_id, "user_id": user_id,
         "amount": 42.5, "currency": "EUR", "merchant": "Bookshop", "timestamp": transaction_at},
    ]  # fmt: skip
    sent = requests.post(f"{api}/events", json={"events": events}, headers=own, timeout=10)
    assert sent.status_code == 202 and sent.json()["accepted"] == 2, sent.text
    order_id = place_order(api, own, admin_headers, name)

    def everything_stored() -> dict[str, Any] | None:
        answer = exported(api, own, user_id)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        orders = document.get("orders") or []
        ready = (
            document.get("images")
            and document.get("activities")
            and document.get("transactions")
            and orders
            and orders[0]["status"] in ("completed", "failed")
        )
        return document if ready else None

    # The export: everything about the user, as one attachment; the owner's or an admin's.
    document = eventually(everything_stored, timeout=60)
    assert document["profile"]["phone"] == phone and document["profile"]["name"] == name
    assert [o["order_id"] for o in document["orders"]] == [order_id]
    assert document["orders"][0]["shipping_address"]["name"] == name
    assert any(t.get("transaction_id") == transaction_id for t in document["transactions"])
    answer = exported(api, admin_headers, user_id)
    assert answer.status_code == 200
    assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    stranger = sign_in(stack, register(api)["email"])
    assert exported(api, stranger, user_id).status_code == 403
    # The data lake has the user's events, under a pseudonym only the pseudonyms table maps
    # (the session id, which holds the unique word, as a digest).
    pseudonym = eventually(lambda: lake_pseudonym(emulator, stack, user_id), timeout=30)
    assert eventually(lambda: lake_holds(emulator, stack, pseudonym), timeout=30)
    # The word only this user has (in name and bio) must leave the search vocabulary too.
    personal = [email, name, phone, word]
    before = search(emulator, stack["stage"], user_id, personal)
    assert before.leftovers, "the search finds the user before the deletion"

    # Delete: the account is unusable at once, whatever the erasure's queue holds.
    assert requests.delete(f"{api}/users/{user_id}", headers=own, timeout=10).status_code == 204
    with pytest.raises(idp.exceptions.ClientError):
        sign_in(stack, email)
    with pytest.raises(idp.exceptions.ClientError):
        idp.initiate_auth(
            ClientId=stack["resources"]["UserPoolClientId"],
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": refresh},
        )
    assert exported(api, admin_headers, user_id).status_code == 404

    # The erasure runs from the stream: poll until no table or bucket holds the user.
    found = Found()

    def done() -> bool:
        nonlocal found
        found = search(emulator, stack["stage"], user_id, personal)
        return not found.leftovers

    with contextlib.suppress(AssertionError):
        eventually(done, timeout=60, every=1.0)
    return Erased(user_id, order_id, transaction_id, transaction_at, pseudonym, found)


def test_nothing_of_a_deleted_user_is_left_in_any_table_or_bucket(
    erased: Erased, stack: dict[str, Any], emulator: Any
) -> None:
    assert erased.found.leftovers == [], "\n".join(erased.found.leftovers)
    # The financial records are kept, pseudonymised: they are there, and name nobody.
    dynamodb = emulator("dynamodb")
    order = dynamodb.get_item(
        TableName=stack["resources"]["OrdersTableName"],
        Key={"pk": {"S": f"ORDER#{erased.order_id}"}},
    )["Item"]
    assert order["owner_id"]["S"].startswith("erased-")
    assert order["shipping_address"]["M"] == {"country": {"S": "DE"}}
    # Random, not derived from the id: whoever has the id cannot compute it to find the order.
    derived = hashlib.sha256(f"order-owner:{erased.user_id}".encode()).hexdigest()[:32]
    assert order["owner_id"]["S"] != f"erased-{derived}"
    kept = [
        item
        for table, item in table_items(dynamodb)
        if table.endswith("-transactions")
        and item.get("occurred_at", {}).get("S") == erased.transaction_at
        and item["user_id"]["S"].startswith("deleted-")
    ]
    assert kept, "the transaction is kept (pseudonymised), not deleted"
    # without the id the client chose (it holds the user's unique word: `search` looked for
    # it in every table too), which could match a payment provider's record
    assert erased.transaction_id not in json.dumps(kept)
    assert kept[0]["amount"] == {"N": "42.5"}


def test_the_data_lake_keeps_nothing_of_a_deleted_user(
    erased: Erased, stack: dict[str, Any], emulator: Any
) -> None:
    """The lake's objects hold neither the id nor anything personal (the events sent had the
    unique word in their session id), and once erased nothing links their pseudonym back:
    no table holds it; the pseudonyms table keeps a tombstone (by a digest of the id)."""
    assert erased.found.lake == [], "\n".join(erased.found.lake)
    assert lake_holds(emulator, stack, erased.pseudonym), "the events themselves are kept"
    holding = [
        table
        for table, item in table_items(emulator("dynamodb"))
        if erased.pseudonym in json.dumps(item, default=repr)
    ]
    assert holding == []
    assert lake_pseudonym(emulator, stack, erased.user_id) is None
