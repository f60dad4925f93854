"""What the users domain gives other domains (`users.public`): public profiles by id, read
from moto's users table, and which user an item of the table is about."""

from __future__ import annotations

from typing import Any

from chalicelib.core import aws as aws_clients
from chalicelib.users.model import public_view
from chalicelib.users.public import DynamoPublicProfiles, user_id_of_key
from tests.unit.test_search_indexing import image, user

USERS_TABLE = "serverless-app-dev-users"


def test_profiles_are_the_public_views_of_the_users_that_exist(aws: dict[str, str]) -> None:
    client = aws_clients.client("dynamodb")
    kim = user(1, name="Kim", phone="+14155550123", bio="hi")
    ann = user(2, name="Ann")
    for profile in (kim, ann):
        client.put_item(TableName=USERS_TABLE, Item=image(profile))
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.dynamodb.BatchGetItem", lambda params, **_: calls.append(params)
    )
    profiles = DynamoPublicProfiles(USERS_TABLE)
    missing = user(3)["user_id"]
    found = profiles.get_many([kim["user_id"], missing, kim["user_id"], ann["user_id"]])
    assert found == {kim["user_id"]: public_view(kim), ann["user_id"]: public_view(ann)}
    assert "version" not in found[kim["user_id"]] and "pk" not in found[kim["user_id"]]
    (call,) = calls  # one call, each id once
    ((_, request),) = call["RequestItems"].items()
    assert len(request["Keys"]) == 3
    assert profiles.get_many([]) == {}
    assert len(calls) == 1  # no call for no ids


def test_user_items_are_told_from_the_other_items_by_key() -> None:
    user_id = "abcdef01-0000-4000-8000-000000000001"
    assert user_id_of_key(f"USER#{user_id}") == user_id
    for other in ("EMAIL#kim@example.com", f"USER#{user_id.upper()}", "USER#", "", user_id):
        assert user_id_of_key(other) is None, other
