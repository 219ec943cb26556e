"""Connections, requests and subscriptions to and from DynamoDB items (DESIGN §6 names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
)

__all__ = [
    "connection_from_item",
    "connection_item",
    "error_from_value",
    "error_value",
    "request_attributes",
    "request_from_item",
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


def request_attributes(request: AsyncRequest) -> dict[str, Any]:
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
        attributes["Error"] = error_value(request.error)
    if request.lease_until is not None:
        attributes["LeaseUntil"] = format_time(request.lease_until)
    if request.processing_started is not None:
        attributes["ProcessingStarted"] = format_time(request.processing_started)
    if request.completed_at is not None:
        attributes["CompletedAt"] = format_time(request.completed_at)
    if request.expires_at is not None:
        attributes[TTL_ATTRIBUTE] = request.expires_at
    return attributes


def request_from_item(item: Mapping[str, Any]) -> AsyncRequest:
    values = from_item(item)
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
    )


def subscription_from_item(item: Mapping[str, Any]) -> Subscription:
    values = from_item(item)
    return Subscription(
        key=RequestKey(values["RequestID"]),
        connection_id=ConnectionId(values["ConnectionID"]),
        created_at=parse_time(values["CreatedAt"]),
        expires_at=int(values.get(TTL_ATTRIBUTE, 0)),
    )
