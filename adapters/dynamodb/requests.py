"""The requests table as the core's `RequestStore`: every transition a conditional write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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
from adapters.dynamodb.items import error_value, request_attributes, request_from_item
from adapters.dynamodb.paging import query_all
from adapters.dynamodb.tables import TTL_ATTRIBUTE
from streamer.errors import ItemTooLarge, StoreUnavailable
from streamer.models import (
    AsyncRequest,
    ConnectionId,
    RequestError,
    RequestKey,
    RequestStatus,
    UserId,
)
from streamer.ports import EnqueueResult

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = ["DynamoDBRequestStore"]


@dataclass(slots=True)
class _Update:
    """One conditional `UpdateItem`, built up clause by clause."""

    condition: str
    sets: dict[str, Any] = field(default_factory=dict)
    removes: list[str] = field(default_factory=list)
    raw_sets: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def expression(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        names: dict[str, str] = {}
        values = {name: to_attribute_value(value) for name, value in self.values.items()}
        clauses = list(self.raw_sets)
        for index, (attribute, value) in enumerate(self.sets.items()):
            names[f"#a{index}"] = attribute
            values[f":a{index}"] = to_attribute_value(value)
            clauses.append(f"#a{index} = :a{index}")
        expression = "SET " + ", ".join(clauses)
        if self.removes:
            for index, attribute in enumerate(self.removes):
                names[f"#r{index}"] = attribute
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(self.removes)))
        names["#status"] = "Status"
        return expression, names, values


_CANCELLED = RequestError(code="CANCELLED", message="request was cancelled")
_IN_PROCESSING = "#status = :processing AND Attempt = :attempt"
_LEASE_EXPIRED = _IN_PROCESSING + " AND LeaseUntil < :now"
_UNTOUCHED_PENDING = "#status = :pending AND UpdatedAt = :seen"
_PENDING_AGAIN: dict[str, Any] = {"Status": RequestStatus.PENDING.value, "Kicks": 0}
"""Back to PENDING; Kicks count re-announcements since the request last became PENDING."""


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

    async def _apply(self, key: RequestKey, update: _Update) -> AsyncRequest | None:
        """Run `update`; the new request, or None when its condition failed."""
        expression, names, values = update.expression()
        try:
            with map_client_errors():
                response = await self._client.update_item(
                    TableName=self._table,
                    Key=self._key(key),
                    UpdateExpression=expression,
                    ConditionExpression=update.condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            return None
        return request_from_item(response["Attributes"])

    async def _ensure_fits(self, key: RequestKey, new_attributes: Mapping[str, Any]) -> None:
        """Refuse an update that would take the item over 400 KB, before writing it.

        Small updates are left to DynamoDB (its refusal is mapped the same way);
        large ones are measured against the stored item, since moto does not
        enforce the limit on updates.
        """
        added = to_item(new_attributes)
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

    async def claim(
        self, key: RequestKey, *, now: datetime, lease_until: datetime
    ) -> AsyncRequest | None:
        """PENDING → PROCESSING (Attempt+1, lease, ProcessingStarted); None if not PENDING."""
        update = _Update(
            condition="#status = :pending",
            sets={
                "Status": RequestStatus.PROCESSING.value,
                "LeaseUntil": format_time(lease_until),
                "ProcessingStarted": format_time(now),
                "UpdatedAt": format_time(now),
            },
            raw_sets=["Attempt = if_not_exists(Attempt, :zero) + :one"],
            values={":pending": RequestStatus.PENDING.value, ":zero": 0, ":one": 1},
        )
        return await self._apply(key, update)

    def _in_processing(self, attempt: int, **values: Any) -> dict[str, Any]:
        return {":processing": RequestStatus.PROCESSING.value, ":attempt": attempt, **values}

    async def record_progress(
        self,
        key: RequestKey,
        *,
        attempt: int,
        percentage: float,
        message: str,
        details: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Save the progress snapshot while PROCESSING under `attempt`; False otherwise."""
        sets = {
            "Progress": percentage,
            "ProgressMessage": message,
            "ProgressDetails": details,
            "UpdatedAt": format_time(now),
        }
        await self._ensure_fits(key, sets)
        update = _Update(_IN_PROCESSING, sets=sets, values=self._in_processing(attempt))
        return await self._apply(key, update) is not None

    async def record_retry(
        self,
        key: RequestKey,
        *,
        attempt: int,
        error: RequestError,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """RetryCount+1, keep the error, extend the lease; False unless PROCESSING under
        `attempt`."""
        sets = {
            "Error": error_value(error),
            "LeaseUntil": format_time(lease_until),
            "UpdatedAt": format_time(now),
        }
        await self._ensure_fits(key, sets)
        update = _Update(
            _IN_PROCESSING,
            sets=sets,
            raw_sets=["RetryCount = if_not_exists(RetryCount, :zero) + :one"],
            values=self._in_processing(attempt, **{":zero": 0, ":one": 1}),
        )
        return await self._apply(key, update) is not None

    async def complete(
        self, key: RequestKey, *, attempt: int, result: Any, now: datetime, expires_at: int
    ) -> bool:
        """PROCESSING (under `attempt`) → COMPLETED with `Result` and `TTL`.

        Raises:
            ItemTooLarge: the result does not fit in an item; nothing was written.
        """
        sets = {
            "Status": RequestStatus.COMPLETED.value,
            "Result": result,
            "CompletedAt": format_time(now),
            "UpdatedAt": format_time(now),
            TTL_ATTRIBUTE: expires_at,
        }
        await self._ensure_fits(key, sets)
        update = _Update(_IN_PROCESSING, sets=sets, values=self._in_processing(attempt))
        return await self._apply(key, update) is not None

    async def fail(
        self,
        key: RequestKey,
        *,
        attempt: int,
        error: RequestError,
        now: datetime,
        expires_at: int,
    ) -> bool:
        """PROCESSING (under `attempt`) → FAILED with `Error` and `TTL`."""
        sets = self._failed(error, now, expires_at)
        await self._ensure_fits(key, sets)
        update = _Update(_IN_PROCESSING, sets=sets, values=self._in_processing(attempt))
        return await self._apply(key, update) is not None

    def _failed(self, error: RequestError, now: datetime, expires_at: int) -> dict[str, Any]:
        return {
            "Status": RequestStatus.FAILED.value,
            "Error": error_value(error),
            "CompletedAt": format_time(now),
            "UpdatedAt": format_time(now),
            TTL_ATTRIBUTE: expires_at,
        }

    async def release(self, key: RequestKey, *, attempt: int, now: datetime) -> bool:
        """PROCESSING (under `attempt`) → PENDING, for another processor to claim."""
        update = _Update(
            _IN_PROCESSING,
            sets=_PENDING_AGAIN | {"UpdatedAt": format_time(now)},
            removes=["LeaseUntil"],
            values=self._in_processing(attempt),
        )
        return await self._apply(key, update) is not None

    async def cancel(
        self, key: RequestKey, *, now: datetime, expires_at: int
    ) -> AsyncRequest | None:
        """PENDING|PROCESSING → CANCELLED; the updated request, or None."""
        update = _Update(
            "#status IN (:pending, :processing)",
            sets={
                "Status": RequestStatus.CANCELLED.value,
                "Error": error_value(_CANCELLED),
                "CompletedAt": format_time(now),
                "UpdatedAt": format_time(now),
                TTL_ATTRIBUTE: expires_at,
            },
            values={
                ":pending": RequestStatus.PENDING.value,
                ":processing": RequestStatus.PROCESSING.value,
            },
        )
        return await self._apply(key, update)

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

    async def requeue_expired(self, key: RequestKey, *, attempt: int, now: datetime) -> bool:
        """PROCESSING with an expired lease (under `attempt`) → PENDING."""
        update = _Update(
            _LEASE_EXPIRED,
            sets=_PENDING_AGAIN | {"UpdatedAt": format_time(now)},
            removes=["LeaseUntil"],
            values=self._in_processing(attempt, **{":now": format_time(now)}),
        )
        return await self._apply(key, update) is not None

    async def fail_expired(
        self,
        key: RequestKey,
        *,
        attempt: int,
        error: RequestError,
        now: datetime,
        expires_at: int,
    ) -> bool:
        """PROCESSING with an expired lease (under `attempt`) → FAILED."""
        update = _Update(
            _LEASE_EXPIRED,
            sets=self._failed(error, now, expires_at),
            values=self._in_processing(attempt, **{":now": format_time(now)}),
        )
        return await self._apply(key, update) is not None

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

    def _untouched(self, seen_updated_at: datetime) -> dict[str, Any]:
        return {":pending": RequestStatus.PENDING.value, ":seen": format_time(seen_updated_at)}

    async def kick(self, key: RequestKey, *, seen_updated_at: datetime, now: datetime) -> bool:
        """UpdatedAt = `now`, Kicks+1 while PENDING with the UpdatedAt seen; the
        write puts a fresh PENDING image on the stream. False otherwise."""
        update = _Update(
            _UNTOUCHED_PENDING,
            sets={"UpdatedAt": format_time(now)},
            raw_sets=["Kicks = if_not_exists(Kicks, :zero) + :one"],
            values={**self._untouched(seen_updated_at), ":zero": 0, ":one": 1},
        )
        return await self._apply(key, update) is not None

    async def fail_pending(
        self,
        key: RequestKey,
        *,
        seen_updated_at: datetime,
        error: RequestError,
        now: datetime,
        expires_at: int,
    ) -> AsyncRequest | None:
        """PENDING (with the UpdatedAt seen) → FAILED; the failed request, or None."""
        update = _Update(
            _UNTOUCHED_PENDING,
            sets=self._failed(error, now, expires_at),
            values=self._untouched(seen_updated_at),
        )
        return await self._apply(key, update)

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        """Requests made over one connection, oldest first (`ConnectionIndex`)."""
        return await self._list("ConnectionIndex", "ConnectionID", connection_id)

    async def list_by_user(self, user_id: UserId) -> list[AsyncRequest]:
        """Requests of one user, oldest first (`UserIndex`)."""
        return await self._list("UserIndex", "UserID", user_id)

    async def list_by_status(self, status: RequestStatus, *, limit: int) -> list[AsyncRequest]:
        """Requests in one status, oldest first (`StatusIndex`)."""
        return await self._list("StatusIndex", "Status", status.value, limit=limit)

    async def _list(
        self, index: str, attribute: str, value: str, *, limit: int | None = None
    ) -> list[AsyncRequest]:
        items = await query_all(
            self._client,
            limit=limit,
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": attribute},
            ExpressionAttributeValues={":v": {"S": value}},
            ScanIndexForward=True,
        )
        return [request_from_item(item) for item in items]
