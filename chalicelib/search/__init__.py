"""User search: an index of the words of users' names, emails and bios, kept up to date by
the users table's stream, and queried by word, prefix and typo.

DynamoDB actions used: the search route `Query` on the search table and `BatchGetItem` on
the users table; the stream consumer `BatchWriteItem` and `BatchGetItem` on the search table.
No Scan anywhere.
"""

from __future__ import annotations

from functools import cache

from chalicelib.search.service import SearchService


@cache
def search_service() -> SearchService:
    """The process's search service, wired to DynamoDB on first use."""
    from chalicelib.core.settings import get_settings
    from chalicelib.search.repository import DynamoSearchIndex
    from chalicelib.users.public import DynamoPublicProfiles

    settings = get_settings()
    return SearchService(
        DynamoSearchIndex(settings.search_table_name),
        DynamoPublicProfiles(settings.users_table_name),
    )
