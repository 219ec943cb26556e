"""Server push: a `notification` to one connection, every connection of a user,
or a whole tenant (DESIGN §11), fanned out with bounded concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from streamer.delivery import Delivery, SendOutcome
from streamer.errors import ErrorCode, StreamerError
from streamer.frames import MESSAGE_LIMIT_BYTES
from streamer.models import Connection, ConnectionId, TenantId, UserId
from streamer.ports import DEFAULT_PAGE_SIZE, Clock, ConnectionStore
from streamer.protocol import Notification, encode, encoded_size

__all__ = [
    "DEFAULT_PUSH_CONCURRENCY",
    "MAX_TOPIC_CHARS",
    "UNWIRED_PUSHER",
    "PushIncomplete",
    "PushSummary",
    "PushTarget",
    "Pusher",
    "ToConnection",
    "ToTenant",
    "ToUser",
    "build_notification",
]

logger = logging.getLogger(__name__)

DEFAULT_PUSH_CONCURRENCY = 50
"""Sends in flight at once, as the Go original's connection manager."""
MAX_TOPIC_CHARS = 128


@dataclass(frozen=True, slots=True)
class ToConnection:
    """One connection, by id."""

    connection_id: ConnectionId


@dataclass(frozen=True, slots=True)
class ToUser:
    """Every connection of one user in one tenant (`UserIndex`)."""

    tenant_id: TenantId
    user_id: UserId


@dataclass(frozen=True, slots=True)
class ToTenant:
    """Every connection of one tenant (`TenantIndex`)."""

    tenant_id: TenantId


PushTarget = ToConnection | ToUser | ToTenant
"""Who a push reaches."""


@dataclass(frozen=True, slots=True)
class PushSummary:
    """What one push came to: a count per connection reached.

    Args:
        sent: connections the notification was handed to.
        gone: connections that no longer existed (their records were deleted).
        failed: connections delivery failed for otherwise (throttling past
            retries, a client not reading); logged, not retried.
    """

    sent: int = 0
    gone: int = 0
    failed: int = 0

    @property
    def targeted(self) -> int:
        """How many connections the push was addressed to."""
        return self.sent + self.gone + self.failed

    @property
    def is_delivered(self) -> bool:
        """True when at least one connection was sent the notification."""
        return self.sent > 0

    def as_dict(self) -> dict[str, int]:
        """`{"sent", "gone", "failed"}`, as the CLI prints it."""
        return {"sent": self.sent, "gone": self.gone, "failed": self.failed}


class PushIncomplete(StreamerError):
    """The index could not be read to the end: some targets were never tried.

    Args:
        summary: what was delivered before the failure.
    """

    def __init__(self, summary: PushSummary) -> None:
        super().__init__(
            ErrorCode.INTERNAL_ERROR,
            f"could not list every target connection; sent to {summary.sent} before that",
        )
        self.summary = summary


def build_notification(data: Any, *, topic: str | None, clock: Clock) -> Notification:
    """The `notification` message for `data`, checked before anything is sent.

    Raises:
        StreamerError: VALIDATION_ERROR for a topic that is empty, longer than
            `MAX_TOPIC_CHARS` or not printable, or data that is not JSON (NaN
            included); PAYLOAD_TOO_LARGE when the message is over 128 KB.
    """
    if topic is not None and (not topic or len(topic) > MAX_TOPIC_CHARS or not topic.isprintable()):
        raise StreamerError(
            ErrorCode.VALIDATION_ERROR,
            f"a topic is 1 to {MAX_TOPIC_CHARS} printable characters",
        )
    try:
        body = to_jsonable_python(data)
        json.dumps(body, allow_nan=False)
    except (PydanticSerializationError, ValueError, TypeError):
        raise StreamerError(ErrorCode.VALIDATION_ERROR, "notification data must be JSON") from None
    message = Notification(timestamp=clock.now(), topic=topic, data=body)
    size = encoded_size(encode(message))
    if size > MESSAGE_LIMIT_BYTES:
        raise StreamerError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"notification is {size} bytes; the limit is {MESSAGE_LIMIT_BYTES}",
            {"size": size, "limit": MESSAGE_LIMIT_BYTES},
        )
    return message


class Pusher:
    """Sends `notification` messages to connections chosen by id, user or tenant.

    A user's or tenant's connections are read from the index one page at a time
    and sent to as they come, at most `concurrency` sends in flight, so a tenant
    of 10,000 connections is never held in memory at once. Each connection is
    sent to at most once per push. A gone connection is cleaned up (record and
    subscriptions deleted) and counted; it is never an error. Delivery is best
    effort, at most once per connection, as API Gateway's management API is: a
    client that is reconnecting at that moment misses the notification.

    Args:
        connections: the connections table (its user and tenant indexes).
        delivery: sends one message and cleans up after a gone connection.
        clock: the notification's `timestamp`.
        concurrency: sends in flight at once (default 50).
        page_size: connections per index page (default 500).
    """

    def __init__(
        self,
        *,
        connections: ConnectionStore,
        delivery: Delivery,
        clock: Clock,
        concurrency: int = DEFAULT_PUSH_CONCURRENCY,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._connections = connections
        self._delivery = delivery
        self._clock = clock
        self._concurrency = concurrency
        self._page_size = page_size

    async def to_connection(
        self, connection_id: str, data: Any, *, topic: str | None = None
    ) -> PushSummary:
        """Push to one connection."""
        return await self.push(ToConnection(ConnectionId(connection_id)), data, topic=topic)

    async def to_user(
        self, tenant_id: str, user_id: str, data: Any, *, topic: str | None = None
    ) -> PushSummary:
        """Push to every connection of `user_id` in `tenant_id`."""
        return await self.push(ToUser(TenantId(tenant_id), UserId(user_id)), data, topic=topic)

    async def to_tenant(
        self, tenant_id: str, data: Any, *, topic: str | None = None
    ) -> PushSummary:
        """Push to every connection of `tenant_id`."""
        return await self.push(ToTenant(TenantId(tenant_id)), data, topic=topic)

    async def push(self, target: PushTarget, data: Any, *, topic: str | None = None) -> PushSummary:
        """Push `data` (any JSON value) under `topic` to `target`.

        Raises:
            StreamerError: VALIDATION_ERROR / PAYLOAD_TOO_LARGE from
                `build_notification` (nothing was sent).
            PushIncomplete: the index failed part-way; its `summary` says what
                was sent before.
        """
        message = build_notification(data, topic=topic, clock=self._clock)
        if isinstance(target, ToConnection):
            outcome = await self._delivery.send(target.connection_id, message)
            summary = _summary({outcome: 1})
        elif isinstance(target, ToUser):
            tenant_id = target.tenant_id
            summary = await self._fan_out(
                self._connections.pages_by_user(target.user_id, page_size=self._page_size),
                lambda c: c.tenant_id == tenant_id,
                message,
            )
        else:
            summary = await self._fan_out(
                self._connections.pages_by_tenant(target.tenant_id, page_size=self._page_size),
                lambda c: True,
                message,
            )
        logger.info(
            "pushed",
            extra={
                "tenant_id": getattr(target, "tenant_id", None),
                "user_id": getattr(target, "user_id", None),
                "connection_id": getattr(target, "connection_id", None),
                "outcome": f"sent={summary.sent} gone={summary.gone} failed={summary.failed}",
                "count": summary.targeted,
            },
        )
        return summary

    async def _fan_out(
        self,
        pages: AsyncIterator[Sequence[Connection]],
        keep: Callable[[Connection], bool],
        message: Notification,
    ) -> PushSummary:
        counts = dict.fromkeys(SendOutcome, 0)
        seen: set[ConnectionId] = set()
        listing_error: Exception | None = None
        while True:
            try:
                page = await anext(pages, None)
            except Exception as exc:
                # Sends already made stand; the rest of the index is never read.
                listing_error = exc
                break
            if page is None:
                break
            targets = []
            for connection in page:
                cid = connection.connection_id
                if cid not in seen and keep(connection):
                    seen.add(cid)
                    targets.append(cid)
            # The next page is read once this one is sent: one page in memory.
            await self._send_page(targets, message, counts)
        summary = _summary(counts)
        if listing_error is not None:
            logger.warning("push stopped: the index could not be read", exc_info=listing_error)
            raise PushIncomplete(summary) from listing_error
        return summary

    async def _send_page(
        self,
        targets: Sequence[ConnectionId],
        message: Notification,
        counts: dict[SendOutcome, int],
    ) -> None:
        """Send to every target, `concurrency` workers taking the next one in turn
        (a task per worker, not per connection)."""
        remaining = iter(targets)

        async def worker() -> None:
            for connection_id in remaining:
                counts[await self._delivery.send(connection_id, message)] += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._concurrency, len(targets))):
                group.create_task(worker())


def _summary(counts: dict[SendOutcome, int]) -> PushSummary:
    return PushSummary(
        sent=counts.get(SendOutcome.SENT, 0),
        gone=counts.get(SendOutcome.GONE, 0),
        failed=counts.get(SendOutcome.FAILED, 0),
    )


class _UnwiredPusher(Pusher):
    """The `push` of a `Request` built without one (a unit test's): refuses."""

    def __init__(self) -> None:
        pass

    async def push(self, target: PushTarget, data: Any, *, topic: str | None = None) -> PushSummary:
        raise StreamerError(
            ErrorCode.INTERNAL_ERROR,
            "this Request has no pusher: build it with push=Pusher(...)",
        )


UNWIRED_PUSHER: Pusher = _UnwiredPusher()
"""What `Request.push` is when nothing was wired (a Request built by hand)."""
