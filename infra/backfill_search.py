"""Index the users that exist already: `python -m infra.backfill_search --stage prod`.

The search index is kept by the users table's stream, which holds 24 hours of changes; users
stored before the indexer was first deployed (or before a stream outage longer than that) are
not in it. This reads every user once (a paginated Scan: an operations job, never the search
path) and gives them to the same indexer as stream INSERT records. The indexer is idempotent,
so running it again, or while the stream handler runs, leaves the same index.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

PAGE = 100


def user_records(dynamodb: Any, table: str) -> Iterator[list[dict[str, Any]]]:
    """Pages of users as the stream's INSERT records (NEW_AND_OLD_IMAGES) would carry them."""
    paginator = dynamodb.get_paginator("scan")
    pages = paginator.paginate(
        TableName=table,
        FilterExpression="entity = :user",
        ExpressionAttributeValues={":user": {"S": "USER"}},
        PaginationConfig={"PageSize": PAGE},
    )
    for page in pages:
        records = [
            {
                "eventName": "INSERT",
                "eventSource": "aws:dynamodb",
                "dynamodb": {"Keys": {"pk": item["pk"]}, "NewImage": item},
            }
            for item in page.get("Items", [])
        ]
        if records:
            yield records


def backfill(stage: str) -> int:
    """Index every user of `stage`; returns how many."""
    from infra.wiring import stage_environment

    for name, value in stage_environment(stage).items():
        os.environ.setdefault(name, value)
    from chalicelib.core import aws
    from chalicelib.search import search_service
    from chalicelib.users import USERS_TABLE

    indexed = 0
    for records in user_records(aws.client("dynamodb"), USERS_TABLE.name):
        search_service().apply_stream_records(records)
        indexed += len(records)
    return indexed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=["dev", "staging", "prod"])
    args = parser.parse_args(argv)
    print(json.dumps({"stage": args.stage, "indexed_users": backfill(args.stage)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
