"""The sweeper: requests whose processor died (lease expired) go back to
PENDING, or to FAILED when their attempts are spent."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.delivery import Delivery
from streamer.ports import Clock, RequestStore
from streamer.settings import Settings

__all__ = ["SweepReport", "Sweeper"]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    requeued: int = 0
    failed: int = 0


class Sweeper:
    """Recovers requests with expired leases.

    Args:
        requests: the requests store.
        delivery: tells followers when a request fails for good.
        clock: time source.
        settings: request TTL.
    """

    def __init__(
        self, *, requests: RequestStore, delivery: Delivery, clock: Clock, settings: Settings
    ) -> None:
        raise NotImplementedError

    async def sweep_once(self, *, limit: int = 100) -> SweepReport:
        """One pass over expired leases."""
        raise NotImplementedError
