"""Domain records: connections, async requests, subscriptions, identities."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

__all__ = [
    "AsyncRequest",
    "Connection",
    "ConnectionId",
    "ConnectionMetadata",
    "Identity",
    "ProgressSnapshot",
    "RequestChange",
    "RequestError",
    "RequestId",
    "RequestKey",
    "RequestKeyParts",
    "RequestStatus",
    "Subscription",
    "TenantId",
    "UserId",
    "parse_request_key",
    "request_key",
]

ConnectionId = NewType("ConnectionId", str)
UserId = NewType("UserId", str)
TenantId = NewType("TenantId", str)
RequestId = NewType("RequestId", str)
"""The id the client sees (its own `id`, or one the server made)."""
RequestKey = NewType("RequestKey", str)
"""The storage key: `<tenant>#<user>#<request id>`; never shown to a client."""


_KEY_SEPARATOR = "#"


def request_key(tenant_id: str, user_id: str, request_id: str) -> RequestKey:
    """The owner-scoped storage key of a request (DESIGN §5.1): `<tenant>#<user>#<id>`.

    Tenant and user ids never hold `#` (refused at `$connect`); the client's id
    may, so it is everything after the second `#`.

    Raises:
        ValueError: the tenant or user id holds `#` (the key would be ambiguous).
    """
    if _KEY_SEPARATOR in tenant_id or _KEY_SEPARATOR in user_id:
        raise ValueError("tenant and user ids must not hold '#'")
    return RequestKey(_KEY_SEPARATOR.join((tenant_id, user_id, request_id)))


@dataclass(frozen=True, slots=True)
class RequestKeyParts:
    """What a request key is made of (the inverse of `request_key`)."""

    tenant_id: TenantId
    user_id: UserId
    request_id: RequestId


def parse_request_key(key: str) -> RequestKeyParts:
    """Read a key made by `request_key`: the client's id keeps any `#` it holds.

    Raises:
        ValueError: `key` is not `<tenant>#<user>#<id>`.
    """
    tenant_id, sep1, rest = key.partition(_KEY_SEPARATOR)
    user_id, sep2, request_id = rest.partition(_KEY_SEPARATOR)
    if not (sep1 and sep2):
        raise ValueError("a request key is <tenant>#<user>#<id>")
    return RequestKeyParts(TenantId(tenant_id), UserId(user_id), RequestId(request_id))


class RequestStatus(StrEnum):
    """The states of an async request; arrows in DESIGN §5."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen to the request."""
        return self in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the caller is."""

    user_id: UserId
    tenant_id: TenantId
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionMetadata:
    """What the connection record keeps about the client."""

    user_agent: str = ""
    ip_address: str = ""
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Connection:
    """One open WebSocket connection, as stored in the connections table."""

    connection_id: ConnectionId
    user_id: UserId
    tenant_id: TenantId
    endpoint: str
    connected_at: datetime
    last_ping: datetime
    expires_at: int
    """`TTL`: epoch seconds after which DynamoDB may delete the record."""
    metadata: ConnectionMetadata = field(default_factory=ConnectionMetadata)


@dataclass(frozen=True, slots=True)
class RequestError:
    """Why a request failed or was cancelled, as stored in its `Error` attribute."""

    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A request's progress as stored: percentage, message, details."""

    percentage: float
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AsyncRequest:
    """One queued request, as stored in the requests table."""

    key: RequestKey
    request_id: RequestId
    connection_id: ConnectionId
    user_id: UserId
    tenant_id: TenantId
    action: str
    payload: dict[str, Any]
    status: RequestStatus
    created_at: datetime
    updated_at: datetime
    max_retries: int = 3
    timeout_s: float = 900.0
    metadata: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    progress_message: str = ""
    progress_details: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: RequestError | None = None
    retry_count: int = 0
    attempt: int = 0
    """How many times the request has been claimed (incremented by each claim)."""
    lease_until: datetime | None = None
    processing_started: datetime | None = None
    completed_at: datetime | None = None
    expires_at: int | None = None
    """`TTL`: epoch seconds; set when the request reaches a terminal state."""
    kicks: int = 0
    """How many times the sweeper re-announced the request while it sat PENDING
    (its stream record was lost); see `RequestStore.kick`."""
    followed: bool = True
    """Whether a `subscribe` may have added a follower. The router enqueues with
    False and `subscribe` sets it (`transitions.follow`) after adding the
    subscription, so an unfollowed request is delivered to its origin without a
    subscriber lookup. True (look up) for an item that does not say."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A connection that receives a request's further progress and completion."""

    key: RequestKey
    connection_id: ConnectionId
    created_at: datetime
    expires_at: int


@dataclass(frozen=True, slots=True)
class RequestChange:
    """One stream record about a request, parsed once at the edge.

    Both the Lambda processor and the emulator's poller build this from a
    DynamoDB Stream record; the processor acts only on claimable PENDING images.
    """

    event_id: str
    event_name: str
    """INSERT, MODIFY or REMOVE."""
    sequence_number: str
    key: RequestKey
    new_status: RequestStatus | None
    """`Status` of the new image; None for a REMOVE."""
    approximate_created_at: datetime
    timeout_s: float | None = None
    """The request's `TimeoutSeconds` in the new image, so the processor can set
    the claim's lease without reading the item first; None when not shown."""

    @property
    def is_claimable(self) -> bool:
        """True when the record shows a PENDING request the processor may claim."""
        return self.event_name != "REMOVE" and self.new_status is RequestStatus.PENDING
