"""The core's ports: every I/O need of the services, as `typing.Protocol`s.

Adapters (DynamoDB, API Gateway, the emulator) implement them; `streamer.testing`
holds in-memory fakes that pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    RequestKey,
    Subscription,
    TenantId,
    UserId,
)
from streamer.protocol import ServerMessage
from streamer.transitions import Transition

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "Clock",
    "ConnectionStore",
    "EnqueueResult",
    "Notifier",
    "RequestStore",
    "SubscriptionStore",
]

DEFAULT_PAGE_SIZE = 500
"""Connections per page when a fan-out walks an index: a tenant of 10,000 is
twenty queries, and never more than one page is held at once."""


class Clock(Protocol):
    """Where time comes from; tests inject a manual clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic scale, for intervals and throttles."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a manual clock advances instead of waiting)."""
        ...


class Notifier(Protocol):
    """Pushes server messages to a connection."""

    async def send(self, connection_id: ConnectionId, message: ServerMessage) -> None:
        """Deliver one message.

        Raises:
            ConnectionGone: the connection no longer exists.
            StreamerError: delivery failed for another reason (after retries).
        """
        ...


class ConnectionStore(Protocol):
    """The connections table."""

    async def put(self, connection: Connection) -> None:
        """Store a new connection record."""
        ...

    async def get(self, connection_id: ConnectionId) -> Connection | None:
        """The record, or None when there is none."""
        ...

    async def delete(self, connection_id: ConnectionId) -> Connection | None:
        """Delete the record; returns what was deleted, or None."""
        ...

    async def touch(self, connection_id: ConnectionId, at: datetime) -> bool:
        """Set `LastPing`; False when the record does not exist (nothing created)."""
        ...

    async def list_by_user(self, user_id: UserId) -> list[Connection]:
        """Connections of one user (`UserIndex`)."""
        ...

    async def list_by_tenant(self, tenant_id: TenantId) -> list[Connection]:
        """Connections of one tenant (`TenantIndex`)."""
        ...

    def pages_by_user(
        self, user_id: UserId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[Sequence[Connection]]:
        """Connections of one user (`UserIndex`), one page (at most `page_size`)
        at a time; the next page is read only when it is asked for."""
        ...

    def pages_by_tenant(
        self, tenant_id: TenantId, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[Sequence[Connection]]:
        """Connections of one tenant (`TenantIndex`), one page at a time."""
        ...


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `RequestStore.enqueue` did: created the item, or found it already there."""

    created: bool
    request: AsyncRequest
    """The stored request: the new one, or the one already stored under that key."""


class RequestStore(Protocol):
    """The requests table.

    Every status change is a `Transition` (see `streamer.transitions`) applied
    as one conditional write; a lost race returns None, never raises.
    """

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        """Insert a PENDING request unless its key exists (idempotent ids).

        Raises:
            ItemTooLarge: the request does not fit in an item; nothing was written.
        """
        ...

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        """The stored request (a strongly consistent read), or None."""
        ...

    async def apply(self, key: RequestKey, transition: Transition) -> AsyncRequest | None:
        """Make one status change, atomically and only when it is allowed.

        Returns:
            The request as stored after the change, or None when the request is
            missing or its status or a guard refused the change (a lost race,
            a duplicate delivery, a cancel or a re-claim meanwhile).

        Raises:
            ItemTooLarge: the change would take the item over 400 KB; nothing
                was written.
            UnstorableValue: a value the store cannot hold; nothing was written.
        """
        ...

    async def list_expired_leases(self, *, now: datetime, limit: int) -> list[AsyncRequest]:
        """PROCESSING requests whose LeaseUntil is before `now`, oldest first
        (`StatusIndex`)."""
        ...

    async def list_stale_pending(self, *, older_than: datetime, limit: int) -> list[AsyncRequest]:
        """PENDING requests whose UpdatedAt is before `older_than`, oldest first
        (`StatusIndex`): nothing has happened to them since, so their stream
        record was probably lost."""
        ...

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        """Requests made over one connection, oldest first (`ConnectionIndex`)."""
        ...


class SubscriptionStore(Protocol):
    """The subscriptions table: which connections follow which requests."""

    async def add(self, subscription: Subscription) -> None:
        """Subscribe (idempotent)."""
        ...

    async def remove(self, key: RequestKey, connection_id: ConnectionId) -> None:
        """Unsubscribe one connection from one request (no error if absent)."""
        ...

    async def list_for_request(self, key: RequestKey) -> list[Subscription]:
        """Everyone following a request."""
        ...

    async def list_for_connection(self, connection_id: ConnectionId) -> list[Subscription]:
        """Everything a connection follows (`ConnectionIndex`)."""
        ...

    async def remove_for_connection(self, connection_id: ConnectionId) -> int:
        """Drop all of a connection's subscriptions; how many were removed."""
        ...
