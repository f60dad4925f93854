"""The erasure's and the export's AWS adapters against moto in process, provisioned from
infra/resources.json: a user's orders pseudonymised (`orders.owner_data`), the follow-up
pass (SQS), the sign-out (Cognito)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest

from chalicelib.core import aws as aws_clients
from chalicelib.core.dynamo import from_item
from chalicelib.orders import model
from chalicelib.orders.owner_data import DynamoOrderOwnerData, erased_owner
from chalicelib.orders.records import DynamoOrders, claim_key
from chalicelib.orders.shipping import DynamoTestCarrier
from chalicelib.search.repository import DynamoSearchIndex
from chalicelib.search.service import SearchService
from chalicelib.users.erasure import SqsFollowUps
from chalicelib.users.identity import CognitoIdentityDirectory
from tests.unit.orders_aws import ADDRESS, ALICE, BOB, ORDERS, SHIPMENTS, new_order
from tests.unit.test_search_indexing import insert, remove

PERSONAL = ("name", "line1", "city", "postal_code")
#: The erasure's pseudonym for ALICE (random in the app: `users.erasure.new_pseudonym`).
PSEUDONYM, OTHER_PSEUDONYM = "5f" * 16, "a0" * 16


@pytest.fixture
def owner_data(aws: dict[str, str]) -> DynamoOrderOwnerData:
    return DynamoOrderOwnerData(ORDERS, SHIPMENTS)


def stored(order_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=ORDERS, Key={"pk": {"S": f"ORDER#{order_id}"}}, ConsistentRead=True
    )
    return from_item(item["Item"])


def place(owner: str, status: str, key: str | None = None) -> dict[str, Any]:
    """An order of `owner` in `status`, shipped (a carrier record) if it completed."""
    order = new_order(owner)
    DynamoOrders(ORDERS).create(order, (key, "fingerprint") if key else None)
    if status != model.PENDING:
        DynamoOrders(ORDERS).update(order["order_id"], status=status)
    if status == model.COMPLETED:
        DynamoTestCarrier(SHIPMENTS).create_shipment(order["order_id"], ADDRESS, [("MUG", 2)])
    return order


def shipment(order_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(TableName=SHIPMENTS, Key={"order_id": {"S": order_id}})
    return from_item(item["Item"])


def test_ended_orders_keep_the_money_and_lose_the_person(owner_data: DynamoOrderOwnerData) -> None:
    done = place(ALICE, model.COMPLETED, key="checkout-1")
    failed = place(ALICE, model.FAILED)
    open_order = place(ALICE, model.PENDING)
    bobs = place(BOB, model.COMPLETED)

    assert owner_data.erase(ALICE, PSEUDONYM) == {"orders": 2, "orders_open": 1}

    for order in (done, failed):
        kept = stored(order["order_id"])
        assert kept["owner_id"] == f"erased-{PSEUDONYM}" == erased_owner(PSEUDONYM)
        assert kept["shipping_address"] == {"country": "DE"}
        assert "payment_method" not in kept and "idempotency_claim" not in kept
        for kept_field in ("order_id", "lines", "total_amount", "currency", "created_at"):
            assert kept[kept_field] == order[kept_field]
        assert ALICE not in json.dumps(kept)
    # The Idempotency-Key's claim (its key holds the owner's id) is gone.
    claim = boto3.client("dynamodb").get_item(TableName=ORDERS, Key=claim_key(ALICE, "checkout-1"))
    assert "Item" not in claim
    # The carrier's record keeps the parcel, not the address.
    parcel = shipment(done["order_id"])
    assert parcel["address"] == {"country": "DE"} and parcel["tracking_number"]
    # An open order still needs its address and owner (its workflow runs on).
    assert stored(open_order["order_id"])["owner_id"] == ALICE
    assert stored(open_order["order_id"])["shipping_address"] == ADDRESS
    # Nobody else's orders change.
    assert stored(bobs["order_id"])["owner_id"] == BOB
    assert shipment(bobs["order_id"])["address"] == ADDRESS


def test_erasing_again_changes_nothing_more_and_finishes_ended_orders(
    owner_data: DynamoOrderOwnerData,
) -> None:
    first = place(ALICE, model.CANCELLED)
    later = place(ALICE, model.PENDING)
    owner_data.erase(ALICE, PSEUDONYM)
    before = stored(first["order_id"])
    DynamoOrders(ORDERS).update(later["order_id"], status=model.COMPLETED)
    assert owner_data.erase(ALICE, PSEUDONYM) == {"orders": 1, "orders_open": 0}
    assert stored(first["order_id"]) == before
    assert stored(later["order_id"])["owner_id"] == erased_owner(PSEUDONYM)
    # Another erasure's pseudonym (a duplicated event) changes no order already erased.
    assert owner_data.erase(ALICE, OTHER_PSEUDONYM) == {"orders": 0, "orders_open": 0}
    assert stored(first["order_id"]) == before
    assert owner_data.export(ALICE) == []


def test_the_export_lists_every_order_of_the_owner_as_the_api_shows_it(
    owner_data: DynamoOrderOwnerData,
) -> None:
    orders = [place(ALICE, model.COMPLETED) for _ in range(3)]
    place(BOB, model.COMPLETED)
    exported = owner_data.export(ALICE)
    assert {o["order_id"] for o in exported} == {o["order_id"] for o in orders}
    assert all(o["shipping_address"] == ADDRESS and o["owner_id"] == ALICE for o in exported)
    assert all(set(o) <= {*model.VIEW_FIELDS, "steps"} for o in exported)


def test_the_owners_orders_are_read_past_the_first_page(
    owner_data: DynamoOrderOwnerData, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = [place(ALICE, model.COMPLETED) for _ in range(5)]
    client = aws_clients.client("dynamodb")
    query = client.query
    monkeypatch.setattr(client, "query", lambda **request: query(**request, Limit=2))
    owner_data = DynamoOrderOwnerData(ORDERS, SHIPMENTS, client=lambda: client)
    assert len(owner_data.export(ALICE)) == 5
    assert owner_data.erase(ALICE, PSEUDONYM) == {"orders": 5, "orders_open": 0}
    assert all(stored(o["order_id"])["owner_id"] != ALICE for o in orders)


@pytest.mark.parametrize(
    "pseudonym",
    [ALICE, BOB, "", PSEUDONYM.upper(), PSEUDONYM[:-1], f"erased-{PSEUDONYM}"],
    ids=["owner", "another-user", "empty", "upper-case", "short", "prefixed"],
)
def test_orders_are_never_handed_to_anything_but_a_pseudonym(
    owner_data: DynamoOrderOwnerData, pseudonym: str
) -> None:
    order = place(ALICE, model.COMPLETED)
    with pytest.raises(ValueError):
        owner_data.erase(ALICE, pseudonym)
    assert stored(order["order_id"])["owner_id"] == ALICE


def test_a_pass_failing_after_an_order_leaves_nothing_of_it_for_later_passes_to_miss(
    owner_data: DynamoOrderOwnerData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pseudonymised, an order leaves the owner index and no later pass finds it: its
    shipment's address and its claim (whose key holds the id) go before, so a pass that
    fails on one order has finished the orders it pseudonymised."""
    orders = [place(ALICE, model.COMPLETED, key=f"checkout-{i}") for i in range(2)]
    client = aws_clients.client("dynamodb")
    update = client.update_item

    def shipments_throttled(**request: Any) -> Any:
        if request["TableName"] == SHIPMENTS:
            raise ConnectionError("throttled")
        return update(**request)

    monkeypatch.setattr(client, "update_item", shipments_throttled)
    erasing = DynamoOrderOwnerData(ORDERS, SHIPMENTS, client=lambda: client)
    with pytest.raises(ConnectionError):
        erasing.erase(ALICE, PSEUDONYM)
    monkeypatch.setattr(client, "update_item", update)
    assert owner_data.erase(ALICE, PSEUDONYM)["orders"] == 2  # the retry finds them all
    for order in orders:
        assert stored(order["order_id"])["owner_id"] == erased_owner(PSEUDONYM)
        assert shipment(order["order_id"])["address"] == {"country": "DE"}
    for i in range(2):
        claim = boto3.client("dynamodb").get_item(
            TableName=ORDERS, Key=claim_key(ALICE, f"checkout-{i}")
        )
        assert "Item" not in claim


def test_a_follow_up_pass_is_a_delayed_message_on_the_erasure_queue(
    aws: dict[str, str],
) -> None:
    follow_ups = SqsFollowUps(lambda: aws["UserErasureQueueUrl"])
    follow_ups.schedule('{"event_type":"user-deleted"}', 0)
    sqs = boto3.client("sqs")
    [message] = sqs.receive_message(QueueUrl=aws["UserErasureQueueUrl"])["Messages"]
    assert json.loads(message["Body"]) == {"event_type": "user-deleted"}


def test_signing_out_everywhere_is_fine_for_an_identity_already_gone(
    aws: dict[str, str],
) -> None:
    idp = boto3.client("cognito-idp")
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    directory = CognitoIdentityDirectory(lambda: aws["UserPoolId"])
    sub = directory.create(email, "Ada", "Corr3ct-Horse!")
    calls: list[str] = []
    session = aws_clients.session()
    record = lambda model, **_: calls.append(model.name)  # noqa: E731
    session.events.register("before-parameter-build.cognito-idp", record)
    aws_clients.reset_clients()
    try:
        directory.sign_out_everywhere(sub)
        directory.delete(sub)
        directory.sign_out_everywhere(sub)  # gone: fine
    finally:
        session.events.unregister("before-parameter-build.cognito-idp", record)
        aws_clients.reset_clients()
    assert calls.count("AdminUserGlobalSignOut") == 2
    with pytest.raises(idp.exceptions.UserNotFoundException):
        idp.admin_get_user(UserPoolId=aws["UserPoolId"], Username=sub)


# --- the search index: nothing of a removed user's words stays -----------------------------

SEARCH_TABLE = "serverless-app-dev-search"


def search_items() -> list[dict[str, Any]]:
    pages = boto3.client("dynamodb").get_paginator("scan").paginate(TableName=SEARCH_TABLE)
    return [item for page in pages for item in page["Items"]]


def test_a_removed_users_own_words_leave_the_vocabulary_and_shared_ones_stay(
    aws: dict[str, str],
) -> None:
    index = DynamoSearchIndex(SEARCH_TABLE)
    keeper = SearchService(index, profiles=None)
    ada = {"user_id": ALICE, "email": "ada@example.com", "name": "Ada Zqlovelace",
           "bio": "Shared words", "created_at": "2026-11-26T00:00:01.000000Z"}  # fmt: skip
    bob = {"user_id": BOB, "email": "bob@example.com", "name": "Bob Shared",
           "created_at": "2026-11-26T00:00:02.000000Z"}  # fmt: skip
    keeper.apply_stream_records([insert(ada), insert(bob)])
    assert "zqlovelace" in json.dumps(search_items())

    keeper.apply_stream_records([remove(ada)])
    left = json.dumps(search_items())
    for own in ("zqlovelace", "ada", ALICE, "words"):
        assert own not in left, own  # no posting, no prefix or neighbourhood entry
    assert index.words_with_prefix("sh", 10) == ["shared"]  # still Bob's
    assert index.postings("shared", 10) == [(bob["created_at"], BOB)]
    assert index.unknown_words(["bob", "shared", "example"]) == set()

    keeper.apply_stream_records([remove(ada)])  # a retried batch: harmless
    assert json.dumps(search_items()) == left


def test_a_word_indexed_again_while_it_is_removed_is_written_back(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user gets the word between the check that nobody has it and its removal:
    the second look finds that user's posting and writes the word back whole."""
    index = DynamoSearchIndex(SEARCH_TABLE)
    keeper = SearchService(index, profiles=None)
    ada = {"user_id": ALICE, "email": "ada@example.com", "name": "Zqrare",
           "created_at": "2026-11-26T00:00:01.000000Z"}  # fmt: skip
    bob = {"user_id": BOB, "email": "bob@example.com", "name": "Zqrare",
           "created_at": "2026-11-26T00:00:02.000000Z"}  # fmt: skip
    keeper.apply_stream_records([insert(ada)])
    remove_words = index.remove_words

    def bob_arrives_first(words: Any) -> None:
        keeper.apply_stream_records([insert(bob)])  # sees the word as known: adds nothing
        remove_words(words)

    monkeypatch.setattr(index, "remove_words", bob_arrives_first)
    keeper.apply_stream_records([remove(ada)])
    assert index.postings("zqrare", 10) == [(bob["created_at"], BOB)]
    assert index.unknown_words(["zqrare"]) == set()
    assert index.words_with_prefix("zq", 10) == ["zqrare"]
