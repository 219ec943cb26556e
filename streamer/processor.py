"""The processor: one stream record in; claim, run with `Progress`, finish."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from streamer.app import Streamer
from streamer.delivery import Delivery
from streamer.models import RequestChange, RequestKey
from streamer.ports import Clock, RequestStore
from streamer.settings import Settings

__all__ = ["Outcome", "Processor"]


class Outcome(StrEnum):
    """What handling one record came to."""

    SKIPPED = "SKIPPED"
    """Not claimable, or the claim was lost (duplicate delivery)."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    HANDED_BACK = "HANDED_BACK"
    """Released to PENDING before a deadline (Lambda time, shutdown)."""
    LOST = "LOST"
    """Ownership lost mid-run (lease expired and re-claimed elsewhere)."""


class Processor:
    """Claims PENDING requests and runs their actions.

    Args:
        app: the user's actions.
        requests: the requests store.
        delivery: fan-out of progress/complete/error.
        clock: time source (backoff waits go through `clock.sleep`).
        settings: TTLs, progress rate, persist interval, lease grace.
        backoff_base_s, backoff_max_s: exponential backoff between retries.
    """

    def __init__(
        self,
        *,
        app: Streamer,
        requests: RequestStore,
        delivery: Delivery,
        clock: Clock,
        settings: Settings,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        raise NotImplementedError

    async def handle(self, change: RequestChange, *, deadline: datetime | None = None) -> Outcome:
        """Handle one stream record: skip it unless claimable, else `run` it."""
        raise NotImplementedError

    async def run(self, key: RequestKey, *, deadline: datetime | None = None) -> Outcome:
        """Claim and run one request.

        `deadline` bounds the run: before it, the request is handed back to
        PENDING. Persists COMPLETED/FAILED before notifying. Action errors never
        escape; store failures do (so the caller can retry the record).
        """
        raise NotImplementedError
