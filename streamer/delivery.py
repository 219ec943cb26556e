"""Fan-out of a request's messages to its origin connection and its subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from enum import StrEnum

from streamer.bounded import remember
from streamer.clock import SystemClock
from streamer.errors import ConnectionGone
from streamer.models import AsyncRequest, ConnectionId, RequestKey
from streamer.ports import Clock, ConnectionStore, Notifier, SubscriptionStore
from streamer.protocol import ServerMessage

__all__ = ["CACHED_REQUESTS", "Delivery", "SendOutcome"]

logger = logging.getLogger(__name__)

_REMEMBERED_GONE = 1024
"""How many gone connection ids are remembered, so a running request does not
post (and clean up) again for every progress update. Ids are never reused."""
CACHED_REQUESTS = 10_000
"""How many requests' subscriber lists are kept; the oldest entry goes first."""


class SendOutcome(StrEnum):
    """What one send to one connection came to."""

    SENT = "sent"
    GONE = "gone"
    """The connection no longer exists; its record and subscriptions were deleted."""
    FAILED = "failed"
    """Delivery failed for another reason (logged); nothing was cleaned up."""


class Delivery:
    """Sends to everyone following a request; a gone connection is cleaned up
    (its record and subscriptions deleted) and never stops the caller.

    A request nobody follows (`AsyncRequest.followed` is False: no `subscribe`
    has marked it) goes to its origin alone, with no store query. A followed
    one's subscriber list is looked up once and reused for `progress` messages
    for up to `subscriber_cache_s`, instead of a query per message; `complete`
    and `error` always look it up afresh. Outcomes are delivered with the
    request their own write returned, and `subscribe` marks the request after
    adding the subscription, so no follower misses an outcome. A `subscribe`
    routed by this process calls `subscribed`, which drops the request's cached
    list and counts it followed here, so its next progress reaches the new
    follower. A subscriber added through another process (another Lambda
    instance) is seen by progress once the running request's next snapshot
    write returns the mark (about one persist interval while it reports),
    never later than the outcome, and `subscribe` answers with the stored
    snapshot first anyway.

    Args:
        notifier: how messages reach connections.
        connections: to delete records of gone connections.
        subscriptions: who follows which request.
        clock: time source for the cache (default: the system clock).
        subscriber_cache_s: how long a subscriber list is reused for progress
            (default 1 s; 0 = look up for every message).
    """

    def __init__(
        self,
        *,
        notifier: Notifier,
        connections: ConnectionStore,
        subscriptions: SubscriptionStore,
        clock: Clock | None = None,
        subscriber_cache_s: float = 1.0,
    ) -> None:
        self._notifier = notifier
        self._connections = connections
        self._subscriptions = subscriptions
        self._clock: Clock = clock or SystemClock()
        self._cache_s = subscriber_cache_s
        self._gone: OrderedDict[ConnectionId, None] = OrderedDict()
        self._cached: OrderedDict[RequestKey, tuple[float, tuple[ConnectionId, ...]]] = (
            OrderedDict()
        )
        self._subscribe_count = 0
        """Bumped by `subscribed`: a lookup that overlapped a subscribe is not cached."""
        self._followed_here: OrderedDict[RequestKey, None] = OrderedDict()
        """Requests `subscribed` here: followed even while the copy a sender holds
        predates the mark."""

    async def to_request(self, request: AsyncRequest, message: ServerMessage) -> int:
        """Send to the origin connection and every subscriber (each once);
        returns how many deliveries succeeded. Never raises for delivery failures."""
        subscribers = await self._subscribers(request, fresh=message.type != "progress")
        if not subscribers:
            # The usual case, and on the path of every progress message: one send,
            # awaited in this task rather than in one gathered for it.
            return int(await self._send(request.connection_id, request, message))
        targets = dict.fromkeys((request.connection_id, *subscribers))
        unique = [cid for cid in targets if cid not in self._gone]
        results = await asyncio.gather(*(self._send(cid, request, message) for cid in unique))
        return sum(results)

    def subscribed(self, key: RequestKey) -> None:
        """This process just added a subscription to `key`: stop reusing its
        cached subscriber list."""
        self._subscribe_count += 1
        self._cached.pop(key, None)
        remember(self._followed_here, key, None, CACHED_REQUESTS)

    async def _subscribers(self, request: AsyncRequest, *, fresh: bool) -> tuple[ConnectionId, ...]:
        """The request's subscribers: cached unless `fresh` (an outcome) is asked for."""
        key = request.key
        if not request.followed and key not in self._followed_here:
            return ()
        cached = self._cached.get(key)
        if not fresh and cached is not None and self._clock.monotonic() - cached[0] < self._cache_s:
            return cached[1]
        subscribe_count = self._subscribe_count
        try:
            found = await self._subscriptions.list_for_request(key)
        except Exception:
            logger.warning(
                "could not list subscribers; delivering to the origin and those last known",
                extra={"request_id": request.request_id},
                exc_info=True,
            )
            return cached[1] if cached is not None else ()
        subscribers = tuple(s.connection_id for s in found)
        if fresh:
            # An outcome: no more progress will follow.
            self._cached.pop(key, None)
        elif self._cache_s > 0 and subscribe_count == self._subscribe_count:
            # Reused for an interval from when the answer came: stamped when the
            # lookup started, a lookup slower than the interval (a busy store) would
            # never be reused, and every progress message would query again.
            remember(self._cached, key, (self._clock.monotonic(), subscribers), CACHED_REQUESTS)
        return subscribers

    async def _send(
        self, connection_id: ConnectionId, request: AsyncRequest, message: ServerMessage
    ) -> bool:
        outcome = await self.send(connection_id, message, request_id=request.request_id)
        return outcome is SendOutcome.SENT

    async def send(
        self, connection_id: ConnectionId, message: ServerMessage, *, request_id: str | None = None
    ) -> SendOutcome:
        """Send one message to one connection. A gone connection is cleaned up
        (record and subscriptions deleted) and reported GONE; any other failure
        is logged and reported FAILED. Never raises for delivery failures."""
        if connection_id in self._gone:
            return SendOutcome.GONE
        try:
            await self._notifier.send(connection_id, message)
        except ConnectionGone:
            await self._forget_connection(connection_id, request_id)
            return SendOutcome.GONE
        except Exception:
            logger.warning(
                "delivery failed; skipped",
                extra={"request_id": request_id, "connection_id": connection_id},
                exc_info=True,
            )
            return SendOutcome.FAILED
        return SendOutcome.SENT

    async def _forget_connection(self, connection_id: ConnectionId, request_id: str | None) -> None:
        remember(self._gone, connection_id, None, _REMEMBERED_GONE)
        logger.info(
            "connection gone; deleting its record and subscriptions",
            extra={"request_id": request_id, "connection_id": connection_id},
        )
        try:
            await self._connections.delete(connection_id)
            await self._subscriptions.remove_for_connection(connection_id)
        except Exception:
            logger.warning(
                "could not clean up a gone connection",
                extra={"connection_id": connection_id},
                exc_info=True,
            )
