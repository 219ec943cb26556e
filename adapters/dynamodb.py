"""DynamoDB adapters: the three tables of DESIGN §6 and the stores over them.

`open_stores(settings)` (or `await DynamoDBStores.open(settings)` … `aclose()` for
a Lambda container that keeps them for its life) yields the three stores over one
shared client. Every state change is a conditional write; a lost race comes back
as False or None. botocore errors become `StreamerError`s in `map_client_errors`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import client_kwargs, get_session
from streamer.errors import ItemTooLarge, StoreUnavailable, StreamerError, UnstorableValue
from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    ConnectionMetadata,
    RequestError,
    RequestId,
    RequestKey,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
)
from streamer.ports import DEFAULT_PAGE_SIZE, EnqueueResult
from streamer.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import CreateTableInputTypeDef

__all__ = [
    "ERROR_CODES",
    "MAX_ITEM_BYTES",
    "DynamoDBConnectionStore",
    "DynamoDBRequestStore",
    "DynamoDBStores",
    "DynamoDBSubscriptionStore",
    "create_tables",
    "delete_tables",
    "format_time",
    "from_attribute_value",
    "item_size",
    "list_tables",
    "map_client_errors",
    "open_stores",
    "parse_time",
    "table_specs",
    "to_attribute_value",
]

TTL_ATTRIBUTE = "TTL"
MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit (names and values, UTF-8)."""

# --- table definitions ---------------------------------------------------------------


def _gsi(name: str, hash_key: str, range_key: str | None = None) -> dict[str, Any]:
    key_schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key is not None:
        key_schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return {"IndexName": name, "KeySchema": key_schema, "Projection": {"ProjectionType": "ALL"}}


def _strings(*names: str) -> list[dict[str, str]]:
    return [{"AttributeName": name, "AttributeType": "S"} for name in names]


def table_specs(settings: Settings) -> list[CreateTableInputTypeDef]:
    """`CreateTable` inputs for the connections, requests and subscriptions tables."""
    connections: dict[str, Any] = {
        "TableName": settings.connections_table,
        "KeySchema": [{"AttributeName": "ConnectionID", "KeyType": "HASH"}],
        "AttributeDefinitions": _strings("ConnectionID", "UserID", "TenantID"),
        "GlobalSecondaryIndexes": [_gsi("UserIndex", "UserID"), _gsi("TenantIndex", "TenantID")],
        "BillingMode": "PAY_PER_REQUEST",
    }
    requests: dict[str, Any] = {
        "TableName": settings.requests_table,
        "KeySchema": [{"AttributeName": "RequestID", "KeyType": "HASH"}],
        "AttributeDefinitions": _strings(
            "RequestID", "ConnectionID", "Status", "UserID", "CreatedAt"
        ),
        "GlobalSecondaryIndexes": [
            _gsi("ConnectionIndex", "ConnectionID", "CreatedAt"),
            _gsi("StatusIndex", "Status", "CreatedAt"),
            _gsi("UserIndex", "UserID", "CreatedAt"),
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }
    subscriptions: dict[str, Any] = {
        "TableName": settings.subscriptions_table,
        "KeySchema": [
            {"AttributeName": "RequestID", "KeyType": "HASH"},
            {"AttributeName": "ConnectionID", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": _strings("RequestID", "ConnectionID"),
        "GlobalSecondaryIndexes": [_gsi("ConnectionIndex", "ConnectionID")],
        "BillingMode": "PAY_PER_REQUEST",
    }
    return [connections, requests, subscriptions]  # type: ignore[list-item]


def _table_names(settings: Settings) -> list[str]:
    return [settings.connections_table, settings.requests_table, settings.subscriptions_table]


@contextlib.asynccontextmanager
async def _client(settings: Settings, session: Any | None) -> AsyncIterator[DynamoDBClient]:
    session = session if session is not None else get_session()
    async with session.client("dynamodb", **client_kwargs(settings)) as client:
        yield client


async def create_tables(settings: Settings, *, session: Any | None = None) -> list[str]:
    """Create the three tables unless they exist, wait until ACTIVE, enable `TTL`.

    Idempotent: on a second run nothing changes and it returns normally.

    Args:
        settings: table names, region and endpoint.
        session: an aioboto3 session; the process's one when None.

    Returns:
        The names of the tables that were created by this call.

    Raises:
        botocore.exceptions.ClientError, BotoCoreError: as botocore raises them;
            these are admin calls whose caller (the CLI) reports them as they are.
    """
    created: list[str] = []
    async with _client(settings, session) as client:
        for spec in table_specs(settings):
            name = spec["TableName"]
            try:
                await client.create_table(**spec)
                created.append(name)
            except client.exceptions.ResourceInUseException:
                pass
        for name in _table_names(settings):
            waiter = client.get_waiter("table_exists")
            await waiter.wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            await _enable_ttl(client, name)
    return created


async def _enable_ttl(client: DynamoDBClient, name: str) -> None:
    described = await client.describe_time_to_live(TableName=name)
    current = described.get("TimeToLiveDescription", {})
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    try:
        await client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        # A concurrent run may have enabled it since we looked; anything else is real.
        message = str(exc.response.get("Error", {}).get("Message", "")).lower()
        if not (_error_code(exc) == "ValidationException" and "already enabled" in message):
            raise


async def delete_tables(settings: Settings, *, session: Any | None = None) -> list[str]:
    """Delete the three tables where they exist and wait until they are gone.

    Returns:
        The names of the tables that were deleted by this call.
    """
    deleted: list[str] = []
    async with _client(settings, session) as client:
        for name in _table_names(settings):
            try:
                await client.delete_table(TableName=name)
                deleted.append(name)
            except client.exceptions.ResourceNotFoundException:
                pass
        for name in deleted:
            waiter = client.get_waiter("table_not_exists")
            await waiter.wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return deleted


async def list_tables(settings: Settings, *, session: Any | None = None) -> dict[str, str]:
    """Each of the three table names → its status (`ACTIVE`, …, or `MISSING`)."""
    statuses: dict[str, str] = {}
    async with _client(settings, session) as client:
        for name in _table_names(settings):
            try:
                described = await client.describe_table(TableName=name)
                statuses[name] = described["Table"].get("TableStatus", "UNKNOWN")
            except client.exceptions.ResourceNotFoundException:
                statuses[name] = "MISSING"
    return statuses


# --- errors ----------------------------------------------------------------------------

ERROR_CODES: dict[str, type[StreamerError]] = {
    # Throttling and server faults that outlived the client's retries.
    "ProvisionedThroughputExceededException": StoreUnavailable,
    "ThrottlingException": StoreUnavailable,
    "RequestLimitExceeded": StoreUnavailable,
    "LimitExceededException": StoreUnavailable,
    "InternalServerError": StoreUnavailable,
    "InternalFailure": StoreUnavailable,
    "ServiceUnavailable": StoreUnavailable,
    "TransactionConflictException": StoreUnavailable,
    # The store refuses the call: misconfiguration, surfaced as the same typed error.
    "ResourceNotFoundException": StoreUnavailable,
    "AccessDeniedException": StoreUnavailable,
    "UnrecognizedClientException": StoreUnavailable,
    "MissingAuthenticationToken": StoreUnavailable,
    "ExpiredTokenException": StoreUnavailable,
    "IncompleteSignature": StoreUnavailable,
    "ItemCollectionSizeLimitExceededException": ItemTooLarge,
}
"""Every AWS error code `map_client_errors` knows → the typed error it becomes.

`ValidationException` about an item's size also becomes `ItemTooLarge`; any other
code becomes `StoreUnavailable`. `ConditionalCheckFailedException` becomes the
private `_ConditionFailed`, which the stores turn into their False/None result.
"""


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold: a lost race, not an error."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_size_error(exc: ClientError) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return (
        _error_code(exc) == "ValidationException"
        and "size" in message
        and ("exceed" in message or "maximum" in message)
    )


@contextlib.contextmanager
def map_client_errors() -> Iterator[None]:
    """Translate botocore exceptions into `StreamerError`s at the adapter's edge.

    Raises:
        ItemTooLarge: the item would exceed 400 KB.
        StoreUnavailable: throttling, 5xx, connection errors (after the client's
            retries) and every other refusal; the message names the AWS code only.
        _ConditionFailed: a conditional write lost (the stores' own business).
    """
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if code == "ConditionalCheckFailedException":
            raise _ConditionFailed() from exc
        if _is_size_error(exc):
            raise ItemTooLarge() from exc
        error_type = ERROR_CODES.get(code, StoreUnavailable)
        if error_type is ItemTooLarge:
            raise ItemTooLarge() from exc
        raise StoreUnavailable(f"state store refused the call ({code or 'unknown error'})") from exc
    except BotoCoreError as exc:
        # Endpoint/connection errors, read/connect timeouts, closed connections.
        raise StoreUnavailable(f"state store unreachable ({type(exc).__name__})") from exc


# --- values ----------------------------------------------------------------------------

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_storable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("DynamoDB cannot store NaN or infinity")
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {str(k): _to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_storable(v) for v in value]
    return value


def _from_stored(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _from_decimal(value)
    if isinstance(value, dict):
        return {k: _from_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_stored(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_from_stored(v) for v in sorted(value)]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def _from_decimal(value: Decimal) -> int | float:
    if value != value.to_integral_value():
        return float(value)
    exponent = value.as_tuple().exponent
    # "1E+100" came from a float (ints are written digit by digit); as an int it
    # would no longer equal that float. Small integral values are ints either way.
    if isinstance(exponent, int) and exponent > 0 and abs(value) >= 2**53:
        return float(value)
    return int(value)


def to_attribute_value(value: Any) -> dict[str, Any]:
    """A Python (JSON-like) value as a typed DynamoDB value (`{"M": ...}`, …).

    Raises:
        UnstorableValue: NaN/infinity, a number beyond 38 significant digits, or a
            type DynamoDB has no form for.
    """
    try:
        return _serializer.serialize(_to_storable(value))  # type: ignore[return-value]
    except (ValueError, TypeError, ArithmeticError) as exc:
        # decimal's Inexact/Rounded/Overflow are ArithmeticErrors: DynamoDB numbers
        # carry at most 38 significant digits.
        raise UnstorableValue(_unstorable_reason(exc)) from exc


def _unstorable_reason(exc: Exception) -> str:
    if isinstance(exc, ArithmeticError):
        return "numbers are limited to 38 significant digits"
    if isinstance(exc, ValueError):
        return "NaN and infinity are not numbers DynamoDB can store"
    return "a value of an unsupported type"


def from_attribute_value(value: Mapping[str, Any]) -> Any:
    """A typed DynamoDB value back to Python: numbers as int when integral, else float."""
    return _from_stored(_deserializer.deserialize(dict(value)))  # type: ignore[arg-type]


def _to_item(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: to_attribute_value(value) for name, value in attributes.items()}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_attribute_value(value) for name, value in item.items()}


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with fixed-width microseconds, so strings sort as times do."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """The inverse of `format_time`; also reads any RFC 3339 string (timezone-aware)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _optional_time(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def _number_size(value: Mapping[str, Any]) -> int:
    digits = str(value["N"]).lstrip("-").replace(".", "").lstrip("0") or "0"
    return 1 + math.ceil(len(digits) / 2)


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return _number_size(value)
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in inner)
    if kind == "SS":
        return sum(len(str(s).encode()) for s in inner)
    if kind == "NS":
        return sum(_number_size({"N": n}) for n in inner)
    if kind == "BS":
        return sum(len(b) for b in inner)
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """DynamoDB's size of a typed item in bytes (names + values), a close upper estimate."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


# --- the stores ------------------------------------------------------------------------


async def _query_all(
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


def _connection_item(connection: Connection) -> dict[str, Any]:
    return _to_item(
        {
            "ConnectionID": connection.connection_id,
            "UserID": connection.user_id,
            "TenantID": connection.tenant_id,
            "Endpoint": connection.endpoint,
            "ConnectedAt": format_time(connection.connected_at),
            "LastPing": format_time(connection.last_ping),
            "Metadata": {
                "user_agent": connection.metadata.user_agent,
                "ip_address": connection.metadata.ip_address,
                "permissions": list(connection.metadata.permissions),
            },
            TTL_ATTRIBUTE: connection.expires_at,
        }
    )


def _connection_from_item(item: Mapping[str, Any]) -> Connection:
    values = _from_item(item)
    metadata = values.get("Metadata") or {}
    connected_at = parse_time(values["ConnectedAt"])
    return Connection(
        connection_id=ConnectionId(values["ConnectionID"]),
        user_id=UserId(values.get("UserID", "")),
        tenant_id=TenantId(values.get("TenantID", "")),
        endpoint=values.get("Endpoint", ""),
        connected_at=connected_at,
        last_ping=_optional_time(values.get("LastPing")) or connected_at,
        expires_at=int(values.get(TTL_ATTRIBUTE, 0)),
        metadata=ConnectionMetadata(
            user_agent=str(metadata.get("user_agent", "")),
            ip_address=str(metadata.get("ip_address", "")),
            permissions=tuple(metadata.get("permissions") or ()),
        ),
    )


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
            await self._client.put_item(TableName=self._table, Item=_connection_item(connection))

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        """The record, or None."""
        with map_client_errors():
            response = await self._client.get_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        return _connection_from_item(item) if item else None

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        """Delete the record; what was deleted, or None."""
        with map_client_errors():
            response = await self._client.delete_item(
                TableName=self._table,
                Key={"ConnectionID": {"S": connection_id}},
                ReturnValues="ALL_OLD",
            )
        item = response.get("Attributes")
        return _connection_from_item(item) if item else None

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
        except _ConditionFailed:
            return False
        return True

    async def list_by_user(self, user_id: UserId) -> list[Connection]:
        """Connections of one user (`UserIndex`)."""
        return await self._list("UserIndex", "UserID", user_id)

    async def list_by_tenant(self, tenant_id: TenantId) -> list[Connection]:
        """Connections of one tenant (`TenantIndex`)."""
        return await self._list("TenantIndex", "TenantID", tenant_id)

    async def _list(self, index: str, attribute: str, value: str) -> list[Connection]:
        items = await _query_all(
            self._client,
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": attribute},
            ExpressionAttributeValues={":v": {"S": value}},
        )
        return [_connection_from_item(item) for item in items]

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
                yield [_connection_from_item(item) for item in items]
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return
            query["ExclusiveStartKey"] = last_key


def _error_value(error: RequestError) -> dict[str, Any]:
    value: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        value["details"] = error.details
    return value


def _error_from_value(value: Any) -> RequestError | None:
    if not isinstance(value, dict):
        return None
    details = value.get("details")
    return RequestError(
        code=str(value.get("code", "")),
        message=str(value.get("message", "")),
        details=details if isinstance(details, dict) else None,
    )


def _request_attributes(request: AsyncRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "RequestID": request.key,
        "ClientRequestID": request.request_id,
        "ConnectionID": request.connection_id,
        "UserID": request.user_id,
        "TenantID": request.tenant_id,
        "Action": request.action,
        "Payload": request.payload,
        "Status": request.status.value,
        "CreatedAt": format_time(request.created_at),
        "UpdatedAt": format_time(request.updated_at),
        "MaxRetries": request.max_retries,
        "TimeoutSeconds": request.timeout_s,
        "Metadata": request.metadata,
        "Progress": request.progress,
        "ProgressMessage": request.progress_message,
        "ProgressDetails": request.progress_details,
        "RetryCount": request.retry_count,
        "Attempt": request.attempt,
        "Kicks": request.kicks,
    }
    if request.result is not None:
        attributes["Result"] = request.result
    if request.error is not None:
        attributes["Error"] = _error_value(request.error)
    if request.lease_until is not None:
        attributes["LeaseUntil"] = format_time(request.lease_until)
    if request.processing_started is not None:
        attributes["ProcessingStarted"] = format_time(request.processing_started)
    if request.completed_at is not None:
        attributes["CompletedAt"] = format_time(request.completed_at)
    if request.expires_at is not None:
        attributes[TTL_ATTRIBUTE] = request.expires_at
    return attributes


def _request_from_item(item: Mapping[str, Any]) -> AsyncRequest:
    values = _from_item(item)
    key = RequestKey(values["RequestID"])
    created_at = parse_time(values["CreatedAt"])
    ttl = values.get(TTL_ATTRIBUTE)
    return AsyncRequest(
        key=key,
        request_id=RequestId(values.get("ClientRequestID") or key.rsplit("#", 1)[-1]),
        connection_id=ConnectionId(values.get("ConnectionID", "")),
        user_id=UserId(values.get("UserID", "")),
        tenant_id=TenantId(values.get("TenantID", "")),
        action=values.get("Action", ""),
        payload=values.get("Payload") or {},
        status=RequestStatus(values["Status"]),
        created_at=created_at,
        updated_at=_optional_time(values.get("UpdatedAt")) or created_at,
        max_retries=int(values.get("MaxRetries", 3)),
        timeout_s=float(values.get("TimeoutSeconds", 900.0)),
        metadata=values.get("Metadata") or {},
        progress=float(values.get("Progress", 0.0)),
        progress_message=values.get("ProgressMessage", ""),
        progress_details=values.get("ProgressDetails") or {},
        result=values.get("Result"),
        error=_error_from_value(values.get("Error")),
        retry_count=int(values.get("RetryCount", 0)),
        attempt=int(values.get("Attempt", 0)),
        lease_until=_optional_time(values.get("LeaseUntil")),
        processing_started=_optional_time(values.get("ProcessingStarted")),
        completed_at=_optional_time(values.get("CompletedAt")),
        expires_at=int(ttl) if ttl is not None else None,
        kicks=int(values.get("Kicks", 0)),
    )


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
        item = _to_item(_request_attributes(request))
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
            except _ConditionFailed:
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
        return _request_from_item(item) if item else None

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
        except _ConditionFailed:
            return None
        return _request_from_item(response["Attributes"])

    async def _ensure_fits(self, key: RequestKey, new_attributes: Mapping[str, Any]) -> None:
        """Refuse an update that would take the item over 400 KB, before writing it.

        Small updates are left to DynamoDB (its refusal is mapped the same way);
        large ones are measured against the stored item, since moto does not
        enforce the limit on updates.
        """
        added = _to_item(new_attributes)
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
            "Error": _error_value(error),
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
            "Error": _error_value(error),
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
                "Error": _error_value(_CANCELLED),
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
        items = await _query_all(
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
        return [_request_from_item(item) for item in items]

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
        items = await _query_all(
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
        return [_request_from_item(item) for item in items]

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
        items = await _query_all(
            self._client,
            limit=limit,
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression="#k = :v",
            ExpressionAttributeNames={"#k": attribute},
            ExpressionAttributeValues={":v": {"S": value}},
            ScanIndexForward=True,
        )
        return [_request_from_item(item) for item in items]


def _subscription_from_item(item: Mapping[str, Any]) -> Subscription:
    values = _from_item(item)
    return Subscription(
        key=RequestKey(values["RequestID"]),
        connection_id=ConnectionId(values["ConnectionID"]),
        created_at=parse_time(values["CreatedAt"]),
        expires_at=int(values.get(TTL_ATTRIBUTE, 0)),
    )


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
        item = _to_item(
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
        items = await _query_all(
            self._client,
            TableName=self._table,
            KeyConditionExpression="RequestID = :key",
            ExpressionAttributeValues={":key": {"S": key}},
            ConsistentRead=True,
        )
        return [_subscription_from_item(item) for item in items]

    async def list_for_connection(self, connection_id: ConnectionId) -> list[Subscription]:
        """Everything a connection follows (`ConnectionIndex`)."""
        items = await _query_all(
            self._client,
            TableName=self._table,
            IndexName="ConnectionIndex",
            KeyConditionExpression="ConnectionID = :cid",
            ExpressionAttributeValues={":cid": {"S": connection_id}},
        )
        return [_subscription_from_item(item) for item in items]

    async def remove_for_connection(self, connection_id: ConnectionId) -> int:
        """Drop all of a connection's subscriptions; how many were removed."""
        removed = 0
        for subscription in await self.list_for_connection(connection_id):
            if await self._delete(subscription.key, subscription.connection_id):
                removed += 1
        return removed


# --- composition -----------------------------------------------------------------------


@dataclass(slots=True)
class DynamoDBStores:
    """The three stores over one shared client; close it with `aclose()`.

    Use `async with open_stores(settings) as stores:`, or for a holder that
    outlives any one block (a Lambda container) `stores = await
    DynamoDBStores.open(settings)` and, at shutdown, `await stores.aclose()`.

    Args:
        connections: the connections store.
        requests: the requests store.
        subscriptions: the subscriptions store.
        client: the shared DynamoDB client (for health checks and stream readers).
    """

    connections: DynamoDBConnectionStore
    requests: DynamoDBRequestStore
    subscriptions: DynamoDBSubscriptionStore
    client: DynamoDBClient
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)

    @classmethod
    async def open(
        cls, settings: Settings, *, session: Any | None = None, config: Config | None = None
    ) -> Self:
        """Open one DynamoDB client and build the stores over it.

        Args:
            settings: table names, region, `dynamodb_endpoint_url`.
            session: an aioboto3 session; the process's one when None.
            config: the botocore config (retries, timeouts); `client_config()` when None.
        """
        stack = AsyncExitStack()
        session = session if session is not None else get_session()
        try:
            client: DynamoDBClient = await stack.enter_async_context(
                session.client("dynamodb", **client_kwargs(settings, config=config))
            )
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            connections=DynamoDBConnectionStore(client, settings.connections_table),
            requests=DynamoDBRequestStore(client, settings.requests_table),
            subscriptions=DynamoDBSubscriptionStore(client, settings.subscriptions_table),
            client=client,
            _stack=stack,
        )

    async def aclose(self) -> None:
        """Close the shared client (idempotent)."""
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def open_stores(
    settings: Settings, *, session: Any | None = None, config: Config | None = None
) -> AsyncIterator[DynamoDBStores]:
    """The three DynamoDB stores over one client, closed when the block ends.

    Args:
        settings: table names, region, `dynamodb_endpoint_url`.
        session: an aioboto3 session; the process's one when None.
        config: the botocore config (retries, timeouts); `client_config()` when None.
    """
    stores = await DynamoDBStores.open(settings, session=session, config=config)
    try:
        yield stores
    finally:
        await stores.aclose()
