"""Queries followed page by page (`LastEvaluatedKey`), with errors mapped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.dynamodb.errors import map_client_errors

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["query_all"]


async def query_all(
    client: DynamoDBClient, limit: int | None = None, **query: Any
) -> list[dict[str, Any]]:
    """Every item a query returns, following `LastEvaluatedKey`, up to `limit`."""
    items: list[dict[str, Any]] = []
    if limit is not None and limit <= 0:
        return items
    if limit is not None:
        # Pages of `limit` items at most: a filtered query then reads only what it needs.
        query["Limit"] = limit
    with map_client_errors():
        while True:
            page = await client.query(**query)
            items.extend(page.get("Items", []))
            if limit is not None and len(items) >= limit:
                return items[:limit]
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return items
            query["ExclusiveStartKey"] = last_key
