"""The connections table as the core's `ConnectionStore`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adapters.dynamodb.codec import format_time
from adapters.dynamodb.errors import ConditionFailed, map_client_errors
from adapters.dynamodb.items import connection_from_item, connection_item
from adapters.dynamodb.paging import query_all
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.ports import DEFAULT_PAGE_SIZE

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoDBConnectionStore"]


class DynamoDBConnectionStore:
    """The connections table (`ConnectionStore`).

    Args:
        client: an open aiobotocore DynamoDB client (shared; not closed here).
        table_name: the connections table.
    """

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def put(self, connection: Connection) -> None:
        """Store a connection record (replacing any with the same id)."""
        with map_client_errors():
            await self._client.put_item(TableName=self._table, Item=connection_item(connection))

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        """The record, or None."""
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return connection_from_item(item) if item else None

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        """Delete the record; what was deleted, or None."""
        with map_client_errors():
            response = await self._client.delete_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ReturnValues="ALL_OLD",
            )
        item = response.get("Attributes")
        return connection_from_item(item) if item else None

    async def touch(self, connection_id: ConnectionId, at: datetime) -> bool:
        """Set `LastPing`; False (nothing created) when the record does not exist."""
        try:
            with map_client_errors():
                await self._client.update_item(
                    TableName=self._table,
                    Key={"ConnectionID": {"S": connection_id}},
                    UpdateExpression="SET LastPing = :at",
                    ConditionExpression="attribute_exists(ConnectionID)",
                    ExpressionAttributeValues={":at": {"S": format_time(at)}},
                )
        except ConditionFailed:
            return False
        return True

    async def list_by_user(self, user_id: UserId) -> list[Connection]:
        """Connections of one user (`UserIndex`)."""
        return await self._list("UserIndex", "UserID", user_id)

    async def list_by_tenant(self, tenant_id: TenantId) -> list[Connection]:
        """Connections of one tenant (`TenantIndex`)."""
        return await self._list("TenantIndex", "TenantID", tenant_id)

    async def pages_by_user(
        self, user_id: UserId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[Connection]]:
        """Connections of one user, one `Query` page (`Limit=page_size`) at a time."""
        async for page in self._pages("UserIndex", "UserID", user_id, page_size):
            yield page

    async def pages_by_tenant(
        self, tenant_id: TenantId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[list[Connection]]:
        """Connections of one tenant, one `Query` page (`Limit=page_size`) at a time."""
        async for page in self._pages("TenantIndex", "TenantID", tenant_id, page_size):
            yield page

    async def _list(self, index: str, attribute: str, value: str) -> list[Connection]:
        items = await query_all(
            self._client,
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": attribute},
            ExpressionAttributeValues={":v": {"S": value}},
        )
        return [connection_from_item(item) for item in items]

    async def _pages(
        self, index: str, attribute: str, value: str, page_size: int
    ) -> AsyncIterator[list[Connection]]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": attribute},
            "ExpressionAttributeValues": {":v": {"S": value}},
            "Limit": page_size,
        }
        while True:
            with map_client_errors():
                page = await self._client.query(**query)
            items = page.get("Items", [])
            if items:
                yield [connection_from_item(item) for item in items]
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return
            query["ExclusiveStartKey"] = last_key
