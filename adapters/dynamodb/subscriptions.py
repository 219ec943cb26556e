"""The subscriptions table as the core's `SubscriptionStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.dynamodb.codec import format_time, to_item
from adapters.dynamodb.errors import map_client_errors
from adapters.dynamodb.items import subscription_from_item
from adapters.dynamodb.paging import query_all
from adapters.dynamodb.tables import TTL_ATTRIBUTE
from streamer.models import ConnectionId, RequestKey, Subscription

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoDBSubscriptionStore"]


class DynamoDBSubscriptionStore:
    """The subscriptions table (`SubscriptionStore`).

    Args:
        client: an open aiobotocore DynamoDB client (shared; not closed here).
        table_name: the subscriptions table.
    """

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def add(self, subscription: Subscription) -> None:
        """Subscribe; subscribing again replaces the record (idempotent)."""
        item = to_item(
            {
                "RequestID": subscription.key,
                "ConnectionID": subscription.connection_id,
                "CreatedAt": format_time(subscription.created_at),
                TTL_ATTRIBUTE: subscription.expires_at,
            }
        )
        with map_client_errors():
            await self._client.put_item(TableName=self._table, Item=item)

    async def remove(self, key: RequestKey, connection_id: ConnectionId) -> None:
        """Unsubscribe one connection from one request (no error if absent)."""
        await self._delete(key, connection_id)

    async def _delete(self, key: str, connection_id: str) -> bool:
        with map_client_errors():
            response = await self._client.delete_item(
                TableName=self._table,
                Key={"RequestID": {"S": key}, "ConnectionID": {"S": connection_id}},
                ReturnValues="ALL_OLD",
            )
        return bool(response.get("Attributes"))

    async def list_for_request(self, key: RequestKey) -> list[Subscription]:
        """Everyone following a request."""
        items = await query_all(
            self._client,
            TableName=self._table,
            KeyConditionExpression="RequestID = :key",
            ExpressionAttributeValues={":key": {"S": key}},
            ConsistentRead=True,
        )
        return [subscription_from_item(item) for item in items]

    async def list_for_connection(self, connection_id: ConnectionId) -> list[Subscription]:
        """Everything a connection follows (`ConnectionIndex`)."""
        items = await query_all(
            self._client,
            TableName=self._table,
            IndexName="ConnectionIndex",
            KeyConditionExpression="ConnectionID = :cid",
            ExpressionAttributeValues={":cid": {"S": connection_id}},
        )
        return [subscription_from_item(item) for item in items]

    async def remove_for_connection(self, connection_id: ConnectionId) -> int:
        """Drop all of a connection's subscriptions; how many were removed."""
        removed = 0
        for subscription in await self.list_for_connection(connection_id):
            if await self._delete(subscription.key, subscription.connection_id):
                removed += 1
        return removed
