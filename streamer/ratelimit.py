"""Per-connection message rate limit: a token bucket on the injected clock."""

from __future__ import annotations

from streamer.models import ConnectionId
from streamer.ports import Clock

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows `per_minute` messages a minute per connection, refilled continuously.

    In Lambda the buckets live per container, so the limit is approximate there;
    the API Gateway stage throttle is the hard limit (see README).

    Args:
        per_minute: messages a minute per connection; 0 disables the limit.
        clock: the monotonic time source.
    """

    def __init__(self, *, per_minute: int, clock: Clock) -> None:
        raise NotImplementedError

    def allow(self, connection_id: ConnectionId) -> bool:
        """Take one token; False when the connection is over its rate."""
        raise NotImplementedError

    def forget(self, connection_id: ConnectionId) -> None:
        """Drop a closed connection's bucket."""
        raise NotImplementedError
