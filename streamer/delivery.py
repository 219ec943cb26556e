"""Fan-out of a request's messages to its origin connection and its subscribers."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from streamer.errors import ConnectionGone
from streamer.models import AsyncRequest, ConnectionId
from streamer.ports import ConnectionStore, Notifier, SubscriptionStore
from streamer.protocol import ServerMessage

__all__ = ["Delivery"]

logger = logging.getLogger(__name__)

_REMEMBERED_GONE = 1024
"""How many gone connection ids are remembered, so a running request does not
post (and clean up) again for every progress update. Ids are never reused."""


class Delivery:
    """Sends to everyone following a request; a gone connection is cleaned up
    (its record and subscriptions deleted) and never stops the caller.

    Args:
        notifier: how messages reach connections.
        connections: to delete records of gone connections.
        subscriptions: who follows which request.
    """

    def __init__(
        self,
        *,
        notifier: Notifier,
        connections: ConnectionStore,
        subscriptions: SubscriptionStore,
    ) -> None:
        self._notifier = notifier
        self._connections = connections
        self._subscriptions = subscriptions
        self._gone: OrderedDict[ConnectionId, None] = OrderedDict()

    async def to_request(self, request: AsyncRequest, message: ServerMessage) -> int:
        """Send to the origin connection and every subscriber (each once);
        returns how many deliveries succeeded. Never raises for delivery failures."""
        targets = [request.connection_id]
        try:
            subscribers = await self._subscriptions.list_for_request(request.key)
        except Exception:
            logger.warning(
                "could not list subscribers; delivering to the origin only",
                extra={"request_id": request.request_id},
                exc_info=True,
            )
            subscribers = []
        targets.extend(s.connection_id for s in subscribers)
        unique = [cid for cid in dict.fromkeys(targets) if cid not in self._gone]
        results = await asyncio.gather(*(self._send(cid, request, message) for cid in unique))
        return sum(results)

    async def _send(
        self, connection_id: ConnectionId, request: AsyncRequest, message: ServerMessage
    ) -> bool:
        try:
            await self._notifier.send(connection_id, message)
        except ConnectionGone:
            await self._forget_connection(connection_id, request)
            return False
        except Exception:
            logger.warning(
                "delivery failed; skipped",
                extra={
                    "request_id": request.request_id,
                    "connection_id": connection_id,
                },
                exc_info=True,
            )
            return False
        return True

    async def _forget_connection(self, connection_id: ConnectionId, request: AsyncRequest) -> None:
        self._gone[connection_id] = None
        while len(self._gone) > _REMEMBERED_GONE:
            self._gone.popitem(last=False)
        logger.info(
            "connection gone; deleting its record and subscriptions",
            extra={"request_id": request.request_id, "connection_id": connection_id},
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
