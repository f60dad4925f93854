"""User search: an index of the words of users' names, emails and bios, kept up to date by
the users table's stream, and queried by word, prefix and typo.

DynamoDB actions used: the search route `Query` on the search table and `BatchGetItem` on
the users table; the stream consumer `BatchWriteItem`, `BatchGetItem` and `Query` (whether a
removed user's words are still anyone's) on the search table.
No Scan anywhere.
"""

from __future__ import annotations

from functools import cache

from chalicelib.core.resources import Resource, needs
from chalicelib.search.service import SearchService
from chalicelib.users import PUBLIC_PROFILES_READ, public_profiles

SEARCH_INDEX_TABLE = Resource("SearchIndexTable")


@cache
@needs(SEARCH_INDEX_TABLE.allow("dynamodb:Query"), PUBLIC_PROFILES_READ)
def search_service() -> SearchService:
    """The search behind `GET /users/search`, wired to DynamoDB on first use."""
    from chalicelib.search.repository import DynamoSearchIndex

    return SearchService(DynamoSearchIndex(SEARCH_INDEX_TABLE.name), public_profiles())


@cache
@needs(
    SEARCH_INDEX_TABLE.allow("dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"),
    # Whether a removed user's word is still anyone's (`SearchService._prune`).
    SEARCH_INDEX_TABLE.allow("dynamodb:Query"),
)
def search_index_keeper() -> SearchService:
    """The users table's stream consumer: writes the index, reads no profiles."""
    from chalicelib.search.repository import DynamoSearchIndex

    return SearchService(DynamoSearchIndex(SEARCH_INDEX_TABLE.name), profiles=None)
