"""Users stored before the indexer ran are found after `python -m infra.backfill_search`."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.auth.tokens import Principal
from infra.backfill_search import backfill

ADMIN = Principal("admin-id", frozenset({"admins"}))


def test_users_stored_without_the_stream_are_indexed_by_the_backfill(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.search import search_service
    from chalicelib.users.repository import DynamoUserRepository

    repo = DynamoUserRepository(aws["UsersTableName"])
    for n in range(130):  # more than one Scan page
        user: dict[str, Any] = {
            "user_id": f"00000000-0000-4000-8000-{n:012d}",
            "email": f"user{n}@example.com",
            "name": f"Person{n} Quokka",
            "created_at": f"2026-11-26T00:00:{n % 60:02d}.{n:06d}Z",
            "updated_at": "2026-11-26T00:00:00.000000Z",
            "version": 1,
        }
        repo.add(user, repo.reserve_email(user["email"]))
    assert search_service().search(ADMIN, "quokka", "5", None)["items"] == []

    assert backfill("dev") == 130
    found = search_service().search(ADMIN, "person129", None, None)["items"]
    assert found[0]["email"] == "user129@example.com"  # exact, before one-typo neighbours
    assert len(search_service().search(ADMIN, "quokka", "100", None)["items"]) == 100
    assert backfill("dev") == 130  # again: the same index
    assert len(search_service().search(ADMIN, "quokka", "100", None)["items"]) == 100
