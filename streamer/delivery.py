"""Fan-out of a request's messages to its origin connection and its subscribers."""

from __future__ import annotations

from streamer.models import AsyncRequest
from streamer.ports import ConnectionStore, Notifier, SubscriptionStore
from streamer.protocol import ServerMessage

__all__ = ["Delivery"]


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
        raise NotImplementedError

    async def to_request(self, request: AsyncRequest, message: ServerMessage) -> int:
        """Send to the origin connection and every subscriber (each once);
        returns how many deliveries succeeded. Never raises for delivery failures."""
        raise NotImplementedError
