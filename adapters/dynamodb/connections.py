"""The connections table as the core's `ConnectionStore`, and the `ActiveConnections`
counter item kept beside the records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from adapters.dynamodb.codec import format_time, parse_time
from adapters.dynamodb.errors import ConditionFailed, map_client_errors
from adapters.dynamodb.items import connection_from_item, connection_item
from adapters.dynamodb.paging import query_all
from adapters.dynamodb.tables import TTL_ATTRIBUTE
from streamer.errors import StoreUnavailable
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.ports import DEFAULT_PAGE_SIZE

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["COUNTER_ID", "ConnectionCount", "DynamoDBConnectionStore"]

logger = logging.getLogger(__name__)

COUNTER_ID: Final = "#ActiveConnections"
"""The `ConnectionID` of the counter item. No connection id holds a `#` (API
Gateway's and the emulator's are base64), and the item has no `UserID` or
`TenantID`, so neither index ever lists it."""
_KEY: Final = {"ConnectionID": {"S": COUNTER_ID}}


@dataclass(frozen=True, slots=True)
class ConnectionCount:
    """The counter item: open connections, and when a scan last set it."""

    count: int
    counted_at: datetime | None
    """When `recount` last corrected it; None when it never did."""


class DynamoDBConnectionStore:
    """The connections table (`ConnectionStore`).

    Beside the records it keeps one counter item (`COUNTER_ID`): `put` of a new
    record adds one, `delete` of an existing one (a disconnect, a gone
    connection) takes one away, each with an atomic `ADD`. The counter and the
    record are two writes, so a crash between them, or a record DynamoDB's TTL
    deletes, makes it drift; `recount` (the sweeper's, hourly) sets it from a
    `Scan`. A failed counter write is logged and never fails the connect or
    disconnect.

    Counter writes are grouped: while one `ADD` is in flight, the deltas of
    other puts and deletes wait and go together in the next (their sum, none
    when it is 0). Each call still returns only once its delta is written, so a
    caller sees the counter include it (one Lambda invocation makes one write,
    as before); under concurrent connects the counter costs one write per round
    trip instead of one per connection.

    Args:
        client: an open aiobotocore DynamoDB client (shared; not closed here).
        table_name: the connections table.
    """

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name
        self._pending_delta = 0
        """The sum of the deltas not yet taken by a write."""
        self._batch = 0
        """The write a delta added now goes in (numbered from 0)."""
        self._written_through = -1
        """The last write done, or given up as failed (logged)."""
        self._write_lock = asyncio.Lock()

    async def put(self, connection: Connection) -> None:
        """Store a connection record (replacing any with the same id); a new one counts.

        The count's `ADD` goes out with the `PutItem`, not after it: a `$connect`
        waits for one round trip, not two. Almost every record is new; one that
        replaced a record, or a put that failed, takes its one back. The counter
        can read one too many meanwhile, never one too few, and it includes the
        record by the time this returns. A put cancelled mid-call may have been
        written, so its count stays (the write carrying it finishes on its own);
        the recount corrects it if need be.
        """
        counting = asyncio.ensure_future(self._add_to_count(+1))
        try:
            with map_client_errors():
                response = await self._client.put_item(
                    TableName=self._table, Item=connection_item(connection), ReturnValues="ALL_OLD"
                )
        except Exception:  # not written: take the count back
            await counting
            await self._add_to_count(-1)
            raise
        await counting
        if response.get("Attributes"):
            await self._add_to_count(-1)  # it replaced a record that was counted

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        """The record, or None."""
        if connection_id == COUNTER_ID:
            return None
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return connection_from_item(item) if item else None

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        """Delete the record; what was deleted, or None. A deleted one is uncounted."""
        if connection_id == COUNTER_ID:
            return None
        with map_client_errors():
            response = await self._client.delete_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ReturnValues="ALL_OLD",
            )
        item = response.get("Attributes")
        if not item:
            return None
        await self._add_to_count(-1)
        return connection_from_item(item)

    async def touch(self, connection_id: ConnectionId, at: datetime) -> bool:
        """Set `LastPing`; False (nothing created) when the record does not exist."""
        if connection_id == COUNTER_ID:
            return False
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

    # -- the counter ---------------------------------------------------------------------

    async def count(self) -> ConnectionCount:
        """The counter item (a strongly consistent read; 0 before any connect)."""
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table, Key=_KEY, ConsistentRead=True
            )
        item = response.get("Item") or {}
        counted_at = item.get("CountedAt", {}).get("S")
        return ConnectionCount(
            count=max(0, int(item.get("Count", {}).get("N", "0"))),
            counted_at=parse_time(counted_at) if counted_at else None,
        )

    async def recount(self, now: datetime) -> int:
        """Count the unexpired records with a `Scan` (`Select=COUNT`) and set the
        counter to it; returns the count.

        Connects and disconnects during the scan may be missed or counted twice:
        the error is bounded by them, and the next recount corrects it.
        """
        total = 0
        scan: dict[str, Any] = {
            "TableName": self._table,
            "Select": "COUNT",
            # Records only (the counter has no UserID), and none past their TTL.
            "FilterExpression": "attribute_exists(UserID) AND "
            "(attribute_not_exists(#ttl) OR #ttl > :now)",
            "ExpressionAttributeNames": {"#ttl": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {":now": {"N": str(int(now.timestamp()))}},
        }
        with map_client_errors():
            while True:
                page = await self._client.scan(**scan)
                total += int(page.get("Count", 0))
                start_key = page.get("LastEvaluatedKey")
                if not start_key:
                    break
                scan["ExclusiveStartKey"] = start_key
            await self._client.update_item(
                TableName=self._table,
                Key=_KEY,
                UpdateExpression="SET #n = :n, CountedAt = :at",
                ExpressionAttributeNames={"#n": "Count"},
                ExpressionAttributeValues={
                    ":n": {"N": str(total)},
                    ":at": {"S": format_time(now)},
                },
            )
        return total

    async def _add_to_count(self, delta: int) -> None:
        """Add `delta` to the counter; returns once a write carrying it is done."""
        self._pending_delta += delta
        batch = self._batch
        async with self._write_lock:
            if self._written_through >= batch:
                return  # an earlier caller's write carried it
            total, self._pending_delta = self._pending_delta, 0
            self._batch += 1  # deltas from now on go in the next write
            try:
                if total:
                    await self._write_count(total)
            except BaseException:
                self._pending_delta += total  # cancelled: the next write carries it
                raise
            self._written_through = batch

    async def _write_count(self, delta: int) -> None:
        try:
            with map_client_errors():
                await self._client.update_item(
                    TableName=self._table,
                    Key=_KEY,
                    UpdateExpression="ADD #n :d",
                    ExpressionAttributeNames={"#n": "Count"},
                    ExpressionAttributeValues={":d": {"N": str(delta)}},
                )
        except StoreUnavailable:
            # The records are written; the recount corrects the drift.
            logger.warning("could not update the connection counter", exc_info=True)

    # -- queries -------------------------------------------------------------------------

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
