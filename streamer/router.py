"""The router: one client frame in, one reply out (plus fan-out on cancel)."""

from __future__ import annotations

from streamer.app import Streamer
from streamer.delivery import Delivery
from streamer.models import Connection
from streamer.ports import Clock, RequestStore, SubscriptionStore
from streamer.protocol import ServerMessage
from streamer.ratelimit import RateLimiter
from streamer.settings import Settings

__all__ = ["Router"]


class Router:
    """Decodes a frame, applies the rate limit, answers built-ins (`ping`,
    `status`, `subscribe`, `cancel`), runs sync actions with their timeout, and
    validates and enqueues async ones.

    Args:
        app: the user's actions.
        requests, subscriptions: the stores.
        delivery: fan-out to a request's followers (used by `cancel`).
        limiter: per-connection rate limit.
        clock: time source.
        settings: async threshold, TTLs, message size limit.
    """

    def __init__(
        self,
        *,
        app: Streamer,
        requests: RequestStore,
        subscriptions: SubscriptionStore,
        delivery: Delivery,
        limiter: RateLimiter,
        clock: Clock,
        settings: Settings,
    ) -> None:
        raise NotImplementedError

    async def route(self, connection: Connection, frame: str | bytes) -> ServerMessage:
        """The one reply to one frame: `response`, `acknowledgment` or `error`.

        Never raises: every failure becomes an `error` message (internal ones as
        INTERNAL_ERROR, logged with the request id, no details leaked).
        """
        raise NotImplementedError
