"""The core's ports: every I/O need of the services, as `typing.Protocol`s.

Adapters (DynamoDB, API Gateway, the emulator) implement them; `streamer.testing`
holds in-memory fakes that pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from streamer.models import (
    AsyncRequest,
    Connection,
    ConnectionId,
    RequestError,
    RequestKey,
    RequestStatus,
    Subscription,
    TenantId,
    UserId,
)
from streamer.protocol import ServerMessage

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
    """The requests table. Every state change is conditional; a lost race returns
    False or None, never raises."""

    async def enqueue(self, request: AsyncRequest) -> EnqueueResult:
        """Insert a PENDING request unless its key exists (idempotent ids)."""
        ...

    async def get(self, key: RequestKey) -> AsyncRequest | None:
        """The stored request, or None."""
        ...

    async def claim(
        self, key: RequestKey, *, now: datetime, lease_until: datetime
    ) -> AsyncRequest | None:
        """PENDING → PROCESSING: sets ProcessingStarted, LeaseUntil, Attempt+1.

        Returns the claimed request, or None when it was not PENDING (a duplicate
        delivery, or someone else won).
        """
        ...

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
        ...

    async def record_retry(
        self,
        key: RequestKey,
        *,
        attempt: int,
        error: RequestError,
        now: datetime,
        lease_until: datetime,
    ) -> bool:
        """Count one retry (RetryCount+1, last error kept, lease extended); False if
        the request is no longer PROCESSING under `attempt`."""
        ...

    async def complete(
        self, key: RequestKey, *, attempt: int, result: Any, now: datetime, expires_at: int
    ) -> bool:
        """PROCESSING (under `attempt`) → COMPLETED with `Result` and `TTL`.

        Raises:
            ItemTooLarge: the result does not fit in an item; nothing was written.
        """
        ...

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
        ...

    async def release(self, key: RequestKey, *, attempt: int, now: datetime) -> bool:
        """PROCESSING (under `attempt`) → PENDING: hand the request back (deadline,
        shutdown) so another processor claims it."""
        ...

    async def cancel(
        self, key: RequestKey, *, now: datetime, expires_at: int
    ) -> AsyncRequest | None:
        """PENDING|PROCESSING → CANCELLED; the updated request, or None when it was
        missing or already terminal."""
        ...

    async def list_expired_leases(self, *, now: datetime, limit: int) -> list[AsyncRequest]:
        """PROCESSING requests whose LeaseUntil is before `now` (`StatusIndex`)."""
        ...

    async def requeue_expired(self, key: RequestKey, *, attempt: int, now: datetime) -> bool:
        """PROCESSING with an expired lease (under `attempt`) → PENDING."""
        ...

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
        ...

    async def list_stale_pending(self, *, older_than: datetime, limit: int) -> list[AsyncRequest]:
        """PENDING requests whose UpdatedAt is before `older_than`, oldest first
        (`StatusIndex`): nothing has happened to them since, so their stream
        record was probably lost."""
        ...

    async def kick(self, key: RequestKey, *, seen_updated_at: datetime, now: datetime) -> bool:
        """Re-announce a PENDING request: UpdatedAt = `now`, Kicks+1, nothing else.

        The write makes the stream emit a fresh PENDING image for a processor to
        claim. Conditional on the request being PENDING with the UpdatedAt seen;
        False otherwise (claimed, finished, or touched meanwhile).
        """
        ...

    async def fail_pending(
        self,
        key: RequestKey,
        *,
        seen_updated_at: datetime,
        error: RequestError,
        now: datetime,
        expires_at: int,
    ) -> AsyncRequest | None:
        """PENDING (with the UpdatedAt seen) → FAILED with `Error` and `TTL`; the
        failed request, or None when it was claimed, finished or touched meanwhile."""
        ...

    async def list_by_connection(self, connection_id: ConnectionId) -> list[AsyncRequest]:
        """Requests made over one connection, oldest first (`ConnectionIndex`)."""
        ...

    async def list_by_user(self, user_id: UserId) -> list[AsyncRequest]:
        """Requests of one user, oldest first (`UserIndex`)."""
        ...

    async def list_by_status(self, status: RequestStatus, *, limit: int) -> list[AsyncRequest]:
        """Requests in one status, oldest first (`StatusIndex`)."""
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
