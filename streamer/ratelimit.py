"""Per-connection message rate limit: a token bucket on the injected clock."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.models import ConnectionId
from streamer.ports import Clock

__all__ = ["RateLimiter"]

_MAX_BUCKETS = 10_000
"""Above this many buckets, full ones are dropped (they carry no state worth keeping)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    """Allows `per_minute` messages a minute per connection, refilled continuously.

    A new connection starts with a full bucket, so a burst of `per_minute`
    messages is allowed, then one more every `60 / per_minute` seconds.

    In Lambda the buckets live per container, so the limit is approximate there;
    the API Gateway stage throttle is the hard limit (see README).

    Args:
        per_minute: messages a minute per connection; 0 disables the limit.
        clock: the monotonic time source.
    """

    def __init__(self, *, per_minute: int, clock: Clock) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0")
        self._capacity = float(per_minute)
        self._refill_per_s = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[ConnectionId, _Bucket] = {}

    def allow(self, connection_id: ConnectionId) -> bool:
        """Take one token; False when the connection is over its rate."""
        if self._capacity == 0:
            return True
        now = self._clock.monotonic()
        bucket = self._buckets.get(connection_id)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._drop_full_buckets(now)
            bucket = self._buckets[connection_id] = _Bucket(self._capacity, now)
        else:
            elapsed = max(now - bucket.updated_at, 0.0)
            bucket.tokens = min(self._capacity, bucket.tokens + elapsed * self._refill_per_s)
            bucket.updated_at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def forget(self, connection_id: ConnectionId) -> None:
        """Drop a closed connection's bucket."""
        self._buckets.pop(connection_id, None)

    def _drop_full_buckets(self, now: float) -> None:
        for connection_id, bucket in list(self._buckets.items()):
            refilled = bucket.tokens + (now - bucket.updated_at) * self._refill_per_s
            if refilled >= self._capacity:
                del self._buckets[connection_id]
