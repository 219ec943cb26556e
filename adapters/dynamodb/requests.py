"""The requests table as the core's `RequestStore`: every transition one conditional write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from adapters.dynamodb.codec import (
    MAX_ITEM_BYTES,
    format_time,
    item_size,
    to_attribute_value,
    to_item,
)
from adapters.dynamodb.errors import ConditionFailed, map_client_errors
from adapters.dynamodb.items import (
    REQUEST_ATTRIBUTES,
    request_attributes,
    request_from_item,
    request_value,
)
from adapters.dynamodb.paging import query_all
from streamer.errors import ItemTooLarge, StoreUnavailable
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestKey,
    RequestStatus,
)
from streamer.ports import EnqueueResult
from streamer.transitions import Transition

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["CompiledUpdate", "DynamoDBRequestStore", "compile_transition"]


@dataclass(frozen=True, slots=True)
class CompiledUpdate:
    """A `Transition` as the arguments of one conditional `UpdateItem`."""

    update: str
    condition: str
    names: dict[str, str]
    values: dict[str, Any]
    sets: dict[str, Any]
    """The attributes the update writes, typed (to measure the item it makes)."""


def compile_transition(transition: Transition) -> CompiledUpdate:
    """The one place a status change becomes DynamoDB expressions.

    The condition holds the transition's from-statuses and guards, so a lost
    race is DynamoDB's `ConditionalCheckFailedException`, never a half-applied
    change; values are encoded before anything is sent.

    Raises:
        UnstorableValue: a value DynamoDB cannot hold.
    """
    names: dict[str, str] = {}
    values: dict[str, Any] = {}

    def attribute(name: str) -> str:
        names[f"#{name}"] = REQUEST_ATTRIBUTES[name]
        return f"#{name}"

    def value(label: str, raw: Any) -> str:
        values[f":{label}"] = to_attribute_value(request_value(raw))
        return f":{label}"

    allowed = [value(f"from{i}", s) for i, s in enumerate(sorted(transition.from_statuses))]
    status = attribute("status")
    conditions = [
        f"{status} = {allowed[0]}" if len(allowed) == 1 else f"{status} IN ({', '.join(allowed)})"
    ]
    if transition.attempt is not None:
        conditions.append(f"{attribute('attempt')} = {value('attempt', transition.attempt)}")
    if transition.lease_expired_before is not None:
        before = value("lease_expired_before", transition.lease_expired_before)
        conditions.append(f"{attribute('lease_until')} < {before}")
    if transition.seen_updated_at is not None:
        seen = value("seen_updated_at", transition.seen_updated_at)
        conditions.append(f"{attribute('updated_at')} = {seen}")

    sets: dict[str, Any] = {}
    clauses: list[str] = []
    for name, raw in transition.sets.items():
        placeholder = value(f"set_{name}", raw)
        sets[REQUEST_ATTRIBUTES[name]] = values[placeholder]
        clauses.append(f"{attribute(name)} = {placeholder}")
    if transition.increments:
        zero, one = value("zero", 0), value("one", 1)
        for name in sorted(transition.increments):
            ref = attribute(name)
            clauses.append(f"{ref} = if_not_exists({ref}, {zero}) + {one}")
    update = "SET " + ", ".join(clauses)
    if transition.removes:
        update += " REMOVE " + ", ".join(attribute(name) for name in sorted(transition.removes))
    return CompiledUpdate(
        update=update,
        condition=" AND ".join(conditions),
        names=names,
        values=values,
        sets=sets,
    )


class DynamoDBRequestStore:
    """The requests table (`RequestStore`): every transition a conditional write.

    Args:
        client: an open aiobotocore DynamoDB client (shared; not closed here).
        table_name: the requests table.
    """

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _key(self, key: RequestKey) -> dict[str, Any]:
        return {"RequestID": {"S": key}}

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        """Insert the request unless its key exists; then return the stored one."""
        item = to_item(request_attributes(request))
        if item_size(item) > MAX_ITEM_BYTES:
            raise ItemTooLarge()
        for _ in range(3):
            try:
                with map_client_errors():
                    await self._client.put_item(
                        TableName=self._table,
                        Item=item,
                        ConditionExpression="attribute_not_exists(RequestID)",
                    )
                return EnqueueResult(created=True, request=request)
            except ConditionFailed:
                pass
            stored = await self.get(request.key)
            if stored is not None:
                return EnqueueResult(created=False, request=stored)
            # The stored item vanished (TTL) between the two calls: try again.
        raise StoreUnavailable("request key kept changing during enqueue")

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        """The stored request (strongly consistent read), or None."""
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table, Key=self._key(key), ConsistentRead=True
            )
        item = response.get("Item")
        return request_from_item(item) if item else None

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        """One conditional `UpdateItem` compiled from `transition`; the request as
        stored after it (`ReturnValues=ALL_NEW`), or None when its condition failed.

        Raises:
            ItemTooLarge: the change would take the item over 400 KB; nothing written.
            UnstorableValue: a value DynamoDB cannot hold; nothing written.
        """
        compiled = compile_transition(transition)
        await self._ensure_fits(key, compiled.sets)
        try:
            with map_client_errors():
                response = await self._client.update_item(
                    TableName=self._table,
                    Key=self._key(key),
                    UpdateExpression=compiled.update,
                    ConditionExpression=compiled.condition,
                    ExpressionAttributeNames=compiled.names,
                    ExpressionAttributeValues=compiled.values,
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            return None
        return request_from_item(response["Attributes"])

    async def _ensure_fits(self, key: RequestKey, added: Mapping[str, Any]) -> None:
        """Refuse an update that would take the item over 400 KB, before writing it.

        Small updates are left to DynamoDB (its refusal is mapped the same way);
        large ones are measured against the stored item, since moto does not
        enforce the limit on updates.
        """
        added_size = item_size(added)
        if added_size > MAX_ITEM_BYTES:
            raise ItemTooLarge()
        if added_size < 16 * 1024:
            return
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table, Key=self._key(key), ConsistentRead=True
            )
        merged = {**response.get("Item", {}), **added}
        if item_size(merged) > MAX_ITEM_BYTES:
            raise ItemTooLarge()

    async def list_expired_leases(self, *, now: datetime, limit: int) -> list[AsyncRequest]:
        """PROCESSING requests whose LeaseUntil is before `now`, oldest first."""
        items = await query_all(
            self._client,
            limit=limit,
            TableName=self._table,
            IndexName="StatusIndex",
            KeyConditionExpression="#status = :processing",
            FilterExpression="LeaseUntil < :now",
            ExpressionAttributeNames={"#status": "Status"},
            ExpressionAttributeValues={
                ":processing": {"S": RequestStatus.PROCESSING.value},
                ":now": {"S": format_time(now)},
            },
        )
        return [request_from_item(item) for item in items]

    async def list_stale_pending(self, *, older_than: datetime, limit: int) -> list[AsyncRequest]:
        """PENDING requests whose UpdatedAt is before `older_than`, oldest first.

        The index's sort key is CreatedAt, and UpdatedAt is never before it, so
        the key condition narrows the read and the filter does the rest (a
        requeued request is old by CreatedAt but fresh by UpdatedAt).
        """
        cutoff = {"S": format_time(older_than)}
        items = await query_all(
            self._client,
            limit=limit,
            TableName=self._table,
            IndexName="StatusIndex",
            KeyConditionExpression="#status = :pending AND CreatedAt < :cutoff",
            FilterExpression="UpdatedAt < :cutoff",
            ExpressionAttributeNames={"#status": "Status"},
            ExpressionAttributeValues={
                ":pending": {"S": RequestStatus.PENDING.value},
                ":cutoff": cutoff,
            },
        )
        return [request_from_item(item) for item in items]

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        """Requests made over one connection, oldest first (`ConnectionIndex`)."""
        items = await query_all(
            self._client,
            TableName=self._table,
            IndexName="ConnectionIndex",
            KeyConditionExpression="ConnectionID = :cid",
            ExpressionAttributeValues={":cid": {"S": connection_id}},
            ScanIndexForward=True,
        )
        return [request_from_item(item) for item in items]
