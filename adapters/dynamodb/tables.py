"""The three tables of DESIGN §6: their `CreateTable` specs, and create/delete/list."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from adapters.aws import client_kwargs, get_session
from adapters.dynamodb.errors import error_code, map_client_errors
from streamer.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import CreateTableInputTypeDef

__all__ = ["TTL_ATTRIBUTE", "create_tables", "delete_tables", "list_tables", "table_specs"]

TTL_ATTRIBUTE = "TTL"


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
    # Table admin answers in the core's typed errors too (the emulator and the CLI).
    with map_client_errors():
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
        StoreUnavailable: DynamoDB refused a call or could not be reached (the
            message names the AWS error code).
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
        if not (error_code(exc) == "ValidationException" and "already enabled" in message):
            raise


async def delete_tables(settings: Settings, *, session: Any | None = None) -> list[str]:
    """Delete the three tables where they exist and wait until they are gone.

    Returns:
        The names of the tables that were deleted by this call.

    Raises:
        StoreUnavailable: as `create_tables`.
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
