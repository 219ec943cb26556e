"""Connections, requests and subscriptions to and from DynamoDB items (DESIGN §6 names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from adapters.dynamodb.codec import format_time, from_item, optional_time, parse_time, to_item
from adapters.dynamodb.tables import TTL_ATTRIBUTE
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
    parse_request_key,
)

__all__ = [
    "REQUEST_ATTRIBUTES",
    "connection_from_item",
    "connection_item",
    "error_from_value",
    "error_value",
    "request_attributes",
    "request_from_item",
    "request_value",
    "subscription_from_item",
]


def connection_item(connection: Connection) -> dict[str, Any]:
    return to_item(
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


def connection_from_item(item: Mapping[str, Any]) -> Connection:
    values = from_item(item)
    metadata = values.get("Metadata") or {}
    connected_at = parse_time(values["ConnectedAt"])
    return Connection(
        connection_id=ConnectionId(values["ConnectionID"]),
        user_id=UserId(values.get("UserID", "")),
        tenant_id=TenantId(values.get("TenantID", "")),
        endpoint=values.get("Endpoint", ""),
        connected_at=connected_at,
        last_ping=optional_time(values.get("LastPing")) or connected_at,
        expires_at=int(values.get(TTL_ATTRIBUTE, 0)),
        metadata=ConnectionMetadata(
            user_agent=str(metadata.get("user_agent", "")),
            ip_address=str(metadata.get("ip_address", "")),
            permissions=tuple(metadata.get("permissions") or ()),
        ),
    )


def error_value(error: RequestError) -> dict[str, Any]:
    value: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        value["details"] = error.details
    return value


def error_from_value(value: Any) -> RequestError | None:
    if not isinstance(value, dict):
        return None
    details = value.get("details")
    return RequestError(
        code=str(value.get("code", "")),
        message=str(value.get("message", "")),
        details=details if isinstance(details, dict) else None,
    )


REQUEST_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "key": "RequestID",
        "request_id": "ClientRequestID",
        "connection_id": "ConnectionID",
        "user_id": "UserID",
        "tenant_id": "TenantID",
        "action": "Action",
        "payload": "Payload",
        "status": "Status",
        "created_at": "CreatedAt",
        "updated_at": "UpdatedAt",
        "max_retries": "MaxRetries",
        "timeout_s": "TimeoutSeconds",
        "metadata": "Metadata",
        "progress": "Progress",
        "progress_message": "ProgressMessage",
        "progress_details": "ProgressDetails",
        "result": "Result",
        "error": "Error",
        "retry_count": "RetryCount",
        "attempt": "Attempt",
        "lease_until": "LeaseUntil",
        "processing_started": "ProcessingStarted",
        "completed_at": "CompletedAt",
        "expires_at": TTL_ATTRIBUTE,
        "kicks": "Kicks",
        "followed": "Followed",
    }
)
"""Every `AsyncRequest` field → the attribute that holds it (DESIGN §6 names)."""


def request_value(value: Any) -> Any:
    """A request field's value as its attribute stores it (before the typed codec)."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, RequestStatus):
        return value.value
    if isinstance(value, RequestError):
        return error_value(value)
    return value


def request_attributes(request: AsyncRequest) -> dict[str, Any]:
    """The item of a request; optional fields that are None are left out."""
    return {
        REQUEST_ATTRIBUTES[f.name]: request_value(value)
        for f in fields(request)
        if (value := getattr(request, f.name)) is not None
    }


def request_from_item(item: Mapping[str, Any]) -> AsyncRequest:
    values = from_item(item)
    key = RequestKey(values["RequestID"])
    created_at = parse_time(values["CreatedAt"])
    ttl = values.get(TTL_ATTRIBUTE)
    return AsyncRequest(
        key=key,
        request_id=RequestId(values.get("ClientRequestID") or parse_request_key(key).request_id),
        connection_id=ConnectionId(values.get("ConnectionID", "")),
        user_id=UserId(values.get("UserID", "")),
        tenant_id=TenantId(values.get("TenantID", "")),
        action=values.get("Action", ""),
        payload=values.get("Payload") or {},
        status=RequestStatus(values["Status"]),
        created_at=created_at,
        updated_at=optional_time(values.get("UpdatedAt")) or created_at,
        max_retries=int(values.get("MaxRetries", 3)),
        timeout_s=float(values.get("TimeoutSeconds", 900.0)),
        metadata=values.get("Metadata") or {},
        progress=float(values.get("Progress", 0.0)),
        progress_message=values.get("ProgressMessage", ""),
        progress_details=values.get("ProgressDetails") or {},
        result=values.get("Result"),
        error=error_from_value(values.get("Error")),
        retry_count=int(values.get("RetryCount", 0)),
        attempt=int(values.get("Attempt", 0)),
        lease_until=optional_time(values.get("LeaseUntil")),
        processing_started=optional_time(values.get("ProcessingStarted")),
        completed_at=optional_time(values.get("CompletedAt")),
        expires_at=int(ttl) if ttl is not None else None,
        kicks=int(values.get("Kicks", 0)),
        followed=bool(values.get("Followed", True)),
    )


def subscription_from_item(item: Mapping[str, Any]) -> Subscription:
    values = from_item(item)
    return Subscription(
        key=RequestKey(values["RequestID"]),
        connection_id=ConnectionId(values["ConnectionID"]),
        created_at=parse_time(values["CreatedAt"]),
        expires_at=int(values.get(TTL_ATTRIBUTE, 0)),
    )
